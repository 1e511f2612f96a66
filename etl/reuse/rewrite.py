"""How compaction and gc rewrite a store: segments read back checked, merged into new ones, one
checkpoint to commit what they wrote, and the tidying after it.

Both rewrite a store the same way: read the live segments they replace (opened, chunks), write
new ones that no reader sees yet (compaction: merge), then append one checkpoint naming what is
live now (commit). Only after it do they point readers at it and delete what it stopped naming
past the grace (tidy), and what no entry names at all (sweep: a killed writer's segments,
unfinished uploads). A kill anywhere leaves a store that reads correctly; a rerun finishes the
tidying.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from etl.errors import EmbedEtlError
from etl.reuse.hashing import HASH_DTYPE
from etl.reuse.journal import Journal, StoredFile, checkpoint_entry
from etl.reuse.segment import Segment, SegmentError, trailer
from etl.reuse.store import SEGMENTS, VectorStore
from etl.reuse.view import StoreView

log = logging.getLogger(__name__)

GRACE_SECONDS = 3600.0  # how long a replaced segment stays readable
CHUNK_ROWS = 1 << 14  # records read at a time
COMMIT_TRIES = 100  # checkpoint attempts, each after reading what landed meanwhile
READERS = 16  # segments a merge opens at once (a small one is read whole as it opens)


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
        view.refuse_damaged()
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


def expired_any(view: StoreView, grace: float) -> bool:
    now = time.time()
    return any(now - when >= grace for _, when in view.retired)


class Empty(Exception):
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


def chunks(
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


def forget(store: VectorStore, name: str) -> None:
    try:
        store.delete(name)
    except (EmbedEtlError, OSError) as exc:
        log.warning("vector store %s: %s left for gc: %s", store.uri, name, exc)


def merge(store: VectorStore, group: list[StoredFile], report: Any) -> StoredFile | None:
    """Compaction's rewrite: one new segment of the group's records, in order, each text once;
    None if none is left.

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
            for first, chunk in chunks(store, item, segment, report):
                wanted = mask[first : first + len(chunk)]
                expected = hashes[first : first + len(chunk)]
                good = layout.intact(chunk) & (layout.hashes(chunk) == expected)
                report.damaged += int((wanted & ~good).sum())
                chunk = chunk[wanted & good]
                if len(chunk):
                    kept.append(expected[wanted & good])
                    yield chunk.tobytes()
        if not kept:
            raise Empty
        hashes = np.concatenate(kept)
        report.records += len(hashes)
        yield trailer(len(hashes), layout, store.recipe, run, hashes, created, merged=len(group))

    runs = {f.run for f in group}
    run = runs.pop() if len(runs) == 1 else ""
    name, created = f"c{uuid.uuid4().hex[:23]}", time.time()
    return published(store, name, body(), kept, run, created, tuple(f.name for f in group))


def published(
    store: VectorStore,
    name: str,
    body: Iterator[bytes],
    kept: list[np.ndarray],
    run: str,
    created: float,
    sources: tuple[str, ...],
) -> StoredFile | None:
    """A rewritten segment uploaded under ``name``, as the journal will name it (its records
    the hashes ``kept`` as ``body`` streamed); None where every record was dropped (Empty)."""
    try:
        size = store.publish(name, body)
    except Empty:
        return None
    return StoredFile(name, sum(len(k) for k in kept), size, run, created, sources)
