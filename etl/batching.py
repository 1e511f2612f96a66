"""Cut a window of tokenized rows into batches on a padded-token budget, and pad each batch."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def plan_batches(lengths: Sequence[int], max_tokens: int, max_rows: int) -> list[np.ndarray]:
    """Group sequence indices into batches of similar length.

    Sequences are sorted by length (stable, so ties keep input order) and a batch is closed when
    adding the next one would make rows x longest-length exceed ``max_tokens`` or the row count
    exceed ``max_rows``. A single sequence longer than the budget still gets a batch of its own.
    """
    if len(lengths) == 0:
        return []
    lens = np.asarray(lengths, dtype=np.int64)
    order = np.argsort(lens, kind="stable")
    batches: list[np.ndarray] = []
    start = 0
    for i in range(1, len(order)):
        # Sorted ascending, so sequence i would be the longest of the candidate batch.
        rows = i - start + 1
        if rows > max_rows or rows * lens[order[i]] > max_tokens:
            batches.append(order[start:i])
            start = i
    batches.append(order[start:])
    return batches


def pad(sequences: Sequence[Sequence[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad to the batch's own longest sequence; return (input_ids, attention_mask)."""
    longest = max(len(s) for s in sequences)
    ids = np.full((len(sequences), longest), pad_id, dtype=np.int64)  # (B, T)
    mask = np.zeros((len(sequences), longest), dtype=np.int64)  # (B, T)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = seq
        mask[row, : len(seq)] = 1
    return ids, mask
