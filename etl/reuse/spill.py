"""The writer's side, per shard: the vectors it computes, kept in a local temporary file.

Each window's new records are appended (the spill numbers the reader gave them); later rows of
the same text read theirs back; once the shard's output is published, the file is sent to the
store as one segment. The file lives in the system's temporary folder and is unlinked from the
start, so nothing of it survives the process, whatever ends it.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator

import numpy as np

from etl.reuse.hashing import HASH_DTYPE
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
        self.count = 0
        self._hashes: list[np.ndarray] = []

    def append(self, hashes: np.ndarray, records: np.ndarray) -> None:
        """(k,) hashes and their (k, R) records, the next k spill numbers."""
        if not len(hashes):
            return
        data = np.ascontiguousarray(records, np.uint8).tobytes()
        offset = self.count * self.layout.record_bytes
        while data:
            written = os.pwrite(self._fd, data, offset)
            data, offset = data[written:], offset + written
        self._hashes.append(np.asarray(hashes, HASH_DTYPE))
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
        """(count,) the records' hashes, in spill order."""
        if not self._hashes:
            return np.zeros(0, HASH_DTYPE)
        return np.concatenate(self._hashes)

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
