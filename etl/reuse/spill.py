"""The writer's side, per shard: the vectors it computes, kept in local temporary files.

Each window's new records are appended (the spill numbers the reader gave them), and their
hashes to a second file; later rows of the same text read theirs back; once the shard's output
is published, both are streamed to the store as one segment. Neither is held in memory, so a
shard of 10^8 distinct texts costs what one of 10^3 does. The files live in the system's
temporary folder and are unlinked from the start, so nothing of them survives the process,
whatever ends it.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator

import numpy as np

from etl.reuse.hashing import HASH_BYTES, HASH_DTYPE
from etl.reuse.records import Layout
from etl.reuse.segment import SegmentError

CHUNK = 8 << 20  # bytes copied into an upload at a time


class NewVectors:
    """Records appended in spill-number order; read back by number; published as a segment."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        # Closed by close(), once the segment is published or the shard given up.
        self._file = tempfile.TemporaryFile(prefix="embed-etl-vectors-")  # noqa: SIM115
        self._fd = self._file.fileno()
        self._hash_file = tempfile.TemporaryFile(prefix="embed-etl-hashes-")  # noqa: SIM115
        self.count = 0

    def append(self, hashes: np.ndarray, records: np.ndarray) -> None:
        """(k,) hashes and their (k, R) records, the next k spill numbers."""
        if not len(hashes):
            return
        _write_at(
            self._fd, np.ascontiguousarray(records, np.uint8), self.count * self.layout.record_bytes
        )
        _write_at(self._hash_file.fileno(), np.asarray(hashes, HASH_DTYPE), self.count * HASH_BYTES)
        self.count += len(hashes)

    def read(self, numbers: np.ndarray) -> np.ndarray:
        """(k, R) records of these spill numbers (any order, repeats allowed); SegmentError for
        numbers it does not hold (a shard that failed before writing them)."""
        size = self.layout.record_bytes
        wanted, back = np.unique(numbers, return_inverse=True)
        found = np.empty((len(wanted), size), np.uint8)
        breaks = np.flatnonzero(np.diff(wanted) != 1) + 1
        for run in np.split(np.arange(len(wanted)), breaks):
            first, rows = int(wanted[run[0]]), len(run)
            data = os.pread(self._fd, rows * size, first * size)
            if len(data) != rows * size:
                raise SegmentError(f"spill: records {first}..{first + rows - 1} were never written")
            found[run] = np.frombuffer(data, np.uint8).reshape(rows, size)
        return found[back]

    def hashes(self) -> np.ndarray:
        """(count,) the records' hashes, in spill order (read whole: see hash_chunks)."""
        return np.concatenate([np.zeros(0, HASH_DTYPE), *self.hash_chunks()])

    def hash_chunks(self, rows: int = 1 << 18) -> Iterator[np.ndarray]:
        """The records' hashes in spill order, ``rows`` at a time (4 MiB)."""
        for first in range(0, self.count, rows):
            n = min(rows, self.count - first)
            data = os.pread(self._hash_file.fileno(), n * HASH_BYTES, first * HASH_BYTES)
            if len(data) != n * HASH_BYTES:
                raise SegmentError(f"spill: hashes {first}..{first + n - 1} were never written")
            yield np.frombuffer(data, HASH_DTYPE)

    @property
    def nbytes(self) -> int:
        return self.count * self.layout.record_bytes

    def records(self) -> Iterator[bytes]:
        """The records' bytes, in order, CHUNK at a time."""
        total = self.nbytes
        for offset in range(0, total, CHUNK):
            yield os.pread(self._fd, min(CHUNK, total - offset), offset)

    def close(self) -> None:
        self._file.close()
        self._hash_file.close()


def _write_at(fd: int, array: np.ndarray, offset: int) -> None:
    data = memoryview(np.ascontiguousarray(array)).cast("B")
    while len(data):
        written = os.pwrite(fd, data, offset)
        data, offset = data[written:], offset + written
