"""What an output location holds: done, failed, pending and running shards (`embed-etl status`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from etl.contract import ShardStatus
from etl.errors import ConfigError, EmbedEtlError
from etl.inputs import discover
from etl.state.claims import ClaimBook
from etl.state.job_record import read_job
from etl.state.keys import state_name
from etl.state.manifest import Done, Manifest, shard_done
from etl.storage import open_storage

STATES = (ShardStatus.DONE, ShardStatus.FAILED, ShardStatus.PENDING, ShardStatus.RUNNING)


@dataclass
class ShardState:
    """One shard's line in the report."""

    input: str
    status: ShardStatus
    done: Done | None = None  # its done marker: counts, without reading its record
    error: str | None = None  # failed: why
    host: str | None = None  # running: who holds it
    pid: int | None = None
    reason: str | None = None  # pending although once done: why

    def to_dict(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"input": self.input, "status": self.status.value}
        if self.done is not None:
            entry.update(
                rows=self.done.rows,
                null_rows=self.done.null_rows,
                truncated_rows=self.done.truncated_rows,
                chunked_rows=self.done.chunked_rows,
            )
        if self.status == ShardStatus.FAILED:
            entry["error"] = self.error
        elif self.status == ShardStatus.RUNNING:
            entry.update(host=self.host, pid=self.pid)
        if self.reason:
            entry["reason"] = self.reason
        return entry


@dataclass
class StatusReport:
    """Every shard of an output location and its state, with the job that wrote them."""

    output_dir: str
    fingerprint: str | None
    model: str | None
    inputs: list[str]
    shards: list[ShardState] = field(default_factory=list)
    note: str | None = None

    def counts(self) -> dict[str, int]:
        return {s.value: sum(1 for x in self.shards if x.status == s) for s in STATES}

    def to_dict(self) -> dict[str, Any]:
        entries = [s.to_dict() for s in self.shards]
        done = [e for e in entries if e["status"] == ShardStatus.DONE.value]
        return {
            "output": self.output_dir,
            "fingerprint": self.fingerprint,
            "model": self.model,
            "inputs": self.inputs,
            "shards_total": len(entries),
            **self.counts(),
            "rows_done": sum(e.get("rows", 0) for e in done),
            "truncated_rows": sum(e.get("truncated_rows", 0) for e in done),
            "chunked_rows": sum(e.get("chunked_rows", 0) for e in done),
            "null_rows": sum(e.get("null_rows", 0) for e in done),
            "failed_shards": [
                {"input": e["input"], "error": e.get("error")}
                for e in entries
                if e["status"] == ShardStatus.FAILED.value
            ],
            "shards": entries,
            **({"note": self.note} if self.note else {}),
        }

    def to_text(self) -> str:
        """What `embed-etl status` prints: the counts, then the truncated, running and failed
        shards (--json prints to_dict, whose figures these are)."""
        report = self.to_dict()
        lines = [
            f"output       {report['output']}",
            f"model        {report['model']}  (fingerprint {report['fingerprint']})",
            f"shards       {report['shards_total']}: {report['done']} done, {report['failed']} "
            f"failed, {report['pending']} pending, {report['running']} running",
            f"rows done    {report['rows_done']:,} ({report['truncated_rows']:,} truncated, "
            f"{report['null_rows']:,} null text)",
        ]
        if report["chunked_rows"]:
            lines.append(f"chunked      {report['chunked_rows']:,} long rows embedded in windows")
        if self.note:
            lines.append(f"note         {self.note}")
        cut = [s for s in report["shards"] if s.get("truncated_rows")]
        if cut:
            lines += ["", "truncated rows by shard (--long-text chunk keeps the whole text):"]
            lines += [f"  {s['input']}  {s['truncated_rows']:,}" for s in cut[:20]]
            if len(cut) > 20:
                lines.append(f"  ... {len(cut) - 20} more shards (--json lists all)")
        running = [s for s in self.shards if s.status == ShardStatus.RUNNING]
        if running:
            lines += ["", "running:"] + [f"  {s.input}  ({s.host} pid {s.pid})" for s in running]
        failed = [s for s in self.shards if s.status == ShardStatus.FAILED]
        if failed:
            lines += ["", "failed:"] + [f"  {s.input}  {s.error}" for s in failed]
            lines += ["", "rerun them with the same command plus --only-failed"]
        return "\n".join(lines)


def job_status(output_dir: str, inputs: tuple[str, ...] = ()) -> StatusReport:
    """Read the manifest and claims of ``output_dir``; inputs default to those of the job.

    Listings, not one request per shard: done markers and outputs say which shards are done
    (etl.state.manifest.shard_done, the rule the plan uses); only the records of the others
    are read (to tell failed from pending).
    """
    storage = open_storage(output_dir)
    storage.check()
    manifest = Manifest(storage)
    job = read_job(storage)
    recorded = manifest.recorded()
    if job is None and not recorded:
        raise ConfigError(f"--output {output_dir}: no embed-etl job found there")
    job = job or {}
    fingerprint = job.get("fingerprint") or ""
    given = list(inputs) or list(job.get("inputs", []))
    report = StatusReport(output_dir, fingerprint or None, job.get("model"), given)
    try:
        shards = discover(tuple(given), output_dir) if given else []
    except EmbedEtlError as exc:
        report.note = f"inputs not found ({exc}); showing recorded shards only"
        shards = []
    if not shards:  # inputs gone: the recorded shards, as their records saw their inputs
        shards = [r.shard for r in (manifest.read_name(n) for n in sorted(recorded)) if r]
    index = manifest.done_index()
    running = ClaimBook(manifest, fingerprint).running()
    for shard in shards:
        done = shard_done(shard, fingerprint, index)
        if done is not None:
            report.shards.append(ShardState(shard.rel_name, ShardStatus.DONE, done))
            continue
        if shard.rel_name in running:
            holder = running[shard.rel_name]
            state = ShardState(
                shard.rel_name, ShardStatus.RUNNING, host=holder.get("host"), pid=holder.get("pid")
            )
        else:
            record = manifest.read(shard) if state_name(shard.rel_name) in recorded else None
            if record is not None and record.status == ShardStatus.FAILED:
                state = ShardState(shard.rel_name, ShardStatus.FAILED, error=record.error)
            else:
                state = ShardState(shard.rel_name, ShardStatus.PENDING)
                if record is not None and record.status == ShardStatus.DONE:
                    state.reason = "input or output changed since it was done"
        report.shards.append(state)
    return report
