"""Airflow DAG: embed a corpus with one mapped task per group of shards, then verify it.

plan      runs `embed-etl plan --json` and turns its parts into one command each
embed     one mapped BashOperator task per part (dynamic task mapping), retried on failure;
          the `embed_etl` pool caps how many run at once (one per GPU, say)
verify    runs `embed-etl verify --json`: every input row in the output once, in order, with a
          sane vector; fails naming the shards that are not

A retry (or clearing a failed mapped task) reruns the same command: done shards are skipped,
so only what failed in that group is redone. Configure with the environment of the workers:
EMBED_ETL_INPUT and EMBED_ETL_OUTPUT (object storage every worker sees, e.g. s3:// URIs, with
the store's credentials in the workers' environment or role), EMBED_ETL_PARTS,
EMBED_ETL_OPTIONS, EMBED_ETL_RETRY_DELAY (seconds, default 300) and EMBED_ETL_BIN (the
embed-etl command, default `embed-etl` on the PATH).
Create the pool first: `airflow pools set embed_etl 2 "embed-etl GPU slots"`.
"""

from __future__ import annotations

import json
import os
import subprocess
from datetime import datetime, timedelta

try:  # Airflow 3
    from airflow.providers.standard.operators.bash import BashOperator
    from airflow.sdk import dag, task
except ImportError:  # Airflow 2
    from airflow.decorators import dag, task
    from airflow.operators.bash import BashOperator

from jobs.scheduling import check_verified, part_commands

INPUT = os.environ.get("EMBED_ETL_INPUT", "s3://corpus/pydocs/")
OUTPUT = os.environ.get("EMBED_ETL_OUTPUT", "s3://vectors/pydocs/")
PARTS = int(os.environ.get("EMBED_ETL_PARTS", "8"))
OPTIONS = os.environ.get("EMBED_ETL_OPTIONS", "--normalize --no-progress")
RETRY_DELAY = timedelta(seconds=float(os.environ.get("EMBED_ETL_RETRY_DELAY", "300")))
BIN = os.environ.get("EMBED_ETL_BIN", "embed-etl")
POOL = "embed_etl"


@dag(
    dag_id="embed_corpus",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["embed-etl"],
)
def embed_corpus():
    @task
    def plan() -> list[str]:
        out = subprocess.run(
            [BIN, "plan", INPUT, "--num-shards", str(PARTS), "--output", OUTPUT, "--json"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        return part_commands(json.loads(out), [INPUT], OUTPUT, OPTIONS, binary=BIN)

    embed = BashOperator.partial(
        task_id="embed",
        pool=POOL,
        retries=3,
        retry_delay=RETRY_DELAY,
        execution_timeout=timedelta(hours=12),
    ).expand(bash_command=plan())

    @task
    def verify() -> str:
        result = subprocess.run(
            [BIN, "verify", "--output", OUTPUT, "--json", INPUT], capture_output=True, text=True
        )
        if not result.stdout.strip():
            raise RuntimeError(f"embed-etl verify failed: {result.stderr.strip()}")
        return check_verified(json.loads(result.stdout))

    embed >> verify()


embed_corpus()
