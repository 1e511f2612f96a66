"""What an output location holds: done, failed, pending and running shards (`embed-etl status`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from etl.contract import Shard, ShardStatus
from etl.errors import ConfigError, EmbedEtlError
from etl.inputs import discover, output_key
from etl.state.claims import ClaimBook
from etl.state.job_record import read_job
from etl.state.manifest import Manifest, ShardRecord
from etl.storage import open_storage

STATES = (ShardStatus.DONE, ShardStatus.FAILED, ShardStatus.PENDING, ShardStatus.RUNNING)


@dataclass
class ShardState:
    """One shard's line in the report."""

    input: str
    status: ShardStatus
    record: ShardRecord | None = None  # its manifest record, when it is done or failed
    host: str | None = None  # running: who holds it
    pid: int | None = None
    reason: str | None = None  # pending although once done: why

    def to_dict(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"input": self.input, "status": self.status.value}
        record = self.record
        if self.status == ShardStatus.DONE and record is not None:
            entry.update(
                rows=record.rows_out,
                null_rows=record.null_rows,
                truncated_rows=record.truncated_rows,
                chunked_rows=record.chunked_rows,
                seconds=record.seconds,
            )
        elif self.status == ShardStatus.FAILED and record is not None:
            entry["error"] = record.error
        elif self.status == ShardStatus.RUNNING:
            entry.update(host=self.host, pid=self.pid)
        if self.reason:
            entry["reason"] = self.reason
        return entry


@dataclass
class StatusReport:
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


def job_status(output_dir: str, inputs: tuple[str, ...] = ()) -> StatusReport:
    """Read the manifest and claims of ``output_dir``; inputs default to those of the job."""
    storage = open_storage(output_dir)
    manifest = Manifest(storage)
    job = read_job(storage)
    records = {r.input: r for r in manifest.records()}
    if job is None and not records:
        raise ConfigError(f"--output {output_dir}: no embed-etl job found there")
    job = job or {}
    fingerprint = job.get("fingerprint")
    given = list(inputs) or list(job.get("inputs", []))
    report = StatusReport(output_dir, fingerprint, job.get("model"), given)
    try:
        shards = discover(tuple(given), output_dir) if given else []
    except EmbedEtlError as exc:
        report.note = f"inputs not found ({exc}); showing recorded shards only"
        shards = []
    if not shards:
        shards = [Shard(r.input_path, r.input, output_key(r.input)) for r in records.values()]
    running = ClaimBook(manifest, fingerprint or "").running()
    for shard in shards:
        record = records.get(shard.rel_name)
        if fingerprint and manifest.is_done(shard, fingerprint):
            state = ShardState(shard.rel_name, ShardStatus.DONE, record)
        elif shard.rel_name in running:
            holder = running[shard.rel_name]
            state = ShardState(
                shard.rel_name, ShardStatus.RUNNING, host=holder.get("host"), pid=holder.get("pid")
            )
        elif record is not None and record.status == ShardStatus.FAILED:
            state = ShardState(shard.rel_name, ShardStatus.FAILED, record)
        else:
            state = ShardState(shard.rel_name, ShardStatus.PENDING)
            if record is not None and record.status == ShardStatus.DONE:
                state.reason = "input or output changed since it was done"
        report.shards.append(state)
    return report
