"""Sparse vectors of one window: each batch's nonzero weights kept as (row, index, value) as
they arrive, then stored as list<struct<index: int32, value: float>> rows, sorted by index.

A batch arrives as (B, V) weights, most of them zero; only the nonzero ones are kept, so a
window never holds a vocabulary-sized row per text.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from etl.stages.write.token_rows import list_offsets
from etl.stages.write.vectors import sparse_type


class SparseRows:
    """The nonzero weights of a window's rows."""

    def __init__(self, num_rows: int) -> None:
        self.num_rows = num_rows
        self._rows: list[np.ndarray] = []
        self._index: list[np.ndarray] = []
        self._values: list[np.ndarray] = []

    def add(self, rows: np.ndarray, weights: np.ndarray) -> None:
        """A batch: (B,) rows and their (B, V) weights."""
        at, index = np.nonzero(weights)  # row-major: by row, then by index
        self._rows.append(np.asarray(rows, np.int64)[at])
        self._index.append(index.astype(np.int32))
        self._values.append(weights[at, index].astype(np.float32))

    def array(self, dtype: str, nulls: pa.Array | None) -> pa.Array:
        """The rows as stored, values in float32 or float16; rows where ``nulls`` is true null."""
        none = np.zeros(0, np.int64)
        rows = np.concatenate(self._rows) if self._rows else none
        order = np.argsort(rows, kind="stable")  # rows in order; indices stay sorted in each
        index = np.concatenate(self._index)[order] if self._rows else none.astype(np.int32)
        values = np.concatenate(self._values)[order] if self._rows else none.astype(np.float32)
        values = values.astype(dtype)
        kept = values != 0  # a weight too small for float16 is no weight
        rows, index, values = rows[order][kept], index[kept], values[kept]
        kind = sparse_type(dtype)
        pairs = pa.StructArray.from_arrays(
            [pa.array(index, pa.int32()), pa.array(values)], fields=list(kind.value_type)
        )
        offsets = list_offsets(np.bincount(rows, minlength=self.num_rows))
        return pa.ListArray.from_arrays(offsets, pairs, type=kind, mask=nulls)
