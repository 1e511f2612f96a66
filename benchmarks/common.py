"""What every benchmark needs: the corpus rows, the machine it ran on, running the job."""

from __future__ import annotations

import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CORPUS = REPO.parent / "shared" / "corpus" / "pydocs"


def say(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def corpus_rows(corpus: Path, n: int) -> pa.Table:
    """The first n rows of the corpus, shard by shard in name order."""
    parts, total = [], 0
    for path in sorted(corpus.glob("*.parquet")):
        part = pq.read_table(path, columns=["id", "text"])
        parts.append(part.slice(0, n - total))
        total += parts[-1].num_rows
        if total >= n:
            break
    return pa.concat_tables(parts)


def machine(threads: int) -> dict:
    """CPU model and its vector extensions, cores, threads, versions: beside every figure."""
    cpu, flags = platform.processor() or platform.machine(), []
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                wanted = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "avx512_fp16")
                flags = [f for f in line.split(":", 1)[1].split() if f in wanted]
    except OSError:
        pass
    import torch

    return {
        "cpu": cpu,
        "cpu_flags": flags,
        "cores": os.cpu_count(),
        "threads": threads,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def run_job(
    inputs: Path, out: Path, column: str = "emb_mean", **options
) -> tuple[float, np.ndarray, dict]:
    """The job end to end, Parquet in to Parquet out: (seconds, vectors, summary)."""
    from etl import JobConfig, run_job

    cfg = JobConfig(inputs=(str(inputs),), output_dir=str(out), progress=False, **options)
    start = time.perf_counter()
    summary = run_job(cfg).to_dict()
    seconds = time.perf_counter() - start
    if summary["status"] != "ok":
        raise RuntimeError(f"the job failed: {summary}")
    files = sorted(out.glob("*.parquet"))
    vectors = np.concatenate(
        [np.array(pq.read_table(f).column(column).to_pylist(), np.float32) for f in files]
    )
    return seconds, vectors, summary


def job_options(text: str) -> dict:
    """--job-args "batch_tokens=2048 num_workers=0" -> JobConfig keyword arguments."""
    kwargs = {}
    for item in text.split():
        key, _, value = item.partition("=")
        kwargs[key] = int(value) if value.lstrip("-").isdigit() else value
    return kwargs


def cosines(a: np.ndarray, b: np.ndarray) -> dict:
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return {"min": round(float(cos.min()), 6), "mean": round(float(cos.mean()), 6)}
