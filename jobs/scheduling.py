"""What scheduler integrations (the Airflow DAG, cron) need from embed-etl, without Airflow.

They talk to the job only through its command line and JSON: `plan --json` to fan out,
`run --shard-index I --num-shards N` per task, `verify --json` (or `status --json`) to check the
result. So a scheduler's own environment needs no torch, only the embed-etl command.
"""

from __future__ import annotations

import shlex
from typing import Any


def part_commands(
    plan: dict[str, Any],
    inputs: list[str],
    output: str,
    options: str = "",
    binary: str = "embed-etl",
) -> list[str]:
    """One `embed-etl run` command per non-empty part of `embed-etl plan --json` output."""
    n = plan["num_shards"]
    base = [binary, "run", *inputs, "--output", output]
    commands = []
    for part in plan["parts"]:
        if not part["inputs"]:
            continue  # more parts than input files: nothing to do for this one
        argv = [*base, "--shard-index", str(part["shard_index"]), "--num-shards", str(n)]
        commands.append(shlex.join(argv) + (f" {options}" if options else ""))
    return commands


def check_complete(status: dict[str, Any], expected_inputs: int) -> str:
    """Raise if `embed-etl status --json` shows anything but every input done; else a summary."""
    problems = []
    if status["failed"]:
        failed = ", ".join(f"{s['input']} ({s['error']})" for s in status["failed_shards"][:5])
        problems.append(f"{status['failed']} failed: {failed}")
    if status["pending"] or status["running"]:
        problems.append(f"{status['pending']} pending, {status['running']} running")
    if status["shards_total"] != expected_inputs:
        problems.append(f"{status['shards_total']} shards known, {expected_inputs} planned")
    if problems:
        raise RuntimeError("embedding incomplete: " + "; ".join(problems))
    return f"{status['done']} shards, {status['rows_done']:,} rows embedded"


def check_verified(report: dict[str, Any]) -> str:
    """Raise unless `embed-etl verify --json` found every shard sound; else a summary."""
    if report["status"] != "ok":
        problems = "; ".join(
            f"{shard['input']}: {', '.join(shard['problems'])}" for shard in report["problems"][:5]
        )
        raise RuntimeError(
            f"embedding not verified: {report['shards_with_problems']} shards: {problems}"
        )
    return f"{report['shards']} shards, {report['rows']:,} rows verified"
