"""The example Airflow DAG: its shape, and a real run with `airflow dags test`. Runs in its own
Airflow venv (`make test` builds .venv-airflow), since Airflow pins its own versions of many
packages; the embed tasks call the project's installed CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def dag(tmp_path_factory):
    os.environ["AIRFLOW_HOME"] = str(tmp_path_factory.mktemp("airflow-home"))
    os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    try:
        from airflow.dag_processing.dagbag import DagBag  # Airflow 3
    except ImportError:
        from airflow.models.dagbag import DagBag  # Airflow 2

    bag = DagBag(dag_folder=str(REPO / "jobs" / "airflow"))
    assert not bag.import_errors, bag.import_errors
    return bag.dags["embed_corpus"]


def test_plan_fans_out_to_mapped_embed_tasks_then_verify(dag):
    assert {t.task_id for t in dag.tasks} == {"plan", "embed", "verify"}
    embed = dag.get_task("embed")
    assert type(embed).__name__ == "MappedOperator"  # dynamic task mapping over the parts
    assert embed.upstream_task_ids == {"plan"}
    assert dag.get_task("verify").upstream_task_ids == {"embed"}


def test_embed_tasks_retry_inside_a_pool(dag):
    embed = dag.get_task("embed")
    assert embed.pool == "embed_etl"
    assert embed.retries == 3
    assert dag.max_active_runs == 1


AIRFLOW = Path(sys.executable).parent / "airflow"  # this venv's own
PROJECT_PYTHON = REPO / ".venv" / "bin" / "python"  # the project's venv: torch, the CLI


def _airflow(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(AIRFLOW), *args], env=env, capture_output=True, text=True, timeout=300, check=False
    )


def _json_lines(stdout: str):
    """The JSON an Airflow command printed, past the warnings it prints first."""
    return json.loads(next(line for line in stdout.splitlines() if line.startswith("[")))


def _records(out: Path) -> dict[str, dict]:
    shards = out / "_embed_etl" / "shards"
    return {p.name: json.loads(p.read_text()) for p in sorted(shards.glob("*.json"))}


def _children_alive() -> list[str]:
    """Processes still running that this test process started (directly or not)."""
    mine, found = {os.getpid()}, []
    for _ in range(5):  # a few generations
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            pid = int(stat.parent.name)
            if int(fields[1]) in mine and pid not in mine and fields[0] != "Z":
                mine.add(pid)
                found.append((stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode())
    return found


def test_the_dag_runs_retries_a_lost_part_and_a_second_run_embeds_nothing(tmp_path):
    """`airflow dags test`: plan -> mapped embed (the installed CLI) -> verify. Part 1 loses its
    worker after one shard on its first try; the retry (no delay) redoes only the rest; the run
    ends green. A second run reruns every task and embeds nothing."""
    if not PROJECT_PYTHON.exists():
        pytest.skip("the project's venv (.venv) is not built")
    subprocess.run(
        [str(PROJECT_PYTHON), "-m", "tests.airflow_dag.fixtures", str(tmp_path)],
        cwd=REPO,
        check=True,
        capture_output=True,
    )
    out = tmp_path / "out"
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(tmp_path / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "jobs" / "airflow"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "PYTHONPATH": str(REPO),
        "HF_HUB_OFFLINE": "1",
        "EMBED_ETL_BIN": str(tmp_path / "embed-etl"),  # the real CLI; part 1 dies once
        "EMBED_ETL_INPUT": str(tmp_path / "in"),
        "EMBED_ETL_OUTPUT": str(out),
        "EMBED_ETL_PARTS": "3",
        "EMBED_ETL_OPTIONS": f"--model {tmp_path / 'model'} --num-workers 0 --no-progress",
        "EMBED_ETL_RETRY_DELAY": "0",
        "FLAKY_PART": "1",
        "FLAKY_MARKER": str(tmp_path / "part-1-failed-once"),
    }
    assert _airflow(env, "db", "migrate").returncode == 0
    assert _airflow(env, "pools", "set", "embed_etl", "2", "embed-etl slots").returncode == 0

    first = _airflow(env, "dags", "test", "embed_corpus")
    assert first.returncode == 0, first.stdout[-3000:]
    assert (tmp_path / "part-1-failed-once").exists()  # part 1's first try was lost
    records = _records(out)
    assert len(records) == 6 and all(r["status"] == "done" for r in records.values())
    # Part 1 is p1 and p4 (round-robin over sorted names): one by the lost try, one by the retry.
    assert records["p1.parquet.json"]["pid"] != records["p4.parquet.json"]["pid"]
    others = {records[f"p{i}.parquet.json"]["pid"] for i in (0, 2, 3, 5)}
    assert not others & {records["p1.parquet.json"]["pid"], records["p4.parquet.json"]["pid"]}
    verified = subprocess.run(
        [str(REPO / ".venv" / "bin" / "embed-etl"), "verify", "-o", str(out), "--json"],
        capture_output=True,
        text=True,
        check=False,
    )
    report = json.loads(verified.stdout)
    assert verified.returncode == 0 and report["rows"] == 6 * 300, report  # every row once
    assert not _children_alive()

    second = _airflow(env, "dags", "test", "embed_corpus")
    assert second.returncode == 0, second.stdout[-3000:]
    assert _records(out) == records  # every part skipped its done shards: nothing rewritten
    runs = _json_lines(_airflow(env, "dags", "list-runs", "embed_corpus", "-o", "json").stdout)
    assert [r["state"] for r in runs] == ["success", "success"]
    for run in runs:
        states = _json_lines(
            _airflow(
                env, "tasks", "states-for-dag-run", "embed_corpus", run["run_id"], "-o", "json"
            ).stdout
        )
        assert {t["task_id"] for t in states} == {"plan", "embed", "verify"}
        assert {t["state"] for t in states} == {"success"}
    assert not _children_alive()  # no scheduler, triggerer or task left behind
