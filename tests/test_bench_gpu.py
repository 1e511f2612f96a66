"""`make bench-gpu` cannot rot before a GPU is lent: its smoke mode runs every step on the CPU
(the job and sentence-transformers in both half dtypes at two budgets, the cold start, the CUDA
tests with the device forced) and writes the README table."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import CORPUS, REPO


def test_bench_gpu_smoke_mode_runs_every_step_and_writes_the_table(tmp_path):
    cmd = [sys.executable, "-m", "benchmarks.gpu", "--device", "cpu", "--smoke"]
    cmd += ["--out", str(tmp_path), "--corpus", str(CORPUS)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "gpu.json").read_text())
    runs = [(r["what"].split(",")[0], r["dtype"]) for r in report["results"]]
    expected = []
    for dtype in ("float16", "bfloat16"):
        expected += [("sentence-transformers", dtype)] + [("embed-etl", dtype)] * 3
    assert runs == expected
    assert all(r["rows_per_s"] > 0 and r["cos_min"] > 0.95 for r in report["results"])
    assert report["cold_start"]["job_s"] > 0 and report["cold_start"]["st_script_s"] > 0
    tests = report["cuda_tests"]
    assert (tests["passed"], tests["failed"], tests["exit"]) == (2, 0, 0), tests
    table = (tmp_path / "gpu.md").read_text()
    assert table.count("\n| ") == 1 + len(expected)  # the header row and one row per run
    assert "smoke run" in table
