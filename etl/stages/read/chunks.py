"""Long texts as windows over their whole text (--long-text chunk): each window repeats the
special tokens and the prompt, consecutive windows share --chunk-overlap text tokens."""

from __future__ import annotations

from typing import Any

import numpy as np

from etl.errors import ConfigError
from etl.stages.read.sequences import Sequences
from etl.stages.read.tokenizer import Layout


def chunk_rows(
    sequences: Sequences,
    present: np.ndarray,
    whole: dict[int, np.ndarray],
    num_rows: int,
    spec: Any,
    layout: Layout,
    prompt_ids: np.ndarray,
) -> tuple[Sequences, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Replace each long row's truncated ids by windows over its whole text (--long-text chunk).

    ``sequences`` holds one sequence per present row; ``whole`` the ids of the long ones, by
    that position. Every window repeats the special tokens and the prompt. Returns the
    sequences (the short rows' first, then each long row's windows), their rows, their order
    within their row, which rows have several windows, and per row the tokens a later window
    repeats (specials, prompt, overlap), for token outputs.
    """
    multi = np.zeros(num_rows, dtype=bool)
    drop_head = np.zeros(num_rows, dtype=np.int64)
    long = np.fromiter(sorted(whole), np.int64, len(whole))
    short = np.setdiff1d(np.arange(len(sequences)), long)  # sorted: rows stay in order
    windows, rows, parts = [], [present[short]], [np.zeros(len(short), np.int64)]
    for j in long.tolist():  # one loop turn per long row, not per row
        row = int(present[j])
        lead = common_prefix(whole[j], prompt_ids) if spec.prompt else 0
        pieces = chunk_windows(
            whole[j], spec.max_length, spec.chunk_overlap, layout.prefix, layout.suffix, lead
        )
        windows += pieces
        rows.append(np.full(len(pieces), row, np.int64))
        parts.append(np.arange(len(pieces), dtype=np.int64))
        multi[row] = len(pieces) > 1
        drop_head[row] = len(layout.prefix) + lead + spec.chunk_overlap
    joined = sequences.take(short)
    if windows:
        joined = joined.concat(Sequences.from_lists(windows))
    return joined, np.concatenate(rows), np.concatenate(parts), multi, drop_head


def chunk_windows(
    content: np.ndarray,
    max_length: int,
    overlap: int,
    prefix: tuple[int, ...],
    suffix: tuple[int, ...],
    lead: int = 0,
) -> list[np.ndarray]:
    """Windows of at most max_length tokens covering the text: the special tokens before it,
    the content's first ``lead`` tokens (the prompt, repeated in every window), a slice of the
    rest, the special tokens after it.

    Consecutive windows share ``overlap`` text tokens; the last window ends at the text's end.
    The first window is what truncation keeps.
    """
    head, text = content[:lead], content[lead:]
    width = max_length - len(prefix) - len(suffix) - lead  # text tokens per window
    stride = width - overlap
    if stride < 1:  # callers check the room first (check_room); never loop forever here
        raise ConfigError(
            f"--max-length {max_length}: a window has {width} text tokens, not more than its "
            f"overlap of {overlap}"
        )
    starts = [0]
    while starts[-1] + width < len(text):
        starts.append(starts[-1] + stride)
    before = np.concatenate([np.asarray(prefix, dtype=content.dtype), head])
    after = np.asarray(suffix, dtype=content.dtype)
    return [np.concatenate([before, text[s : s + width], after]) for s in starts]


def common_prefix(a: np.ndarray, b: np.ndarray) -> int:
    """How many leading tokens two id sequences share (a prompt's tokens inside a text)."""
    n = min(len(a), len(b))
    differ = np.flatnonzero(a[:n] != b[:n])
    return int(differ[0]) if len(differ) else n
