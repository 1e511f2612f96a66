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
from dataclasses import dataclass, field

from etl.errors import reason
from etl.reuse.journal import StoredFile
from etl.reuse.rewrite import GRACE_SECONDS, commit, expired_any, forget, merge, tidy
from etl.reuse.store import VectorStore
from etl.reuse.view import StoreView

log = logging.getLogger(__name__)

SMALL_BYTES = 64 << 20  # a segment smaller than this is merged with its neighbours
TARGET_BYTES = 256 << 20  # what compaction writes at most per segment
AUTO_FILES = 64  # a job that leaves more small segments than this compacts them
AUTO_ENTRIES = 64  # ... or more journal entries after the last checkpoint


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
    due: bool = True  # False: asked to compact only when due, it was not (nothing done)

    def to_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "due"}

    def to_text(self) -> str:
        """What `store compact` prints (--json prints to_dict)."""
        if self.raced:
            return f"{self.store}: another compaction or gc wrote first; nothing changed"
        return (
            f"{self.store}: {self.merged} small segments merged into {self.written} "
            f"({self.records:,} records, {self.duplicates:,} repeats and {self.damaged:,} "
            f"damaged dropped); {self.segments_before} segments before, {self.segments_after} "
            f"now; {self.deleted} replaced ones past their grace deleted; {self.seconds:.1f} s"
        )


def compact_if_due(store: VectorStore) -> CompactReport | None:
    """What a job does with the store it leaves: compact it if it holds more than AUTO_FILES
    small segments, or AUTO_ENTRIES journal entries since its last checkpoint (None if not).
    Never fails the job (the store is a cache): a failure is a warning."""
    try:
        report = compact(store, force=True, when_due=True)
    except Exception as exc:  # noqa: BLE001 - the store is a cache: never fail the job
        log.warning("vector store %s: not compacted: %s", store.uri, reason(exc))
        return None
    if not report.due:
        return None
    log.info(
        "vector store %s: %d small segments merged into %d",
        store.uri,
        report.merged,
        report.written,
    )
    return report


def compact(
    store: VectorStore, grace: float = GRACE_SECONDS, force: bool = False, when_due: bool = False
) -> CompactReport:
    """Merge the store's small segments; write a checkpoint even when none is merged if
    ``force`` (a long journal then reads as one entry). ``when_due``: only if more than
    AUTO_FILES segments are small, or AUTO_ENTRIES journal entries follow the last checkpoint
    (the report says ``due`` False otherwise, and nothing was done)."""
    started = time.perf_counter()
    view = StoreView(store.journal)
    view.load()
    report = CompactReport(store.uri, segments_before=len(view.files))
    small = [f for f in view.files.values() if f.size < SMALL_BYTES]
    entries = view.next - max(view.checkpoint, 0)  # since the last checkpoint
    if when_due and len(small) <= AUTO_FILES and entries <= AUTO_ENTRIES:
        report.due, report.segments_after = False, len(view.files)
        return report
    view.refuse_damaged()
    groups = _groups(small)
    if groups or force or expired_any(view, grace):
        added: list[StoredFile] = []
        removed: set[str] = set()
        expired = None
        try:
            for group in groups:
                made = merge(store, group, report)
                removed.update(f.name for f in group)
                if made is not None:
                    added.append(made)
            expired = commit(store, view, removed, added, grace)
        finally:
            if expired is None:  # nobody will ever name them
                for item in added:
                    forget(store, item.name)
        committed = expired is not None
        report.raced = not committed
        if committed:
            report.deleted += tidy(store, view, expired, grace)
        report.merged = len(removed) if committed else 0
        report.written = len(added) if committed else 0
    report.segments_after = len(view.files)
    report.seconds = time.perf_counter() - started
    return report


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
