"""What compaction and gc share: segments read back checked, one checkpoint to commit what
they wrote, and the tidying after it.

Both rewrite a store the same way: read the live segments they replace (opened, chunks), write
new ones that no reader sees yet, then append one checkpoint naming what is live now (commit).
Only after it do they point readers at it and delete what it stopped naming past the grace
(tidy), and what no entry names at all (sweep: a killed writer's segments, unfinished
uploads). A kill anywhere leaves a store that reads correctly; a rerun finishes the tidying.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

import numpy as np

from etl.errors import EmbedEtlError
from etl.reuse.hashing import HASH_DTYPE
from etl.reuse.journal import Journal, StoredFile, checkpoint_entry
from etl.reuse.segment import Segment, SegmentError
from etl.reuse.store import SEGMENTS, VectorStore
from etl.reuse.view import StoreView

log = logging.getLogger(__name__)

GRACE_SECONDS = 3600.0  # how long a replaced segment stays readable
CHUNK_ROWS = 1 << 14  # records read at a time
COMMIT_TRIES = 100  # checkpoint attempts, each after reading what landed meanwhile


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
