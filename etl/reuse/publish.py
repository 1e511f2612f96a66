"""The writer's side, per worker: each shard's new vectors published as a segment, and the
store's journal told about them a batch at a time.

A segment is uploaded once its shard's output is published (one conditional PUT for a small
one). The journal hears of it in the next add entry, which goes out once FLUSH_SECONDS have
passed since the last, and when the worker stops: a worker adds an entry every few seconds at
most, however small its shards. The same entry carries the hashes the worker's shards served
from earlier runs, which `store gc` keeps. Until the entry is written, only this worker's own
readers know the segment (etl.reuse.ledger); a kill before it leaves the segment unnamed, never
read, and deleted by gc. Every COMPACT_EVERY entries the worker that wrote the entry compacts the
store beside its work (etl.reuse.compact), so that a long job leaves new readers a short
journal. Nothing here fails a shard: the store is a cache.
"""

from __future__ import annotations

import logging
import threading
import time

import numpy as np

from etl.contract import Shard
from etl.errors import EmbedEtlError
from etl.reuse.compact import compact_if_due
from etl.reuse.hashing import HASH_DTYPE
from etl.reuse.journal import ENTRY_HASHES, FLUSH_SECONDS, StoredFile, add_entry
from etl.reuse.segment import SegmentError, segment_bytes
from etl.reuse.spill import NewVectors
from etl.reuse.store import StoreTarget
from etl.threads import block_signals

log = logging.getLogger(__name__)

COMPACT_EVERY = 256  # journal entries between the compactions a running job does itself


class Publisher:
    """Publishes a worker's segments and appends its journal entries. Thread-safe."""

    def __init__(self, target: StoreTarget) -> None:
        self.target = target
        self._pending: list[StoredFile] = []
        self._used: list[np.ndarray] = []
        self._lock = threading.Lock()
        self._last = time.monotonic()
        self._next: int | None = None  # where this worker's next entry probably goes
        self._compacting: threading.Thread | None = None
        # Pending segments go to the journal within FLUSH_SECONDS even while a long shard
        # publishes nothing (an unnamed segment older than a gc's grace would be swept).
        # Started with the first segment: reader processes fork before any thread of ours.
        self._stop = threading.Event()
        self._timer: threading.Thread | None = None

    def _tick(self) -> None:
        block_signals()
        while not self._stop.wait(FLUSH_SECONDS):
            self.flush()

    def publish(self, shard: Shard, spill: NewVectors, used: np.ndarray) -> bool:
        """The shard's new vectors as a segment; True once it is in the store."""
        target, store = self.target, self.target.store
        published = False
        with self._lock:
            if self._timer is None:
                self._timer = threading.Thread(
                    target=self._tick, name="embed-etl-journal", daemon=True
                )
                self._timer.start()
        if spill.count:
            name = target.segment_name(shard)
            created = time.time()
            chunks = segment_bytes(
                spill.records(),
                spill.count,
                store.layout,
                store.recipe,
                target.run,
                spill.hash_chunks(),
                created,
                shard=shard.rel_name,
            )
            try:
                size = store.publish(name, chunks, size_hint=spill.nbytes + 17 * spill.count)
            except (SegmentError, EmbedEtlError, OSError) as exc:
                log.warning("%s: vectors not added to %s: %s", shard.rel_name, store.uri, exc)
            else:
                published = True
                # A large segment's hashes stay out of the journal (readers read its index),
                # so that an entry, and this worker, never hold a whole shard's.
                hashes = spill.hashes() if spill.count <= ENTRY_HASHES else None
                with self._lock:
                    self._pending.append(
                        StoredFile(name, spill.count, size, target.run, created, (), hashes)
                    )
        if len(used):
            with self._lock:
                self._used.append(np.asarray(used, HASH_DTYPE))
        self.flush()
        return published

    def flush(self, force: bool = False) -> None:
        """Append an add entry for what is pending, if FLUSH_SECONDS passed (or ``force``)."""
        with self._lock:
            if not (self._pending or self._used):
                return
            if not force and time.monotonic() - self._last < FLUSH_SECONDS:
                return
            pending, used = self._pending, self._used
            self._pending, self._used = [], []
            self._last = time.monotonic()
            journal = self.target.store.journal
            entry = add_entry(
                self.target.run,
                self.target.writer,
                pending,
                np.concatenate(used) if used else np.zeros(0, HASH_DTYPE),
            )
            try:
                hint = journal.hint()
                seq = journal.append(entry, max(self._next or 0, hint))
                if journal.hint() > seq:  # under a checkpoint written meanwhile: unread there
                    seq = journal.append(entry, journal.hint())
                self._next = seq + 1
            except (EmbedEtlError, OSError) as exc:
                self._pending, self._used = pending + self._pending, used + self._used
                log.warning("vector store %s: journal not written: %s", journal.storage.uri(), exc)
                return
            idle = self._compacting is None or not self._compacting.is_alive()
            if seq and seq % COMPACT_EVERY == 0 and idle:
                # Exactly one worker writes entry N x COMPACT_EVERY: it compacts, beside its work,
                # so that a long job's journal and small segments stay short for new readers.
                self._compacting = threading.Thread(
                    target=compact_if_due,
                    args=(self.target.store,),
                    name="embed-etl-compact",
                    daemon=True,
                )
                self._compacting.start()

    def close(self) -> None:
        """Tell the journal what is pending; wait for a compaction this worker started."""
        self._stop.set()
        if self._timer is not None:
            self._timer.join()
        self.flush(force=True)
        if self._compacting is not None:
            self._compacting.join()
