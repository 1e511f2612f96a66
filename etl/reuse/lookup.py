"""The reader's side of the stores: find a block of text hashes, fetch the vectors found.

On first use each store's journal is read once (its latest checkpoint and the entries after
it) and every live segment's hashes go into one MemoryIndex: from the journal's entries, which
carry them, or from a compacted segment's own index. From then on a block costs a lookup in
memory and the fetches of what it found, however many segments or texts the stores hold; every
POLL_SECONDS the journals are asked what landed since (one request a store when nothing did).
The segments this worker's own writer publishes are added as it finishes them (add_own), with
no request at all.

A fetched record is served only if its checksum holds and it holds the hash looked up. A damaged
record, a segment that is gone or cut short, a store that cannot be read: each is skipped with a
warning naming the store and the segment, and its texts are embedded again. The store is a
cache: it never fails a shard.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass

import numpy as np

from etl.errors import EmbedEtlError
from etl.reuse.journal import StoredFile, StoreView
from etl.reuse.memory import FileRef, MemoryIndex
from etl.reuse.segment import SegmentError
from etl.reuse.store import VectorStore

log = logging.getLogger(__name__)

POLL_SECONDS = 5.0  # how often the journals are asked what other workers and jobs added
BATCH_TEXTS = 1 << 20  # hashes sorted into the index together while loading


@dataclass
class Found:
    """Where each of a block's distinct hashes was found: a file and a row, or -1."""

    where: np.ndarray  # (m,) int32 file number in ``index``, -1 where not found
    row: np.ndarray  # (m,) int64 record number inside that file
    index: MemoryIndex

    def earlier(self, run: str) -> np.ndarray:
        """(m,) True where the vector was stored before this run (not by one of its workers)."""
        numbers, back = np.unique(self.where, return_inverse=True)
        files = self.index.files
        older = np.array([n >= 0 and files[n].run != run for n in numbers], dtype=bool)
        return older[back.reshape(-1)]


class Lookup:
    """Finds texts in stores: the job's own and those of --reuse, all in one index."""

    def __init__(self, stores: tuple[VectorStore, ...], run: str) -> None:
        self.stores = stores
        self.run = run
        self.index = MemoryIndex()
        self._views: dict[str, StoreView] | None = None
        self._polled = 0.0
        self.damaged = 0  # records whose checksum failed

    def __getstate__(self) -> dict:
        return {"stores": self.stores, "run": self.run}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["stores"], state["run"])

    @property
    def layout(self):
        return self.stores[0].layout

    def find(self, hashes: np.ndarray) -> Found:
        """Look up (m,) sorted distinct hashes."""
        self._follow()
        where, row = self.index.find(hashes)
        return Found(where, row, self.index)

    def fetch(
        self, found: Found, picks: np.ndarray, hashes: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """The (k, R) records of found hashes ``picks`` (indices into ``found``; ``hashes``
        theirs), and a (k,) mask of those that were read whole and are of those hashes; the
        others must be embedded."""
        layout = self.layout
        records = np.zeros((len(picks), layout.record_bytes), np.uint8)
        ok = np.zeros(len(picks), dtype=bool)
        where = found.where[picks]
        for number in np.unique(where[where >= 0]):
            if self.index.is_dead(int(number)):
                continue
            ref = self.index.files[number]
            mine = np.flatnonzero(where == number)
            try:
                got = ref.store.records(ref.store.segment_key(ref.name), found.row[picks[mine]])
            except (SegmentError, EmbedEtlError, OSError) as exc:
                self._skip(int(number), str(exc))
                continue
            whole = layout.intact(got)
            if not whole.all():
                self.damaged += int((~whole).sum())
                log.warning(
                    "vector store %s: %s: %d record(s) fail their checksum; embedding them again",
                    ref.store.uri,
                    ref.store.segment_key(ref.name),
                    int((~whole).sum()),
                )
            good = whole & (layout.hashes(got) == hashes[mine])  # else a 40-bit namesake
            records[mine[good]] = got[good]
            ok[mine[good]] = True
        return records, ok

    def add_own(self, store: VectorStore, name: str, hashes: np.ndarray) -> None:
        """A segment this worker's writer published: its hashes, in record order."""
        self._follow()
        if (store.uri, name) in self.index:
            return
        number = self.index.register(FileRef(store, name, len(hashes), self.run))
        if number is not None:
            self.index.insert([(number, hashes, None)])

    def _follow(self) -> None:
        """Read the journals the first time; later, what landed since, every POLL_SECONDS."""
        now = time.monotonic()
        if self._views is not None and now - self._polled < POLL_SECONDS:
            return
        self._polled = now
        first = self._views is None
        if first:
            self._views = {}
        with self.index.bulk() if first else contextlib.nullcontext():
            for store in self.stores:
                try:
                    if first:
                        view = self._views[store.uri] = StoreView(store.journal)
                        files = view.load()
                    else:
                        files = self._views[store.uri].follow()
                except (EmbedEtlError, OSError) as exc:  # a cache that cannot be read: embed
                    log.warning("vector store %s: cannot read its journal: %s", store.uri, exc)
                    continue
                self._add(store, files)

    def _add(self, store: VectorStore, files: list[StoredFile]) -> None:
        """Index files new to this reader. A compacted one made only of files it knows holds
        nothing new: they stay where they are (gc keeps them a grace period) and it is skipped."""
        batch: list[tuple[int, np.ndarray, np.ndarray | None]] = []
        texts = 0
        for item in files:
            if (store.uri, item.name) in self.index:
                continue
            if item.sources and all((store.uri, s) in self.index for s in item.sources):
                continue
            number = self.index.register(FileRef(store, item.name, item.rows, item.run))
            if number is None:
                log.warning(
                    "vector store %s: more records than one lookup holds; %s not consulted",
                    store.uri,
                    item.name,
                )
                continue
            if item.hashes is not None:
                batch.append((number, item.hashes, None))
                texts += item.rows
            else:
                self._read_index(store, item, number)
            if texts >= BATCH_TEXTS:
                self.index.insert(batch)
                batch, texts = [], 0
        self.index.insert(batch)

    def _read_index(self, store: VectorStore, item: StoredFile, number: int) -> None:
        """A segment's hashes from its own index, block by block; a damaged block's texts are
        left out (embedded again)."""
        try:
            segment = store.open(item.name, item.size)
            for first, hashes, ok in store.index(segment):
                if not ok.all():
                    log.warning(
                        "vector store %s: %s: index blocks fail their checksum; their %d texts "
                        "will be embedded again",
                        store.uri,
                        segment.key,
                        int((~ok).sum()),
                    )
                rows = first + np.flatnonzero(ok)
                self.index.insert([(number, hashes[ok], rows)])
        except (SegmentError, EmbedEtlError, OSError) as exc:
            self._skip(number, str(exc))

    def _skip(self, number: int, why: str) -> None:
        self.index.kill(number)
        log.warning(
            "vector store %s: skipping a segment: %s", self.index.files[number].store.uri, why
        )
