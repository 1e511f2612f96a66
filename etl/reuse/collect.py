"""gc: a store kept to the vectors recent runs used.

Every run's workers write down in the store's journal the texts they stored and the texts they
served from it (etl.reuse.publish). `embed-etl store gc` keeps the vectors that the last K runs
stored or served (--keep-runs K), or that runs of the last D days did (--keep-days D), or
either; it drops every other vector: a segment left whole stays, one with nothing kept goes, one
with some kept is written again with only those, in the same order. One checkpoint then names
what is live (etl.reuse.rewrite.commit). What it replaced stays readable for the grace period,
for jobs that loaded the store before; then it is deleted, with the journal entries of runs no
longer kept, and any segment the journal never named (a killed writer's) older than the grace.

Safe beside running jobs: what a running job adds lands in the journal and is kept; what it
reads is still there for the grace period. A kill at any instant leaves a store that reads
correctly (new segments are unnamed until the checkpoint); running gc again finishes.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from etl.reuse.hashing import HASH_DTYPE
from etl.reuse.journal import Journal, JournalError, StoredFile
from etl.reuse.rewrite import GRACE_SECONDS, Empty, chunks, commit, opened, published, tidy
from etl.reuse.segment import Segment, trailer
from etl.reuse.store import VectorStore
from etl.reuse.view import StoreView

log = logging.getLogger(__name__)


@dataclass
class RunUse:
    """One run, as the journal remembers it."""

    run: str
    first: float
    last: float
    entries: list[int] = field(default_factory=list)
    stored: int = 0
    served: int = 0
    hashes: list[np.ndarray] = field(default_factory=list)  # stored and served, as 64-bit keys
    unindexed: list[str] = field(default_factory=list)  # segments told without their hashes


@dataclass
class GcReport:
    """What a gc kept and dropped."""

    store: str
    runs: int = 0  # runs the journal remembers
    runs_kept: int = 0
    segments_before: int = 0
    segments_after: int = 0
    records_before: int = 0
    records_after: int = 0
    bytes_before: int = 0
    bytes_after: int = 0
    rewritten: int = 0
    dropped: int = 0  # segments with nothing kept
    deleted: int = 0  # objects deleted (replaced past their grace, unnamed ones)
    entries_deleted: int = 0
    raced: bool = False
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return dict(self.__dict__)

    def to_text(self) -> str:
        """What `store gc` prints (--json prints to_dict)."""
        if self.raced:
            return f"{self.store}: another compaction or gc wrote first; nothing changed"
        return (
            f"{self.store}: kept what {self.runs_kept} of {self.runs} runs used: "
            f"{self.records_after:,} of {self.records_before:,} records, "
            f"{self.bytes_after / 2**20:,.1f} of {self.bytes_before / 2**20:,.1f} MiB "
            f"({self.rewritten} segments rewritten, {self.dropped} dropped); {self.deleted} "
            f"objects and {self.entries_deleted} journal entries deleted; {self.seconds:.1f} s"
        )


def key64(hashes: np.ndarray) -> np.ndarray:
    """The first 64 bits of each hash: 8 bytes a text for the set gc keeps (two texts share
    them with odds of 3e-4 among 10^8, and then one more vector is kept)."""
    raw = np.ascontiguousarray(hashes, HASH_DTYPE).view(np.uint8).reshape(-1, 16)
    return np.ascontiguousarray(raw[:, :8]).view(">u8")[:, 0].astype(np.uint64)


def history(
    journal: Journal, hashes_of: set[str] | None = None
) -> tuple[dict[str, RunUse], dict[int, tuple[str, float]], list[tuple[int, float]], int]:
    """Every run the journal remembers (by listing it: gc and stats only), with the hashes
    the runs ``hashes_of`` stored and served; each add entry's run and time; the checkpoints'
    numbers and times; the last number listed."""
    runs: dict[str, RunUse] = {}
    owner: dict[int, tuple[str, float]] = {}
    checkpoints = []
    numbers = journal.listed()
    for seq in numbers:
        try:
            entry = journal.read(seq)
        except JournalError as exc:
            log.warning("vector store %s: skipping %s", journal.storage.uri(), exc)
            continue
        if entry is None:
            continue
        if entry.kind == "checkpoint":
            checkpoints.append((seq, entry.time))
            continue
        run, when = str(entry.header.get("run", "")), entry.time
        use = runs.setdefault(run, RunUse(run, when, when))
        use.first, use.last = min(use.first, when), max(use.last, when)
        use.entries.append(seq)
        files, used = entry.files(), entry.used()
        use.stored += sum(f.rows for f in files)
        use.served += len(used)
        if hashes_of is not None and run in hashes_of:
            use.hashes += [key64(f.hashes) for f in files if f.hashes is not None] + [key64(used)]
            use.unindexed += [f.name for f in files if f.hashes is None]
        owner[seq] = (run, when)
    return runs, owner, checkpoints, numbers[-1] if numbers else -1


def kept_runs(runs: dict[str, RunUse], keep_runs: int | None, keep_days: float | None) -> set[str]:
    """The runs a rule keeps: the last ``keep_runs``, or those of the last ``keep_days``."""
    by_time = sorted(runs.values(), key=lambda r: r.last, reverse=True)
    kept = {r.run for r in by_time[: keep_runs or 0]}
    if keep_days is not None:
        since = time.time() - keep_days * 86_400
        kept |= {r.run for r in by_time if r.last >= since}
    return kept


def collect(
    store: VectorStore,
    keep_runs: int | None = None,
    keep_days: float | None = None,
    grace: float = GRACE_SECONDS,
) -> GcReport:
    """Keep what the rule keeps; drop the rest. The runs come from one listing of the journal;
    what lands after it (a run that started meanwhile) is kept whole."""
    started = time.perf_counter()
    report = GcReport(store.uri)
    journal = store.journal
    runs, _, _, _ = history(journal)  # which runs there are: their headers only
    kept = kept_runs(runs, keep_runs, keep_days)
    runs, owner, checkpoints, listed = history(journal, hashes_of=kept)
    report.runs, report.runs_kept = len(runs), len(kept)
    view = StoreView(journal)
    view.load()
    view.refuse_damaged()
    tally = _Tally()
    unindexed = {name for r in kept for name in runs[r].unindexed}
    indexed = [key64(h) for h in _indexes(store, view, unindexed, tally)]
    keep = np.unique(
        np.concatenate(
            [k for r in kept for k in runs[r].hashes] + indexed or [np.zeros(0, np.uint64)]
        )
    )
    for use in runs.values():
        use.hashes = []  # what is kept is in ``keep`` now
    report.segments_before = len(view.files)
    report.records_before = sum(f.rows for f in view.files.values())
    report.bytes_before = sum(f.size for f in view.files.values())
    removed: set[str] = set()
    added: list[StoredFile] = []
    expired = None
    try:
        for item in list(view.files.values()):
            if view.added_at.get(item.name, -1) > listed:
                continue  # named after the listing: a run gc did not see, kept whole
            found = opened(store, item, tally)
            if found is None:  # damaged or gone: nothing of it can be served anyway
                removed.add(item.name)
                report.dropped += 1
                continue
            _, segment, hashes = found
            mask = np.isin(key64(hashes), keep)
            if mask.all():
                continue
            removed.add(item.name)
            if not mask.any():
                report.dropped += 1
                continue
            made = _rewrite(store, item, segment, hashes, mask)
            if made is not None:
                added.append(made)
                report.rewritten += 1
        expired = commit(store, view, removed, added, grace)
    finally:
        if expired is None:  # nobody will ever name them
            for item in added:
                store.delete(item.name)
    report.raced = expired is None
    if expired is not None:
        report.deleted += tidy(store, view, expired, grace)
        report.entries_deleted = _truncate(
            journal, view.checkpoint, owner, checkpoints, kept, grace
        )
    report.segments_after = len(view.files)
    report.records_after = sum(f.rows for f in view.files.values())
    report.bytes_after = sum(f.size for f in view.files.values())
    report.seconds = time.perf_counter() - started
    return report


def _indexes(store: VectorStore, view: StoreView, names: set[str], tally) -> list[np.ndarray]:
    """The hashes of the live segments named, or made from one named (a gc rewrite keeps its
    source's name): a large segment's are in its own index, not the journal. One no longer
    traceable was dropped by an earlier gc; its texts are embedded again when next needed."""
    found = []
    for item in view.files.values() if names else ():
        if item.name in names or names.intersection(item.sources):
            opened_item = opened(store, item, tally)
            if opened_item is not None:
                found.append(opened_item[2])
    return found


class _Tally:
    """Counts that gc does not report (damage is `store check`'s)."""

    def __init__(self) -> None:
        self.damaged = 0
        self.unreadable: list[str] = []


def _rewrite(
    store: VectorStore, item: StoredFile, segment: Segment, hashes: np.ndarray, mask: np.ndarray
) -> StoredFile | None:
    """The segment again with only the records ``mask`` keeps, in order (checked: a damaged
    one is dropped too); None if none is left."""
    layout = store.layout
    kept: list[np.ndarray] = []

    def body() -> Iterator[bytes]:
        for first, chunk in chunks(store, item, segment, _Tally()):
            wanted = mask[first : first + len(chunk)]
            expected = hashes[first : first + len(chunk)]
            good = wanted & layout.intact(chunk) & (layout.hashes(chunk) == expected)
            if good.any():
                kept.append(expected[good])
                yield chunk[good].tobytes()
        if not kept:
            raise Empty
        joined = np.concatenate(kept)
        yield trailer(
            len(joined), layout, store.recipe, item.run, joined, created, collected=item.name
        )

    name, created = f"g{uuid.uuid4().hex[:23]}", time.time()
    return published(store, name, body(), kept, item.run, created, (item.name,))


def _truncate(
    journal: Journal,
    checkpoint: int,
    owner: dict[int, tuple[str, float]],
    checkpoints: list[tuple[int, float]],
    kept: set[str],
    grace: float,
) -> int:
    """Delete the entries before the new checkpoint that nothing needs, once older than the
    grace (a reader or writer that fell behind finds the checkpoint): the checkpoints before
    it, and the add entries of runs no longer kept, as gc read them (an entry that landed while
    it ran stays). The hint already names the new checkpoint."""
    old = time.time() - grace
    gone = [seq for seq, when in checkpoints if seq < checkpoint and when < old]
    gone += [
        seq
        for seq, (run, when) in owner.items()
        if seq < checkpoint and run not in kept and when < old
    ]
    for seq in sorted(gone):
        journal.storage.delete(journal.key(seq))
    return len(gone)
