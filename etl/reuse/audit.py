"""`embed-etl store check` and `store stats`: a whole store read and judged; what it holds, counted.

check reads every journal entry and every live segment whole: the trailer, each index block and
each record against its checksum, and each record's hash against the index and the journal. It
reports every damaged part, by segment and rows; a job would skip exactly those and embed their
texts again. stats counts segments, records, bytes, ages, runs and what each run served.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from etl.errors import EmbedEtlError
from etl.figures import Figures
from etl.reuse.collect import history
from etl.reuse.compact import SMALL_BYTES
from etl.reuse.journal import JournalError, StoredFile
from etl.reuse.rewrite import CHUNK_ROWS
from etl.reuse.segment import SegmentError
from etl.reuse.store import STORE_FILE, VectorStore, verified_recipe
from etl.reuse.view import StoreView

MAX_DAMAGE = 1000  # damaged parts listed at most (the count is always whole)


@dataclass(frozen=True)
class Damage:
    """One damaged part of a store."""

    part: str  # store.json, entry, trailer, index, records
    key: str  # the object
    first: int = 0  # the first row it covers (index, records)
    rows: int = 0
    detail: str = ""

    def describe(self) -> str:
        rows = f" rows {self.first}..{self.first + self.rows - 1}" if self.rows else ""
        return f"{self.key}: {self.part}{rows}: {self.detail}"


@dataclass
class CheckReport:
    """What `store check` read and what it found damaged."""

    store: str
    entries: int = 0
    segments: int = 0
    records: int = 0
    damaged: int = 0  # parts found damaged (all of them, even past MAX_DAMAGE)
    damage: list[Damage] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.damaged == 0

    def add(self, damage: Damage) -> None:
        self.damaged += 1
        if len(self.damage) < MAX_DAMAGE:
            self.damage.append(damage)

    def to_dict(self) -> dict[str, Any]:
        found = dict(self.__dict__)
        found["status"] = "ok" if self.ok else "damaged"
        found["damage"] = [d.__dict__ for d in self.damage]
        return found

    def to_text(self) -> str:
        """What `store check` prints (--json prints to_dict)."""
        lines = [
            f"store      {self.store}",
            f"read       {self.entries} journal entries, {self.segments} segments, "
            f"{self.records:,} records in {self.seconds:.1f} s",
        ]
        if self.ok:
            return "\n".join([*lines, "every entry, trailer, index block and record checks out"])
        lines.append(
            f"{self.damaged} damaged parts (a job skips them and embeds their texts again):"
        )
        lines += [f"  {d.describe()}" for d in self.damage]
        more = self.damaged - len(self.damage)
        if more:
            lines.append(f"  ... {more} more (--json lists the first ones)")
        return "\n".join(lines)


class StoreStats(Figures):
    """What `store stats` shows: its figures as store_stats gathers them (--json prints them)."""

    def to_text(self) -> str:
        s = self.figures
        lines = [
            f"store      {s['store']}  (recipe {s['recipe']}, {s['record_bytes']} bytes a record)",
            f"holds      {s['records']:,} records in {s['segments']} segments "
            f"({s['small_segments']} small), {s['bytes'] / 2**20:,.1f} MiB",
        ]
        if s["oldest_days"] is not None:
            lines.append(f"age        {s['newest_days']} to {s['oldest_days']} days")
        lines.append(
            f"journal    {s['journal_entries']} entries, {s['entries_since_checkpoint']} since "
            f"the last checkpoint; {s['retired_awaiting_deletion']} replaced segments awaiting "
            f"deletion, {s['unnamed_segments']} unnamed "
            f"({s['unnamed_bytes'] / 2**20:,.1f} MiB; gc deletes them)"
        )
        lines.append(f"runs       {s['runs']} remembered; the latest:")
        for r in s["recent_runs"]:
            lines.append(
                f"  {r['run'] or '(compacted)'}  {r['last_days']} days ago: stored "
                f"{r['stored']:,}, served {r['served']:,}"
            )
        return "\n".join(lines)


def check_store(store: VectorStore) -> CheckReport:
    """Read the whole store; every damaged part."""
    started = time.perf_counter()
    report = CheckReport(store.uri)
    if not verified_recipe(store.description() or {}):
        detail = "its recipe is not the sha256 of the identity it describes"
        report.add(Damage("store.json", STORE_FILE, detail=detail))
    journal = store.journal
    for seq in journal.listed():
        report.entries += 1
        try:
            journal.read(seq)
        except JournalError as exc:
            report.add(Damage("entry", journal.key(seq), detail=str(exc)))
    view = StoreView(journal)
    view.load()
    for item in view.files.values():
        report.segments += 1
        report.records += item.rows
        _check_segment(store, item, report)
    report.seconds = time.perf_counter() - started
    return report


def _check_segment(store: VectorStore, item: StoredFile, report: CheckReport) -> None:
    key = store.segment_key(item.name)
    try:
        segment = store.open(item.name, item.size)
    except (SegmentError, EmbedEtlError, OSError) as exc:
        report.add(Damage("trailer", key, detail=str(exc)))
        return
    if segment.rows != item.rows:
        report.add(
            Damage("trailer", key, detail=f"{segment.rows} records, the journal says {item.rows}")
        )
        return
    parts, intact = [], []
    for first, hashes, ok in store.index(segment):
        for start, count in _runs(~ok):
            report.add(Damage("index", key, first + start, count, "fails its checksum"))
        parts.append(hashes)
        intact.append(ok)
    index = np.concatenate(parts) if parts else np.zeros(0)
    trusted = np.concatenate(intact) if intact else np.zeros(0, bool)  # index blocks intact
    if item.hashes is not None:
        for start, count in _runs(trusted & (item.hashes != index)):
            report.add(Damage("index", key, start, count, "differs from the journal's hashes"))
    first = 0
    layout = store.layout
    for chunk in store.read_all(segment, CHUNK_ROWS):
        whole = layout.intact(chunk)
        for start, count in _runs(~whole):
            report.add(Damage("records", key, first + start, count, "fail their checksum"))
        rows = slice(first, first + len(chunk))
        wrong = whole & trusted[rows] & (layout.hashes(chunk) != index[rows])
        for start, count in _runs(wrong):
            report.add(
                Damage("records", key, first + start, count, "hold other hashes than the index")
            )
        first += len(chunk)


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """(start, length) of each run of True."""
    if not mask.any():
        return []
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(np.int8), [0]])))
    return [(int(a), int(b - a)) for a, b in zip(edges[::2], edges[1::2], strict=True)]


def store_stats(store: VectorStore, runs_shown: int = 10) -> StoreStats:
    """What the store holds: segments, records, bytes, ages; the runs it remembers, with what
    each stored and served; what awaits deletion."""
    view = StoreView(store.journal)
    files = view.load()
    now = time.time()
    small = [f for f in files if f.size < SMALL_BYTES]
    runs, _, checkpoints, _ = history(store.journal)
    named = {f.name for f in files} | {name for name, _ in view.retired}
    listed = store.listed()
    unnamed = [e for e in listed if e.key.rsplit("/", 1)[-1].removesuffix(".seg") not in named]
    created = [f.created for f in files if f.created]
    recent = sorted(runs.values(), key=lambda r: r.last, reverse=True)[:runs_shown]
    figures = {
        "store": store.uri,
        "recipe": store.recipe,
        "record_bytes": store.layout.record_bytes,
        "segments": len(files),
        "small_segments": len(small),
        "records": sum(f.rows for f in files),
        "bytes": sum(f.size for f in files),
        "oldest_days": round((now - min(created)) / 86_400, 2) if created else None,
        "newest_days": round((now - max(created)) / 86_400, 2) if created else None,
        "journal_entries": len(store.journal.listed()),
        "entries_since_checkpoint": view.next - max(view.checkpoint, 0),
        "checkpoints": len(checkpoints),
        "retired_awaiting_deletion": len(view.retired),
        "unnamed_segments": len(unnamed),
        "unnamed_bytes": sum(e.size for e in unnamed),
        "runs": len(runs),
        "recent_runs": [
            {
                "run": r.run,
                "last_days": round((now - r.last) / 86_400, 2),
                "stored": r.stored,
                "served": r.served,
            }
            for r in recent
        ],
    }
    return StoreStats(figures)
