"""The reader's side of the store: find a block of text hashes, fetch the vectors found.

A lookup lists each store's segments, reads every segment's index (16 bytes a text) and keeps
what fits in INDEX_CACHE_BYTES for the next block (segments never change), so memory stays
bounded however large the stores grow; only the records of texts found are fetched. A segment
that is unreadable, cut short or of another recipe is skipped with a warning: its texts are
embedded again, never taken from it; so is a store that cannot be read (the store is a cache:
it never fails a shard).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from etl.errors import EmbedEtlError
from etl.reuse.segment import Segment, SegmentError
from etl.reuse.store import VectorStore

log = logging.getLogger(__name__)

INDEX_CACHE_BYTES = 64 << 20  # segment indexes a reader keeps between blocks
INDEX_CHUNK = 1 << 20  # hashes read at a time from a larger segment (16 MB), never kept


@dataclass
class Found:
    """Where each of a block's distinct hashes was found: a segment and a record, or -1."""

    where: np.ndarray  # (m,) int32 index into ``segments``, -1 where not found
    row: np.ndarray  # (m,) int64 record number inside that segment
    segments: list[tuple[VectorStore, Segment]] = field(default_factory=list)

    def earlier(self, run: str) -> np.ndarray:
        """(m,) True where the vector was stored before this run (not by one of its workers)."""
        older = np.array([s.run != run for _, s in self.segments] + [False], dtype=bool)
        return older[self.where]  # where = -1 picks the False at the end


class Lookup:
    """Finds texts in stores, the job's own first, then those of --reuse in the order given."""

    def __init__(self, stores: tuple[VectorStore, ...], run: str) -> None:
        self.stores = stores
        self.run = run
        self._cache: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()
        self._cached_bytes = 0
        self._segments: dict[tuple[str, str], Segment] = {}
        self._bad: set[tuple[str, str]] = set()

    def __getstate__(self) -> dict:
        return {"stores": self.stores, "run": self.run}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["stores"], state["run"])

    def find(self, hashes: np.ndarray) -> Found:
        """Look up (m,) sorted distinct hashes; the first segment holding a hash wins."""
        found = Found(np.full(len(hashes), -1, np.int32), np.zeros(len(hashes), np.int64))
        if not len(hashes):
            return found
        for store in self.stores:
            try:
                entries = store.entries()
            except (EmbedEtlError, OSError) as exc:  # a cache that cannot be read: embed
                log.warning("vector store %s: cannot list its segments: %s", store.uri, exc)
                continue
            for entry in entries:
                name = (store.uri, entry.key)
                if name in self._bad:
                    continue
                try:
                    segment = self._segment(store, entry, name)
                    number = len(found.segments)
                    for first, index in self._index(store, segment, name):
                        position = np.minimum(np.searchsorted(hashes, index), len(hashes) - 1)
                        hit = np.flatnonzero(
                            (hashes[position] == index) & (found.where[position] < 0)
                        )
                        found.where[position[hit]] = number
                        found.row[position[hit]] = first + hit
                except (SegmentError, EmbedEtlError, OSError) as exc:
                    self._skip(name, exc)
                    found.where[found.where == len(found.segments)] = -1
                    continue
                if (found.where == number).any():
                    found.segments.append((store, segment))
        return found

    def fetch(self, found: Found, picks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The (k, R) records of found hashes ``picks`` (indices into ``found``), and a (k,)
        mask of those that could be read; the others must be embedded."""
        layout = self.stores[0].layout
        records = np.zeros((len(picks), layout.record_bytes), np.uint8)
        ok = np.zeros(len(picks), dtype=bool)
        where = found.where[picks]
        for number in np.unique(where[where >= 0]):
            store, segment = found.segments[number]
            name = (store.uri, segment.key)
            mine = np.flatnonzero(where == number)
            if name in self._bad:
                continue
            try:
                records[mine] = store.records(segment, found.row[picks[mine]])
            except (SegmentError, EmbedEtlError, OSError) as exc:
                self._skip(name, exc)
                continue
            ok[mine] = True
        return records, ok

    def _segment(self, store: VectorStore, entry, name: tuple[str, str]) -> Segment:
        segment = self._segments.get(name)
        if segment is None or segment.size != entry.size:
            segment = self._segments[name] = store.segment(entry)
        return segment

    def _index(
        self, store: VectorStore, segment: Segment, name: tuple[str, str]
    ) -> Iterator[tuple[int, np.ndarray]]:
        """(first record, hashes) pieces of a segment's index: the cached whole, or a large
        one read INDEX_CHUNK hashes at a time and not kept."""
        index = self._cache.get(name)
        if index is not None:
            self._cache.move_to_end(name)
            yield 0, index
            return
        if segment.rows > INDEX_CHUNK:
            for first in range(0, segment.rows, INDEX_CHUNK):
                yield first, store.index(segment, first, min(INDEX_CHUNK, segment.rows - first))
            return
        index = store.index(segment)
        if index.nbytes <= INDEX_CACHE_BYTES:
            self._cache[name] = index
            self._cached_bytes += index.nbytes
            while self._cached_bytes > INDEX_CACHE_BYTES:
                _, dropped = self._cache.popitem(last=False)
                self._cached_bytes -= dropped.nbytes
        yield 0, index

    def _skip(self, name: tuple[str, str], exc: Exception) -> None:
        self._bad.add(name)
        dropped = self._cache.pop(name, None)
        if dropped is not None:
            self._cached_bytes -= dropped.nbytes
        log.warning("vector store %s: skipping a segment: %s", name[0], exc)
