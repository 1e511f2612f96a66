"""Compaction: a store's small segments merged, in the order they were written, into larger ones.

Small segments (one per shard of a small-shard job) are read through, record by record, checked,
and written again in the same order into segments of up to TARGET_BYTES, keeping each text once.
Then one checkpoint says which segments are live now (etl.reuse.journal). The ones replaced
stay readable for a grace period (jobs that loaded the store before still read them) and are
deleted by the next compaction or gc after it.

Safe beside running jobs and against kills at any instant: new segments are invisible until
the checkpoint names them, and the checkpoint is one conditional write. A kill before it leaves
unnamed segments, which gc deletes; after it, a store that reads correctly. Segments added while
it ran are kept (they land in the journal before or after its checkpoint, and it reads them
before writing). Two compactions (or a compaction and a gc) that race: the second to write its
checkpoint sees the first's, deletes its own new segments and gives up.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from etl.errors import EmbedEtlError, reason
from etl.reuse.hashing import HASH_DTYPE
from etl.reuse.journal import Journal, StoredFile, StoreView, checkpoint_entry
from etl.reuse.segment import Segment, SegmentError, trailer
from etl.reuse.store import SEGMENTS, VectorStore

log = logging.getLogger(__name__)

SMALL_BYTES = 64 << 20  # a segment smaller than this is merged with its neighbours
TARGET_BYTES = 256 << 20  # what compaction writes at most per segment
AUTO_FILES = 64  # a job that leaves more small segments than this compacts them
AUTO_ENTRIES = 64  # ... or more journal entries after the last checkpoint
GRACE_SECONDS = 3600.0  # how long a replaced segment stays readable
CHUNK_ROWS = 1 << 14  # records read at a time
COMMIT_TRIES = 100  # checkpoint attempts, each after reading what landed meanwhile
READERS = 16  # segments opened at once (a small one is read whole as it opens)


@dataclass
class CompactReport:
    """What a compaction did."""

    store: str
    segments_before: int = 0
    segments_after: int = 0
    merged: int = 0  # small segments merged
    written: int = 0  # segments written
    records: int = 0  # records written
    duplicates: int = 0  # records of a text already written, dropped
    damaged: int = 0  # records that failed their checksum, dropped
    unreadable: list[str] = field(default_factory=list)  # segments dropped whole
    deleted: int = 0  # replaced segments past their grace, deleted
    raced: bool = False  # another compaction or gc wrote its checkpoint first
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def compact_if_due(store: VectorStore) -> CompactReport | None:
    """What a job does with the store it leaves: compact it if it holds more than AUTO_FILES
    small segments, or AUTO_ENTRIES journal entries since its last checkpoint. Never fails the
    job (the store is a cache): a failure is a warning."""
    try:
        view = StoreView(store.journal)
        files = view.load()
        small = sum(1 for f in files if f.size < SMALL_BYTES)
        if small <= AUTO_FILES and view.next - max(view.checkpoint, 0) <= AUTO_ENTRIES:
            return None
        report = compact(store, force=True)
    except Exception as exc:  # noqa: BLE001 - the store is a cache: never fail the job
        log.warning("vector store %s: not compacted: %s", store.uri, reason(exc))
        return None
    log.info(
        "vector store %s: %d small segments merged into %d",
        store.uri,
        report.merged,
        report.written,
    )
    return report


def compact(store: VectorStore, grace: float = GRACE_SECONDS, force: bool = False) -> CompactReport:
    """Merge the store's small segments; write a checkpoint even when none is merged if
    ``force`` (a long journal then reads as one entry)."""
    started = time.perf_counter()
    report = CompactReport(store.uri)
    view = StoreView(store.journal)
    view.load()
    refuse_damaged(store, view)
    report.segments_before = len(view.files)
    groups = _groups([f for f in view.files.values() if f.size < SMALL_BYTES])
    if groups or force or _expired(view, grace):
        added: list[StoredFile] = []
        removed: set[str] = set()
        expired = None
        try:
            for group in groups:
                made = _merge(store, group, report)
                removed.update(f.name for f in group)
                if made is not None:
                    added.append(made)
            expired = commit(store, view, removed, added, grace)
        finally:
            if expired is None:  # nobody will ever name them
                for item in added:
                    _forget(store, item.name)
        committed = expired is not None
        report.raced = not committed
        if committed:
            report.deleted += tidy(store, view, expired, grace)
        report.merged = len(removed) if committed else 0
        report.written = len(added) if committed else 0
    report.segments_after = len(view.files)
    report.seconds = time.perf_counter() - started
    return report


def refuse_damaged(store: VectorStore, view: StoreView) -> None:
    """A journal with damaged entries is not rewritten: what they name would be dropped."""
    if view.skipped:
        raise EmbedEtlError(
            f"vector store {store.uri}: journal entries {', '.join(view.skipped)} are damaged, "
            "so what they name is not known; nothing changed (`store check` lists them; delete "
            "them to give up what they name)"
        )


def commit(
    store: VectorStore,
    view: StoreView,
    removed: set[str],
    added: list[StoredFile],
    grace: float,
) -> list[str] | None:
    """Append a checkpoint: the live segments (with those that landed since the view was
    read) less ``removed`` plus ``added``. The segments it stops naming, replaced more than
    ``grace`` seconds ago, to delete once the caller knows it committed (see tidy); None, and
    nothing changed, if another checkpoint landed first."""
    journal: Journal = store.journal
    for _ in range(COMMIT_TRIES):
        for _, entry in view.entries():
            if entry is None:
                continue
            if entry.kind == "checkpoint":
                return None
            for item in entry.files():
                view.files.setdefault(item.name, item.bare())
        refuse_damaged(store, view)
        now = time.time()
        live = [f.bare() for name, f in view.files.items() if name not in removed] + added
        keep = [[name, when] for name, when in view.retired if now - when < grace]
        expired = [name for name, when in view.retired if now - when >= grace]
        retired = keep + [[name, now] for name in sorted(removed)]
        entry = checkpoint_entry(live, retired, view.checkpoint)
        seq = view.next
        if store.storage.create(journal.key(seq), entry.encode()):
            break
    else:
        raise EmbedEtlError(
            f"vector store {store.uri}: no checkpoint written after {COMMIT_TRIES} tries (the "
            "journal cannot be read, or writers keep appending); nothing changed"
        )
    view.checkpoint, view.next = seq, seq + 1
    view.files = {f.name: f for f in live}
    view.retired = retired
    return expired


def tidy(store: VectorStore, view: StoreView, expired: list[str], grace: float) -> int:
    """After a checkpoint: point readers at it, delete what it stopped naming, sweep (a kill
    here leaves objects nobody names: the next compaction or gc deletes them). How many
    objects went."""
    store.journal.set_hint(view.checkpoint)
    for name in expired:
        store.delete(name)
    return len(expired) + sweep(store, view, grace)


def sweep(store: VectorStore, view: StoreView, grace: float) -> int:
    """Delete what the journal does not name once older than the grace: segments (a killed
    writer's; replaced ones whose names a kill dropped) and unfinished uploads. By listing:
    compact and gc only. How many objects."""
    named = set(view.files) | {name for name, _ in view.retired}
    now_ns = time.time_ns()
    deleted = 0
    for entry in store.listed():
        name = entry.key.rsplit("/", 1)[-1].removesuffix(".seg")
        if name in named or now_ns - entry.mtime_ns < grace * 1e9:
            continue
        store.delete(name)
        deleted += 1
    return deleted + store.storage.discard_abandoned_uploads(SEGMENTS, grace)


def _expired(view: StoreView, grace: float) -> bool:
    now = time.time()
    return any(now - when >= grace for _, when in view.retired)


def _groups(small: list[StoredFile]) -> list[list[StoredFile]]:
    """Neighbours in journal order, up to TARGET_BYTES a group; groups of one left alone."""
    groups: list[list[StoredFile]] = [[]]
    size = 0
    for item in small:
        if groups[-1] and size + item.size > TARGET_BYTES:
            groups.append([])
            size = 0
        groups[-1].append(item)
        size += item.size
    return [g for g in groups if len(g) > 1]


def _merge(store: VectorStore, group: list[StoredFile], report: CompactReport) -> StoredFile | None:
    """One new segment of the group's records, in order, each text once; None if none is left.

    The hashes come first (from the journal, or each segment's index) to pick each text's first
    record; then the records stream through, checked, into the new segment. A segment found
    damaged is dropped (its texts are embedded again when next needed); a read that fails
    stops the compaction, which then changes nothing."""
    layout = store.layout
    with ThreadPoolExecutor(READERS, thread_name_prefix="embed-etl-compact") as pool:
        found = list(pool.map(lambda item: opened(store, item, report), group))
    readable = [f for f in found if f is not None]
    if not readable:
        return None
    everything = np.concatenate([h for _, _, h in readable])
    keep = np.zeros(len(everything), bool)
    keep[np.unique(everything, return_index=True)[1]] = True
    report.duplicates += int((~keep).sum())
    kept: list[np.ndarray] = []

    def body() -> Iterator[bytes]:
        start = 0
        for item, segment, hashes in readable:
            mask = keep[start : start + len(hashes)]
            start += len(hashes)
            for first, chunk in _chunks(store, item, segment, report):
                wanted = mask[first : first + len(chunk)]
                expected = hashes[first : first + len(chunk)]
                good = layout.intact(chunk) & (layout.hashes(chunk) == expected)
                report.damaged += int((wanted & ~good).sum())
                chunk = chunk[wanted & good]
                if len(chunk):
                    kept.append(expected[wanted & good])
                    yield chunk.tobytes()
        if not kept:
            raise _Empty
        hashes = np.concatenate(kept)
        report.records += len(hashes)
        yield trailer(len(hashes), layout, store.recipe, run, hashes, created, merged=len(group))

    runs = {f.run for f in group}
    run = runs.pop() if len(runs) == 1 else ""
    name, created = f"c{uuid.uuid4().hex[:23]}", time.time()
    try:
        size = store.publish(name, body())
    except _Empty:
        return None
    rows = sum(len(h) for h in kept)
    return StoredFile(name, rows, size, run, created, tuple(f.name for f in group))


class _Empty(Exception):
    """Every record of a group was damaged: nothing to write."""


def opened(
    store: VectorStore, item: StoredFile, report: Any
) -> tuple[StoredFile, Segment, np.ndarray] | None:
    """A live segment opened (one read when small), with its hashes: the journal's, or its
    index's (a damaged index block's hashes zeroed: no record matches them). None, with a
    warning, if it is damaged or gone: it is dropped, its texts embedded again when next
    needed. A read that fails (EmbedEtlError, OSError) is raised: nothing is decided on it."""
    try:
        segment = store.open(item.name, item.size)
        if segment.rows != item.rows:
            raise SegmentError(
                f"{segment.key}: {segment.rows} records, the journal says {item.rows}"
            )
        if item.hashes is not None:
            return item, segment, item.hashes
        parts = []
        for _, hashes, ok in store.index(segment):
            report.damaged += int((~ok).sum())
            parts.append(hashes if ok.all() else np.where(ok, hashes, np.zeros(1, HASH_DTYPE)[0]))
        return item, segment, np.concatenate(parts) if parts else np.zeros(0, HASH_DTYPE)
    except SegmentError as exc:
        report.unreadable.append(item.name)
        log.warning("vector store %s: dropping a segment it cannot read: %s", store.uri, exc)
        return None


def _chunks(
    store: VectorStore, item: StoredFile, segment: Segment, report: Any
) -> Iterator[tuple[int, np.ndarray]]:
    """(first row, records) of a segment, CHUNK_ROWS at a time; they stop early, with a
    warning, where it turns out cut short."""
    first = 0
    try:
        for chunk in store.read_all(segment, CHUNK_ROWS):
            yield first, chunk
            first += len(chunk)
    except SegmentError as exc:
        report.unreadable.append(item.name)
        log.warning("vector store %s: the rest of a segment is lost: %s", store.uri, exc)


def _forget(store: VectorStore, name: str) -> None:
    try:
        store.delete(name)
    except (EmbedEtlError, OSError) as exc:
        log.warning("vector store %s: %s left for gc: %s", store.uri, name, exc)
