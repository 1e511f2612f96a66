"""Cut a window of tokenized rows into batches on a padded-token budget, and pad each batch.

The budget is the batching policy: small on a CPU, where big padded batches lose, large on a GPU.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from etl.errors import ConfigError
from etl.stages.read.sequences import Sequences

CPU_BUDGET = 2048  # padded tokens per batch: 1,024-3,072 flat on 2 cores (benchmarks/RESULTS.md)
GPU_BUDGET = 32768
TOKEN_WINDOW_BYTES = 256 << 20  # token vectors a window of rows may hold until it is written


@dataclass(frozen=True)
class Batching:
    """How rows are grouped into batches."""

    max_tokens: int  # rows x longest row stays under this (one over-long row excepted)
    max_rows: int
    window_rows: int  # rows read, tokenized and sorted together
    max_length: int  # longest sequence a batch can hold

    def largest_batch(self) -> tuple[int, int]:
        """Rows and length of the most expensive batch (attention grows with length squared)."""
        return max(1, min(self.max_rows, self.max_tokens // self.max_length)), self.max_length


def resolve_batching(
    batch_tokens: int | None,
    batch_size: int,
    sort_window: int,
    max_length: int,
    device_type: str,
    token_width: int = 0,
) -> Batching:
    """The token budget: the user's, else small on a CPU and large on a GPU (at least one
    row of max_length). With token outputs (``token_width`` floats per token) a window holds
    at most TOKEN_WINDOW_BYTES."""
    if token_width:
        sort_window = min(
            sort_window, max(16, TOKEN_WINDOW_BYTES // (max_length * token_width * 4))
        )
    if batch_tokens is None:  # a long-context --max-length raises the default to one row
        budget = max(max_length, CPU_BUDGET if device_type == "cpu" else GPU_BUDGET)
    else:
        budget = batch_tokens
    if budget < max_length:
        raise ConfigError(
            f"--batch-tokens {budget}: must be at least --max-length ({max_length}) so "
            "that one full-length row fits"
        )
    return Batching(budget, batch_size, sort_window, max_length)


def plan_batches(lengths: Sequence[int], max_tokens: int, max_rows: int) -> list[np.ndarray]:
    """Group sequence indices into batches of similar length.

    Sequences are sorted by length (stable, so ties keep input order) and a batch is closed when
    adding the next one would make rows x longest-length exceed ``max_tokens`` or the row count
    exceed ``max_rows``. A single sequence longer than the budget still gets a batch of its own.
    One numpy step per batch: sorted ascending, a batch's cost rows x last length only grows as
    it takes more rows, so its end is where that cost first passes the budget.
    """
    if len(lengths) == 0:
        return []
    lens = np.asarray(lengths, dtype=np.int64)
    order = np.argsort(lens, kind="stable")
    ordered = lens[order]
    batches: list[np.ndarray] = []
    start, count = 0, len(order)
    while start < count:
        candidates = ordered[start : start + max_rows]  # (m,) the longest each batch end gives
        cost = np.arange(1, len(candidates) + 1) * candidates  # (m,) rows x longest
        end = start + max(1, int(np.searchsorted(cost, max_tokens, side="right")))
        batches.append(order[start:end])
        start = end
    return batches


def pad(
    sequences: Sequences | Sequence[Sequence[int]], pad_id: int, left: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Pad to the batch's own longest sequence, on the right (or the left, for the decoder
    embedders whose tokenizer says so); return (input_ids, attention_mask)."""
    if not isinstance(sequences, Sequences):
        sequences = Sequences.from_lists(sequences)
    return sequences.padded(np.arange(len(sequences)), pad_id, left)
