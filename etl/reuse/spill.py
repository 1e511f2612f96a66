"""The writer's side, per shard: the vectors it computes, kept in a local temporary file.

Each window's new vectors are appended as records (the spill numbers the reader gave them);
later rows of the same text read theirs back; once the shard's output is published, the file
is sent to the store as one segment. The file lives in the system's temporary folder and is
unlinked from the start, so nothing of it survives the process, whatever ends it.
"""

from __future__ import annotations

import os
import tempfile
from collections import OrderedDict
from collections.abc import Iterator

import numpy as np

from etl.reuse.hashing import HASH_DTYPE
from etl.reuse.segment import Layout, SegmentError, trailer
from etl.reuse.store import VectorStore

CHUNK = 8 << 20  # bytes copied into an upload at a time
KEEP = 8  # spills of finished shards a writer keeps open (readers remember 4 shards)


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

    def segment_bytes(self, recipe: str, run: str, **about: object) -> Iterator[bytes]:
        """The segment: the records, the index, the trailer."""
        total = self.count * self.layout.record_bytes
        for offset in range(0, total, CHUNK):
            yield os.pread(self._fd, min(CHUNK, total - offset), offset)
        if self._hashes:
            yield np.concatenate(self._hashes).tobytes()
        yield trailer(self.count, self.layout, recipe, run, **about)

    def close(self) -> None:
        self._file.close()


class RecentSpills:
    """A writer's last finished shards' spills, kept open after their segments were published:
    a later shard copying their vectors reads them here, or from the store once evicted."""

    def __init__(self, store: VectorStore) -> None:
        self.store = store
        self._spills: OrderedDict[str, NewVectors] = OrderedDict()

    def keep(self, name: str, spill: NewVectors) -> None:
        self._spills[name] = spill
        while len(self._spills) > KEEP:
            self._spills.popitem(last=False)[1].close()

    def read(self, name: str, numbers: np.ndarray) -> np.ndarray:
        """(k, R) records of a recent shard's spill numbers."""
        spill = self._spills.get(name)
        if spill is not None:
            return spill.read(numbers)
        key = self.store.segment_key(name)
        entry = self.store.storage.stat(key)
        if entry is None:
            raise SegmentError(f"{self.store.uri}: {key}: the vectors of an earlier shard are gone")
        return self.store.records(self.store.segment(entry), numbers)

    def close(self) -> None:
        while self._spills:
            self._spills.popitem()[1].close()
