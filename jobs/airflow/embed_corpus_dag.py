"""Airflow DAG: embed a corpus with one mapped task per group of shards.

plan      runs `embed-etl plan --json` and turns its parts into one command each
embed     one mapped BashOperator task per part (dynamic task mapping), retried on failure;
          the `embed_etl` pool caps how many run at once (one per GPU, say)
check     reads `embed-etl status --json` and fails unless every shard is done

A retry (or clearing a failed mapped task) reruns the same command: done shards are skipped,
so only what failed in that group is redone. Configure with the environment of the workers:
EMBED_ETL_INPUT and EMBED_ETL_OUTPUT (object storage every worker sees, e.g. s3:// URIs, with
the store's credentials in the workers' environment or role), EMBED_ETL_PARTS,
EMBED_ETL_OPTIONS.
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

from jobs.scheduling import check_complete, part_commands

INPUT = os.environ.get("EMBED_ETL_INPUT", "s3://corpus/pydocs/")
OUTPUT = os.environ.get("EMBED_ETL_OUTPUT", "s3://vectors/pydocs/")
PARTS = int(os.environ.get("EMBED_ETL_PARTS", "8"))
OPTIONS = os.environ.get("EMBED_ETL_OPTIONS", "--normalize --no-progress")
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
            ["embed-etl", "plan", INPUT, "--num-shards", str(PARTS), "--output", OUTPUT, "--json"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        return part_commands(json.loads(out), [INPUT], OUTPUT, OPTIONS)

    embed = BashOperator.partial(
        task_id="embed",
        pool=POOL,
        retries=3,
        retry_delay=timedelta(minutes=2),
        execution_timeout=timedelta(hours=12),
    ).expand(bash_command=plan())

    @task
    def check() -> str:
        planned = json.loads(
            subprocess.run(
                ["embed-etl", "plan", INPUT, "--num-shards", "1", "--output", OUTPUT, "--json"],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
        )["total_inputs"]
        status = subprocess.run(
            ["embed-etl", "status", "--output", OUTPUT, "--json", INPUT],
            capture_output=True,
            text=True,
        )
        return check_complete(json.loads(status.stdout), planned)

    embed >> check()


embed_corpus()
