"""Run with the project's own venv (Airflow's has no torch): the corpus, the tiny model and an
embed-etl command that fails once, for the DAG test.

    python -m tests.airflow_dag.fixtures ROOT
"""

from __future__ import annotations

import sys
from pathlib import Path

from tests.conftest import REPO, build_tiny_model, tiny_texts, write_shard

SHARDS, ROWS = 6, 300


def main(root: Path) -> None:
    for i in range(SHARDS):
        write_shard(
            root / "in" / f"p{i}.parquet",
            tiny_texts(ROWS, seed=i),
            ids=range(i * ROWS, (i + 1) * ROWS),
        )
    build_tiny_model(root / "model")
    flaky = root / "embed-etl"
    flaky.write_text(
        f'#!/bin/sh\nexec {sys.executable} {REPO / "tests" / "airflow_dag" / "flaky.py"} "$@"\n'
    )
    flaky.chmod(0o755)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
