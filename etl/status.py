"""What an output directory holds: done, failed, pending and running shards; and input plans."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any

from etl.claims import ClaimBook
from etl.contract import Shard
from etl.errors import ConfigError, EmbedEtlError
from etl.manifest import ManifestStore, state_key
from etl.shards import discover, partition

log = logging.getLogger(__name__)

STATES = ("done", "failed", "pending", "running")


@dataclass
class StatusReport:
    output_dir: str
    fingerprint: str | None
    model: str | None
    inputs: list[str]
    shards: list[dict[str, Any]] = field(default_factory=list)
    note: str | None = None

    def counts(self) -> dict[str, int]:
        return {state: sum(1 for s in self.shards if s["status"] == state) for state in STATES}

    def to_dict(self) -> dict[str, Any]:
        done = [s for s in self.shards if s["status"] == "done"]
        return {
            "output": self.output_dir,
            "fingerprint": self.fingerprint,
            "model": self.model,
            "inputs": self.inputs,
            "shards_total": len(self.shards),
            **self.counts(),
            "rows_done": sum(s.get("rows", 0) for s in done),
            "truncated_rows": sum(s.get("truncated_rows", 0) for s in done),
            "chunked_rows": sum(s.get("chunked_rows", 0) for s in done),
            "null_rows": sum(s.get("null_rows", 0) for s in done),
            "failed_shards": [
                {"input": s["input"], "error": s.get("error")}
                for s in self.shards
                if s["status"] == "failed"
            ],
            "shards": self.shards,
            **({"note": self.note} if self.note else {}),
        }


def job_status(output_dir: str, inputs: tuple[str, ...] = ()) -> StatusReport:
    """Read the manifest and claims of ``output_dir``; inputs default to those of the job."""
    store = ManifestStore(output_dir)
    job = store.read_job()
    records = {r.get("input"): r for r in store.records()}
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
        shards = [
            Shard(r["input"], r["input"], r.get("output", ""))
            for r in records.values()
            if "input" in r
        ]
    running = ClaimBook(store.claims_dir, store, fingerprint or "").running()
    for shard in shards:
        record = records.get(shard.rel_name) or {}
        entry: dict[str, Any] = {"input": shard.rel_name}
        if fingerprint and store.is_done(shard, fingerprint):
            entry["status"] = "done"
            entry.update(_counts(record))
        elif state_key(shard.rel_name) in running:
            holder = running[state_key(shard.rel_name)]
            entry.update(status="running", host=holder.get("host"), pid=holder.get("pid"))
        elif record.get("status") == "failed":
            entry.update(status="failed", error=record.get("error"))
        else:
            entry["status"] = "pending"
            if record.get("status") == "done":
                entry["reason"] = "input or output changed since it was done"
        report.shards.append(entry)
    return report


def _counts(record: dict[str, Any]) -> dict[str, Any]:
    return {
        "rows": record.get("rows_out", 0),
        "null_rows": record.get("null_rows", 0),
        "truncated_rows": record.get("truncated_rows", 0),
        "chunked_rows": record.get("chunked_rows", 0),
        "seconds": record.get("seconds"),
    }


def plan_parts(inputs: tuple[str, ...], num_shards: int, output_dir: str | None) -> dict[str, Any]:
    """Which input files each of num_shards parts gets (what --shard-index I selects)."""
    if num_shards < 1:
        raise ConfigError(f"--num-shards: expected at least 1, got {num_shards}")
    shards = discover(inputs, output_dir)
    parts = []
    for index, part in enumerate(partition(shards, num_shards)):
        parts.append(
            {
                "shard_index": index,
                "inputs": [s.rel_name for s in part],
                "paths": [s.input_path for s in part],
                "bytes": sum(_size(s.input_path) for s in part),
            }
        )
    return {"num_shards": num_shards, "total_inputs": len(shards), "parts": parts}


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0
