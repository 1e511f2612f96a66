"""The example Airflow DAG parses and has the planned shape. Runs in its own Airflow venv
(`make test` builds .venv-airflow), since Airflow pins its own versions of many packages."""

from __future__ import annotations

import os
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


def test_plan_fans_out_to_mapped_embed_tasks_then_check(dag):
    assert {t.task_id for t in dag.tasks} == {"plan", "embed", "check"}
    embed = dag.get_task("embed")
    assert type(embed).__name__ == "MappedOperator"  # dynamic task mapping over the parts
    assert embed.upstream_task_ids == {"plan"}
    assert dag.get_task("check").upstream_task_ids == {"embed"}


def test_embed_tasks_retry_inside_a_pool(dag):
    embed = dag.get_task("embed")
    assert embed.pool == "embed_etl"
    assert embed.retries == 3
    assert dag.max_active_runs == 1
