"""What scheduler integrations (the Airflow DAG, cron) need from embed-etl, without Airflow.

They talk to the job only through its command line and JSON: `plan --json` to fan out,
`run --shard-index I --num-shards N` per task, `status --json` to check the result.
"""

from __future__ import annotations

import shlex
from typing import Any


def part_commands(
    plan: dict[str, Any], inputs: list[str], output: str, options: str = ""
) -> list[str]:
    """One `embed-etl run` command per non-empty part of `embed-etl plan --json` output."""
    n = plan["num_shards"]
    base = ["embed-etl", "run", *inputs, "--output", output]
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
