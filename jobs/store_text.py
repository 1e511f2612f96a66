"""The text the `embed-etl store` commands print (their --json prints the reports as they are)."""

from __future__ import annotations

from typing import Any


def stats_text(s: dict[str, Any]) -> str:
    lines = [
        f"store      {s['store']}  (recipe {s['recipe']}, {s['record_bytes']} bytes a record)",
        f"holds      {s['records']:,} records in {s['segments']} segments ({s['small_segments']} "
        f"small), {s['bytes'] / 2**20:,.1f} MiB",
    ]
    if s["oldest_days"] is not None:
        lines.append(f"age        {s['newest_days']} to {s['oldest_days']} days")
    lines.append(
        f"journal    {s['journal_entries']} entries, {s['entries_since_checkpoint']} since the "
        f"last checkpoint; {s['retired_awaiting_deletion']} replaced segments awaiting deletion, "
        f"{s['unnamed_segments']} unnamed ({s['unnamed_bytes'] / 2**20:,.1f} MiB; gc deletes them)"
    )
    lines.append(f"runs       {s['runs']} remembered; the latest:")
    for r in s["recent_runs"]:
        lines.append(
            f"  {r['run'] or '(compacted)'}  {r['last_days']} days ago: stored {r['stored']:,}, "
            f"served {r['served']:,}"
        )
    return "\n".join(lines)


def check_text(r: dict[str, Any]) -> str:
    lines = [
        f"store      {r['store']}",
        f"read       {r['entries']} journal entries, {r['segments']} segments, "
        f"{r['records']:,} records in {r['seconds']:.1f} s",
    ]
    if not r["damaged"]:
        lines.append("every entry, trailer, index block and record checks out")
        return "\n".join(lines)
    lines.append(f"{r['damaged']} damaged parts (a job skips them and embeds their texts again):")
    for d in r["damage"]:
        rows = f" rows {d['first']}..{d['first'] + d['rows'] - 1}" if d["rows"] else ""
        lines.append(f"  {d['key']}: {d['part']}{rows}: {d['detail']}")
    if r["damaged"] > len(r["damage"]):
        lines.append(f"  ... {r['damaged'] - len(r['damage'])} more (--json lists the first ones)")
    return "\n".join(lines)


def compact_text(r: dict[str, Any]) -> str:
    if r["raced"]:
        return f"{r['store']}: another compaction or gc wrote first; nothing changed"
    return (
        f"{r['store']}: {r['merged']} small segments merged into {r['written']} "
        f"({r['records']:,} records, {r['duplicates']:,} repeats and {r['damaged']:,} damaged "
        f"dropped); {r['segments_before']} segments before, {r['segments_after']} now; "
        f"{r['deleted']} replaced ones past their grace deleted; {r['seconds']:.1f} s"
    )


def gc_text(r: dict[str, Any]) -> str:
    if r["raced"]:
        return f"{r['store']}: another compaction or gc wrote first; nothing changed"
    return (
        f"{r['store']}: kept what {r['runs_kept']} of {r['runs']} runs used: "
        f"{r['records_after']:,} of {r['records_before']:,} records, "
        f"{r['bytes_after'] / 2**20:,.1f} of {r['bytes_before'] / 2**20:,.1f} MiB "
        f"({r['rewritten']} segments rewritten, {r['dropped']} dropped); "
        f"{r['deleted']} objects and {r['entries_deleted']} journal entries deleted; "
        f"{r['seconds']:.1f} s"
    )
