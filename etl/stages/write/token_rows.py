"""Token outputs of one window: each batch's real tokens kept flat as they arrive, then joined
into rows, in text order, by index arrays.

A row split into several windows (--long-text chunk) gets its windows in order, each token
once: a later window's leading special tokens, prompt and overlap are dropped, and so are the
special tokens at the end of every window but the last.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from etl.stages.read.sequences import positions, starts_of


class TokenRows:
    """The real tokens of a window's sequences: their ids and, per column, their vectors."""

    def __init__(
        self, num_rows: int, names: list[str], drop_head: np.ndarray | None, drop_tail: int
    ) -> None:
        self.num_rows = num_rows
        self.names = names
        self.drop_head = drop_head  # (rows,) tokens a later window of the row repeats
        self.drop_tail = drop_tail  # special tokens at the end of every window
        self._rows: list[np.ndarray] = []
        self._parts: list[np.ndarray] = []
        self._counts: list[np.ndarray] = []
        self._ids: list[np.ndarray] = []
        self._vectors: dict[str, list[np.ndarray]] = {name: [] for name in names}
        self._order: tuple[np.ndarray, np.ndarray] | None = None

    def add(
        self,
        rows: np.ndarray,
        parts: np.ndarray | None,
        ids: np.ndarray,
        mask: np.ndarray,
        vectors: dict[str, np.ndarray],
    ) -> None:
        """One batch: rows (B,), window numbers (B,) or None, ids and mask (B, T), and (B, T, H)
        vectors per column. Padding (either side) is left out."""
        real = mask.astype(bool)  # (B, T)
        self._rows.append(np.asarray(rows, np.int64))
        self._parts.append(np.zeros(len(rows), np.int64) if parts is None else parts)
        self._counts.append(real.sum(axis=1))
        self._ids.append(ids[real].astype(np.int32))  # (n,) row-major: sequence by sequence
        for name in self.names:
            self._vectors[name].append(vectors[name][real])  # (n, H)
        self._order = None

    def lengths(self) -> np.ndarray:
        """(rows,) tokens of each row once joined."""
        return self._join()[1]

    def ids(self, nulls: pa.Array | None) -> pa.Array:
        """list<int32>: each row's token ids in text order."""
        gather, lengths = self._join()
        flat = _concat(self._ids, np.zeros(0, np.int32))[gather]
        return pa.ListArray.from_arrays(list_offsets(lengths), pa.array(flat), mask=nulls)

    def vectors(self, name: str, width: int) -> np.ndarray:
        """(all tokens, H) float32: every row's token vectors of a column, rows in order."""
        gather, _ = self._join()
        flat = _concat(self._vectors[name], np.zeros((0, width), np.float32))
        return flat[gather].astype(np.float32, copy=False)

    def offsets(self) -> pa.Array:
        return list_offsets(self._join()[1])

    def _join(self) -> tuple[np.ndarray, np.ndarray]:
        """(indices into the flat tokens, in row then text order; tokens per row)."""
        if self._order is not None:
            return self._order
        none = np.zeros(0, np.int64)
        rows, parts = _concat(self._rows, none), _concat(self._parts, none)
        counts = _concat(self._counts, none)
        starts = starts_of(counts)  # (S,) where each sequence's tokens begin, as they arrived
        order = np.lexsort((parts, rows))  # by row, then window within it
        rows, parts, counts, starts = rows[order], parts[order], counts[order], starts[order]
        last = np.ones(len(rows), dtype=bool)  # the last window of its row
        last[:-1] = rows[1:] != rows[:-1]
        head = np.zeros(len(rows), np.int64)
        if self.drop_head is not None:
            head = np.where(parts > 0, self.drop_head[rows], 0)
        tail = np.where(last, 0, self.drop_tail)
        keep = np.maximum(counts - head - tail, 0)  # (S,)
        gather = np.repeat(starts + head, keep) + positions(keep)
        lengths = np.bincount(rows, weights=keep, minlength=self.num_rows).astype(np.int64)
        self._order = (gather, lengths)
        return self._order


def _concat(pieces: list[np.ndarray], empty: np.ndarray) -> np.ndarray:
    return np.concatenate(pieces) if pieces else empty


def list_offsets(lengths: np.ndarray) -> pa.Array:
    """An Arrow list array's int32 offsets for lists of these lengths."""
    offsets = np.zeros(len(lengths) + 1, np.int32)
    np.cumsum(lengths, out=offsets[1:])
    return pa.array(offsets)
