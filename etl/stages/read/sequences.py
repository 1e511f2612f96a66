"""A window's token id sequences, stored flat: cut, truncated and padded without a Python loop
per row.

Sequence i is ``ids[starts[i] : starts[i] + lengths[i]]``. Every operation here works on whole
index arrays (numpy's repeat, cumsum and fancy indexing), so its cost grows with the tokens,
at numpy's speed, not with Python's per-row overhead.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Sequences:
    """Token id sequences, concatenated."""

    ids: np.ndarray  # (total,) int32
    starts: np.ndarray  # (S,) int64 where each sequence begins in ids
    lengths: np.ndarray  # (S,) int64

    @classmethod
    def from_lists(cls, sequences: Sequence[Sequence[int]]) -> Sequences:
        """From Python lists (or arrays) of ids: one pass in C over every id."""
        count = len(sequences)
        lengths = np.fromiter(map(len, sequences), np.int64, count)
        total = int(lengths.sum())
        ids = np.fromiter(itertools.chain.from_iterable(sequences), np.int32, total)
        return cls(ids, starts_of(lengths), lengths)

    @classmethod
    def empty(cls) -> Sequences:
        none = np.zeros(0, np.int64)
        return cls(np.zeros(0, np.int32), none, none)

    def __len__(self) -> int:
        return len(self.lengths)

    def row(self, i: int) -> np.ndarray:
        """Sequence i (a view)."""
        start = int(self.starts[i])
        return self.ids[start : start + int(self.lengths[i])]

    @property
    def tokens(self) -> int:
        return int(self.lengths.sum())

    def take(self, members: np.ndarray) -> Sequences:
        """The sequences at ``members``, in that order, copied into a new flat array."""
        lengths = self.lengths[members]
        return Sequences(self.ids[self._gather(members)], starts_of(lengths), lengths)

    def concat(self, other: Sequences) -> Sequences:
        """These sequences, then ``other``'s."""
        ids = np.concatenate([self.ids, other.ids])
        starts = np.concatenate([self.starts, other.starts + len(self.ids)])
        return Sequences(ids, starts, np.concatenate([self.lengths, other.lengths]))

    def replaced(self, rows: dict[int, np.ndarray]) -> Sequences:
        """These sequences with those at the given positions replaced (a few: a loop per one)."""
        pieces, lengths, last = [], self.lengths.copy(), 0
        for i in sorted(rows):
            pieces += [self.ids[self.starts[last] : self.starts[i]] if i else self.ids[:0]]
            pieces.append(np.asarray(rows[i], np.int32))
            lengths[i] = len(rows[i])
            last = i + 1
        pieces.append(self.ids[self.starts[last] :] if last < len(self) else self.ids[:0])
        return Sequences(np.concatenate(pieces), starts_of(lengths), lengths)

    def truncated(self, max_length: int, keep_head: int) -> Sequences:
        """Each sequence longer than max_length cut to max_length tokens: its first
        ``keep_head`` tokens, then its last max_length - keep_head. Truncating on the right
        keeps the special tokens before the text and its first tokens, then the special tokens
        after it; on the left, the special tokens before it, then its last tokens."""
        lengths = self.lengths
        if not len(lengths) or int(lengths.max()) <= max_length:
            return self
        kept = np.minimum(lengths, max_length)  # (S,)
        position = positions(kept)  # (total kept,) position within its sequence
        start = np.repeat(self.starts, kept)
        full = np.repeat(lengths, kept)
        source = start + position
        # In a cut sequence, positions past its head come from the end of the full sequence.
        from_end = (full > max_length) & (position >= keep_head)
        source[from_end] = (start + full - (max_length - position))[from_end]
        return Sequences(self.ids[source], starts_of(kept), kept)

    def padded(
        self, members: np.ndarray, pad_id: int, left: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        """The sequences at ``members`` as one batch padded to its own longest:
        (input_ids, attention_mask), both (B, T) int64; padding on the right, or the left."""
        lengths = self.lengths[members]  # (B,)
        rows, longest = len(members), int(lengths.max()) if len(members) else 0
        ids = np.full((rows, longest), pad_id, dtype=np.int64)  # (B, T)
        mask = np.zeros((rows, longest), dtype=np.int64)  # (B, T)
        row = np.repeat(np.arange(rows), lengths)
        column = positions(lengths)
        if left:
            column += np.repeat(longest - lengths, lengths)
        ids[row, column] = self.ids[self._gather(members)]
        mask[row, column] = 1
        return ids, mask

    def _gather(self, members: np.ndarray) -> np.ndarray:
        """Indices into ``ids`` of every token of the sequences at ``members``, in order."""
        lengths = self.lengths[members]
        return np.repeat(self.starts[members], lengths) + positions(lengths)


def starts_of(lengths: np.ndarray) -> np.ndarray:
    """Where each of consecutive runs of these lengths begins: 0, l0, l0 + l1, ..."""
    starts = np.zeros(len(lengths), np.int64)
    np.cumsum(lengths[:-1], out=starts[1:])
    return starts


def positions(lengths: np.ndarray) -> np.ndarray:
    """0, 1, ..., n-1 for each length n, concatenated."""
    total = int(lengths.sum())
    return np.arange(total, dtype=np.int64) - np.repeat(starts_of(lengths), lengths)
