"""A window whose tokens are in, as the batches the model runs: padded, each to its own longest
sequence, each sequence (or, with --chunking late, each passage) mapped to its row."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from etl.contract import Batch, WindowInfo
from etl.stages.read.late import LateSpans
from etl.stages.read.sequences import Sequences
from etl.stages.read.token_mask import TokenMask
from etl.stages.read.tokenizer import Layout


@dataclass
class Settled:
    """A window ready to send: its sequences cut into batches."""

    index: int
    number: int
    info: WindowInfo
    sequences: Sequences
    seq_rows: np.ndarray  # (S,) row in the window of each sequence
    parts: np.ndarray | None  # (S,) window number within its row (--long-text chunk)
    batches: list[np.ndarray]
    spans: LateSpans | None = None  # --chunking late: each passage's sequence and tokens


def window_batches(
    layout: Layout, token_mask: TokenMask | None, window: Settled
) -> Iterator[Batch]:
    """The window's batches, each padded to its own longest sequence."""
    index, number, info = window.index, window.number, window.info
    if not window.batches:  # all rows null or copied (or none): the sink needs the window
        empty = torch.zeros((0, 0), dtype=torch.long)
        yield Batch(index, number, torch.zeros(0, dtype=torch.long), empty, empty, info)
        return
    sequences, parts = window.sequences, window.parts
    for j, members in enumerate(window.batches):
        input_ids, mask = sequences.padded(members, layout.pad_id, layout.left_padding)
        if window.spans is None:
            rows, spans = window.seq_rows[members], None
        else:  # a row per passage, pooled from a sequence's tokens
            lengths = sequences.lengths[members]
            rows, spans = window.spans.batch(members, lengths, layout.left_padding)
        keep = None
        if token_mask is not None:
            input_ids, mask, keep = token_mask.apply(input_ids, mask, layout.left_padding)
        yield Batch(
            shard_index=index,
            window_index=number,
            rows=torch.from_numpy(rows),
            input_ids=torch.from_numpy(input_ids),
            attention_mask=torch.from_numpy(mask),
            window=info if j == 0 else None,
            parts=torch.from_numpy(parts[members]) if parts is not None else None,
            keep=torch.from_numpy(keep) if keep is not None else None,
            spans=torch.from_numpy(spans) if spans is not None else None,
        )
