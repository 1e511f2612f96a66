"""The reader's side of the stores: find a block of text hashes, fetch the vectors found.

On first use each store's journal is read once (its latest checkpoint and the entries after
it) and every live segment's hashes go into one MemoryIndex: from the journal's entries, which
carry them, or from a compacted segment's own index. From then on a block costs a lookup in
memory and the fetches of what it found, however many segments or texts the stores hold; every
POLL_SECONDS the journals are asked what landed since (one request a store when nothing did).
The segments this worker's own writer publishes are added as it finishes them (add_own), with
no request at all.

A hit is fetched only where one ranged read costs less than embedding its texts again (both
measured as the job runs: on local disk always; on object storage with a small model on a GPU,
a read of a few scattered records loses); the texts not fetched are embedded and counted in the
summary (texts_not_fetched). A fetched record is served only if its checksum holds and it holds
the hash looked up. A damaged record, a segment that is gone or cut short, a store that cannot
be read: each is skipped with a warning naming the store and the segment, and its texts are
embedded again. The store is a cache: it never fails a shard.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass

import numpy as np

from etl.errors import EmbedEtlError
from etl.reuse.journal import StoredFile
from etl.reuse.memory import FileRef, MemoryIndex
from etl.reuse.segment import SegmentError
from etl.reuse.store import VectorStore
from etl.reuse.view import StoreView

log = logging.getLogger(__name__)

POLL_SECONDS = 5.0  # how often the journals are asked what other workers and jobs added
BATCH_TEXTS = 1 << 20  # hashes sorted into the index together while loading
SHORT_READ = 256 << 10  # a read of less than this takes about the store's latency
LONG_READ = 4 << 20  # ... and one of more, mostly its time a byte


@dataclass
class Found:
    """Where each of a block's distinct hashes was found: a file and a row, or -1."""

    where: np.ndarray  # (m,) int32 file number in ``index``, -1 where not found
    row: np.ndarray  # (m,) int64 record number inside that file
    index: MemoryIndex
    _earlier: np.ndarray | None = None

    def earlier(self, run: str) -> np.ndarray:
        """(m,) True where the vector was stored before this run (not by one of its workers);
        worked out once a block."""
        if self._earlier is None:
            numbers, back = np.unique(self.where, return_inverse=True)
            files = self.index.files
            older = np.array([n >= 0 and files[n].run != run for n in numbers], dtype=bool)
            self._earlier = older[back.reshape(-1)]
        return self._earlier


class Lookup:
    """Finds texts in stores: the job's own and those of --reuse, all in one index."""

    def __init__(self, stores: tuple[VectorStore, ...], run: str) -> None:
        self.stores = stores
        self.run = run
        self.index = MemoryIndex()
        self._views: dict[str, StoreView] | None = None
        self._polled = 0.0
        self.damaged = 0  # records whose checksum failed
        self.cost_per_text = 0.0  # seconds the worker takes to embed a text; 0: not known yet
        self._latency: dict[str, float] = {}  # a short ranged read's time, by store
        self._per_byte: dict[str, float] = {}  # a long read's time a byte, by store

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
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The (k, R) records of found hashes ``picks`` (indices into ``found``; ``hashes``
        theirs); a (k,) mask of those read whole and of those hashes; and a (k,) mask of those
        not fetched because embedding them costs less than the request (see worth_fetching).
        The caller embeds every text not served."""
        layout = self.layout
        records = np.zeros((len(picks), layout.record_bytes), np.uint8)
        ok = np.zeros(len(picks), dtype=bool)
        skipped = np.zeros(len(picks), dtype=bool)
        where = found.where[picks]
        order = np.argsort(where, kind="stable")  # picks grouped by file, once
        numbers, starts = np.unique(where[order], return_index=True)
        for number, mine in zip(numbers, np.split(order, starts[1:]), strict=True):
            if number < 0 or self.index.is_dead(int(number)):
                continue
            ref = self.index.files[number]
            store, key = ref.store, ref.store.segment_key(ref.name)
            rows = found.row[picks[mine]]
            wanted, groups = store.ranges(rows)
            size = layout.record_bytes
            worth = [
                g
                for g in groups
                if self.worth_fetching(
                    store.uri, len(g), int(wanted[g[-1]] - wanted[g[0]] + 1) * size
                )
            ]
            at = np.searchsorted(wanted, rows)  # (mine,) each pick's place among wanted
            fetched = np.zeros(len(wanted), bool)
            for g in worth:
                fetched[g] = True
            skipped[mine[~fetched[at]]] = True
            if not worth:
                continue
            started = time.perf_counter()
            try:
                got = store.read_groups(key, wanted, worth)[at]
            except (SegmentError, EmbedEtlError, OSError) as exc:
                self._skip(int(number), str(exc))
                continue
            span = sum(int(wanted[g[-1]] - wanted[g[0]] + 1) for g in worth) * size
            self._timed(store.uri, time.perf_counter() - started, len(worth), span)
            whole = layout.intact(got) | ~fetched[at]
            if not whole.all():
                self.damaged += int((~whole).sum())
                log.warning(
                    "vector store %s: %s: %d record(s) fail their checksum; embedding them again",
                    store.uri,
                    key,
                    int((~whole).sum()),
                )
            good = fetched[at] & whole & (layout.hashes(got) == hashes[mine])  # else a namesake
            records[mine[good]] = got[good]
            ok[mine[good]] = True
        return records, ok, skipped

    def worth_fetching(self, uri: str, texts: int, nbytes: int) -> bool:
        """Whether one ranged read of ``nbytes`` holding ``texts`` records costs less than
        embedding them: a read's time predicted from those this store took so far (a latency,
        and a time a byte from large reads) against what a text costs the worker (measured as
        it runs; unknown: fetch). On local disk a read is microseconds and always wins; on
        object storage with a small model on a GPU, a read of a few texts loses, and so does a
        long read for scattered ones."""
        latency, per_byte = self._latency.get(uri), self._per_byte.get(uri, 0.0)
        if latency is None or self.cost_per_text <= 0:
            return True
        return texts * self.cost_per_text >= latency + nbytes * per_byte

    def _timed(self, uri: str, seconds: float, reads: int, nbytes: int) -> None:
        """Learn a store's latency from reads of little, its time a byte from long ones."""
        each, size = seconds / max(1, reads), nbytes / max(1, reads)
        if size < SHORT_READ:
            old = self._latency.get(uri)
            self._latency[uri] = each if old is None else 0.8 * old + 0.2 * each
        elif size >= LONG_READ:
            old = self._per_byte.get(uri)
            self._per_byte[uri] = each / size if old is None else 0.8 * old + 0.2 * each / size
            self._latency.setdefault(uri, 0.0)

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
        found: list[tuple[VectorStore, list[StoredFile]]] = []
        for store in self.stores:
            try:
                if first:
                    view = StoreView(store.journal, keep_hashes=False)
                    self._views[store.uri] = view
                    found.append((store, view.load()))
                else:
                    found.append((store, self._views[store.uri].follow()))
            except (EmbedEtlError, OSError) as exc:  # a cache that cannot be read: embed
                log.warning("vector store %s: cannot read its journal: %s", store.uri, exc)
        texts = sum(f.rows for _, files in found for f in files)
        with self.index.bulk(texts) if first else contextlib.nullcontext():
            for store, files in found:
                self._add(store, files)

    def _add(self, store: VectorStore, files: list[StoredFile]) -> None:
        """Index files new to this reader. One that compaction or gc made of files it knows
        takes their place: they are read no more (they are deleted once the grace is over)."""
        batch: list[tuple[int, np.ndarray, np.ndarray | None]] = []
        texts = 0
        replaced: list[int] = []
        for item in files:
            if (store.uri, item.name) in self.index:
                continue
            names = self.index.names
            replaced += [names[(store.uri, s)] for s in item.sources if (store.uri, s) in names]
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
        for number in replaced:
            self.index.kill(number)

    def _read_index(self, store: VectorStore, item: StoredFile, number: int) -> None:
        """A segment's hashes from its own index, block by block; a damaged block's texts are
        left out (embedded again)."""
        try:
            segment = store.open(item.name, item.size)
            if segment.rows != item.rows:
                raise SegmentError(
                    f"{segment.key}: {segment.rows} records, the journal says {item.rows}"
                )
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
