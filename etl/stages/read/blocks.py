"""A shard read once, a block of rows at a time, each block cut into windows.

A block is what the vector store's lookup hashes at once (a whole number of windows); without
a store, a block is one window. Texts over --max-text-bytes are taken out of a block as soon as
it is read (their rows stay, null, with their sizes kept for the shard record), so that no huge
cell outlives its read or is read twice.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from etl.stages.read.source import iter_windows, text_sizes, without

if TYPE_CHECKING:
    from etl.stages.read.late import Documents


@dataclass(frozen=True)
class Rows:
    """Rows of a shard: a record batch (texts over the limit null), which of its texts were
    over the limit, and each text's size in bytes (0 for a null)."""

    batch: pa.RecordBatch
    over: np.ndarray  # (rows,) bool
    sizes: np.ndarray  # (rows,) int64
    documents: Documents | None = None  # --chunking late: the texts the passage rows are of

    def windows(self, rows: int) -> Iterator[Rows]:
        """The block cut into windows of ``rows`` rows (slices: nothing is copied); with
        ``documents``, a window ends with a text's last passage (or holds a text's alone)."""
        start, total = 0, self.batch.num_rows
        while start < total:
            end = min(start + rows, total)
            if self.documents is not None and end < total:
                of = self.documents.of
                after = int(np.searchsorted(of, of[end - 1], side="right"))
                if after > end:  # the window would split a text's passages
                    before = int(np.searchsorted(of, of[end - 1], side="left"))
                    end = before if before > start else after
            documents = self.documents.sliced(start, end) if self.documents is not None else None
            yield Rows(
                self.batch.slice(start, end - start),
                self.over[start:end],
                self.sizes[start:end],
                documents,
            )
            start = end


def read_blocks(
    parquet: pq.ParquetFile,
    path: str,
    columns: list[str],
    text_column: str,
    block_rows: int,
    spec,
    release: bool = True,
) -> Iterator[Rows]:
    """The shard's rows, ``block_rows`` at a time, in file order; texts over the spec's
    max_text_bytes nulled (unless not ``release``: the text column is also kept)."""
    for batch in iter_windows(parquet, path, columns, block_rows):
        position = batch.schema.get_field_index(text_column)
        sizes = text_sizes(batch.column(position))
        over = sizes > spec.max_text_bytes
        if release and over.any():  # the huge values let go
            batch = batch.set_column(position, text_column, without(batch.column(position), over))
        yield Rows(batch, over, sizes)


class Feed:
    """An iterator its reader fills: each block's texts, put in before the block's first
    window asks the store's lookup for them (etl.reuse.shard.ShardReuse pulls one per block)."""

    def __init__(self) -> None:
        self._queue: deque = deque()

    def put(self, item: object) -> None:
        self._queue.append(item)

    def __iter__(self) -> Feed:
        return self

    def __next__(self) -> object:
        if not self._queue:
            raise StopIteration
        return self._queue.popleft()
