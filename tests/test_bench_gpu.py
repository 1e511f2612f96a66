"""`make bench-gpu` cannot rot before a GPU is lent: its smoke mode runs every step on the CPU
(the job and sentence-transformers in both half dtypes at two budgets, the cold start, the CUDA
tests with the device forced) and puts its table into the GPU section of RESULTS.md.

The smoke run is the benchmark itself (about a minute on two cores), so it is a slow test (`make
test-slow`); that the table goes into RESULTS.md is checked in `make test` too."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from benchmarks.gpu import GPU_END, GPU_START, write_results
from tests.conftest import REPO

RESULTS = REPO / "benchmarks" / "RESULTS.md"


def _gpu_section(text: str) -> tuple[str, str, str]:
    """(before the GPU section, the section, after it) of a RESULTS.md."""
    head, _, rest = text.partition(GPU_START)
    section, _, tail = rest.partition(GPU_END)
    return head, section, tail


def test_a_table_replaces_only_the_gpu_section_of_results(tmp_path):
    results = tmp_path / "RESULTS.md"
    shutil.copy(RESULTS, results)
    write_results(results, "**a GPU**, a table\n")
    write_results(results, "**another GPU**, another table\n")  # a second run replaces the first
    head, section, tail = _gpu_section(results.read_text())
    assert section.strip() == "**another GPU**, another table"
    before = _gpu_section(RESULTS.read_text())
    assert (head, tail) == (before[0], before[2])


def test_a_fetched_report_is_published_with_the_gpu_busy_column(tmp_path):
    """`--publish gpu.json`: a run made on a lent GPU puts its table into RESULTS.md here."""
    results = tmp_path / "RESULTS.md"
    shutil.copy(RESULTS, results)
    run = {"what": "embed-etl, --batch-tokens 16384", "dtype": "bfloat16", "rows_per_s": 900.0}
    report = {
        "date": "2026-12-05",
        "device": "a GPU",
        "machine": {"cpu": "a CPU", "torch": "2.13"},
        "rows": 1000,
        "shards": 1,
        "smoke": False,
        "quick": True,
        "results": [
            {"what": "sentence-transformers, batch 256", "dtype": "bfloat16", "rows_per_s": 1000.0,
             "cos_min": 0.999},
            {**run, "x_st": 0.9, "cos_min": 0.998, "gpu_busy": 0.6},
        ],
        "cold_start": {"repeats": 1, "job_s": 2.0, "st_script_s": 4.0, "ratio": 0.5},
        "cuda_tests": {"passed": 5, "failed": 0, "skipped": 0},
    }  # fmt: skip
    (tmp_path / "gpu.json").write_text(json.dumps(report))
    cmd = [sys.executable, "-m", "benchmarks.gpu", "--publish", str(tmp_path / "gpu.json")]
    cmd += ["--results", str(results)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    section = _gpu_section(results.read_text())[1]
    assert "**a GPU**" in section and "quick run" in section
    assert "| 0.90 | 0.9980 | 60% |" in section  # ratio, min cosine, GPU busy


@pytest.mark.slow
def test_bench_gpu_smoke_mode_runs_every_step_and_writes_the_table(tmp_path, corpus):
    results = tmp_path / "RESULTS.md"
    shutil.copy(RESULTS, results)
    cmd = [sys.executable, "-m", "benchmarks.gpu", "--device", "cpu", "--smoke"]
    cmd += ["--out", str(tmp_path), "--corpus", str(corpus), "--results", str(results)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "gpu.json").read_text())
    runs = [(r["what"].split(",")[0], r["dtype"]) for r in report["results"]]
    expected = []
    for dtype in ("float16", "bfloat16"):
        expected += [("sentence-transformers", dtype)] + [("embed-etl", dtype)] * 3
    assert runs == expected
    assert all(r["rows_per_s"] > 0 and r["cos_min"] > 0.95 for r in report["results"])
    jobs = [r for r in report["results"] if r["what"].startswith("embed-etl")]
    assert all(r["gpu_busy"] is None for r in jobs)  # no CUDA events on a CPU
    assert report["cold_start"]["job_s"] > 0 and report["cold_start"]["st_script_s"] > 0
    tests = report["cuda_tests"]
    assert (tests["passed"], tests["failed"], tests["exit"]) == (4, 0, 0), tests
    assert " passed" in (tmp_path / "cuda-tests.txt").read_text()
    table = (tmp_path / "gpu.md").read_text()
    assert table.count("\n| ") == 1 + len(expected)  # the header row and one row per run
    assert "smoke run" in table
    assert table.count("| n/a |") == len(jobs)  # the GPU-busy column, beside each job row

    assert _gpu_section(results.read_text())[1].strip() == table.strip()
