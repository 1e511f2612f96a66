"""`make bench-gpu`: everything a lent GPU should measure, in one call, in about 8 minutes.

On the same rows of the shared corpus and the same device: this job in float16 and bfloat16 at
two token budgets (the larger once more with a reader thread instead of worker processes),
against sentence-transformers `encode` in the same dtype at its best batch size of a short
sweep; cosines to float32; how busy the GPU was during each job; the tokenizer's own
`encode_batch` rate on the host's cores (the host side's ceiling); two larger shapes with seeded
random weights, BERT-base and a Qwen3-Embedding-0.6B decoder, in bfloat16 against
sentence-transformers (benchmarks/gpu_models.py); a cold start; and, first, the CUDA tests.
Writes the report as JSON and Markdown (the device, the machine, the tables and the issue's
targets: bench-results/gpu.json, gpu.md, both rewritten after every step so that a run cut
short keeps what it measured; the tests' output in cuda-tests.txt) and, for a full run, puts
the Markdown into the GPU section of benchmarks/RESULTS.md (`--results` names another file; a
smoke or quick run writes there only when asked; `--publish gpu.json` puts a fetched run's
table there). `--quick` runs everything once (one repeat, one sentence-transformers batch size,
one cold start, fewer rows for the larger shapes): about 4 minutes, model loads included.
`--device cpu --smoke` runs every step small on the CPU, so the script cannot rot until a GPU
is lent (the tests run it so; about a minute on two cores).

A full run, estimated for an H100 or H200 with 16 host cores (none has run yet; figures from
the H200 quick run in RESULTS.md, where sentence-transformers is held near 3,000 rows/s by its
host side). Each step's rows are set so that it keeps to its share and the whole stays well
within 10 minutes; the cold start, last, is what a run cut short loses first:
  CUDA tests                                                            ~40 s
  all-MiniLM-L6-v2, 50,000 rows: sentence-transformers' float32 reference, and per
    dtype its sweep (64, 256) and 3 job configurations x 3 repeats      ~210 s
  encode_batch, 3 times on the same rows in a fresh process             ~5 s
  BERT-base-shaped, 100,000 rows (4M tokens): build, float32 reference
    (4,096 rows), sweep (about 35 s a batch size), one job run          ~95 s
  decoder, 50,000 rows (2M tokens): train the BPE, build (2.4 GB in
    float32), reference, sweep, one job run                             ~85 s
  cold start, 3 repeats of about 25 s                                   ~75 s
about 8.5 minutes in all; `--quick` about 4.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks import gpu_models
from benchmarks.common import DEFAULT_CORPUS, REPO, corpus_rows, cosines, machine, run_job, say
from benchmarks.gpu_models import embedding_seconds, gpu_busy, sync
from benchmarks.gpu_report import GPU_END, GPU_START, share, to_markdown, write_results

__all__ = ["GPU_END", "GPU_START", "gpu_busy", "to_markdown", "write_results"]
DTYPES = ("float16", "bfloat16")
RESULTS = REPO / "benchmarks" / "RESULTS.md"  # a full run's table goes between the markers


def main() -> None:
    args = _parse()
    if args.publish is not None:
        target = args.results or RESULTS
        write_results(target, to_markdown(json.loads(args.publish.read_text())))
        say(f"GPU section of {target} replaced with the table of {args.publish}")
        return
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(
            "make bench-gpu: no CUDA device here; `--device cpu --smoke` checks the script"
        )
    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="embed-etl-bench-gpu-"))
    report = {
        "date": dt.date.today().isoformat(),
        "device": _device_name(args.device),
        "machine": machine(torch.get_num_threads()),
        "host_cores": len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "cuda": torch.version.cuda,
        "rows": args.rows,
        "shards": args.shards,
        "smoke": args.smoke,
        "quick": args.quick,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    # The tests first, and the report written after each step: a run cut short keeps them.
    report["cuda_tests"] = _cuda_tests(args)
    report["results"] = results = []
    _save(args.out, report)
    table = corpus_rows(args.corpus, args.rows)
    shards = work / "in"
    shards.mkdir()
    _write_shards(table, shards, args.shards)
    texts = table.column("text").to_pylist()
    say(f"{len(texts):,} rows on {report['device']}")
    reference = _st(texts, args, "float32", batch_size=args.st_batch_sizes[-1])[1]
    for dtype in DTYPES:
        best_bs, st_rate, st_vectors = _st_best(texts, args, dtype)
        results.append(
            {
                "what": f"sentence-transformers, batch {best_bs}",
                "dtype": dtype,
                "rows_per_s": st_rate,
                "cos_min": cosines(st_vectors, reference)["min"],
            }
        )
        # Each budget with the default readers (worker processes on a GPU), then the larger
        # one with a reader thread (--num-workers 0, the CPU default) to see which is faster.
        for budget, workers in [(b, None) for b in args.budgets] + [(args.budgets[-1], 0)]:
            rates, windows, busy, vectors = [], [], [], None
            for repeat in range(args.repeats):
                out = work / f"job-{dtype}-{budget}-{workers}-{repeat}"
                secs, vectors, summary = run_job(
                    shards,
                    out,
                    column="emb_model",
                    device=args.device,
                    dtype=dtype,
                    batch_tokens=budget,
                    num_workers=workers,
                    normalize=True,
                )
                rates.append(len(texts) / secs)
                windows.append(len(texts) / (embedding_seconds(out) or secs))
                busy.append(gpu_busy(out, summary))
            rate = round(statistics.median(rates), 1)
            busy_median = None if None in busy else round(statistics.median(busy), 3)
            thread = ", --num-workers 0 (a reader thread)" if workers == 0 else ""
            results.append(
                {
                    "what": f"embed-etl, --batch-tokens {budget}{thread}",
                    "dtype": dtype,
                    "rows_per_s": rate,
                    "rows_per_s_window": round(statistics.median(windows), 1),
                    "x_st": round(rate / st_rate, 2),
                    "cos_min": cosines(vectors, reference)["min"],
                    "gpu_busy": busy_median,
                    "gpu_busy_runs": busy,
                }
            )
            say(
                f"embed-etl {dtype} budget {budget}{thread}: {rate} rows/s "
                f"({rate / st_rate:.2f}x ST), GPU busy {share(busy_median)}"
            )
            _save(args.out, report)
    report["tokenizer"] = gpu_models.tokenizer_rate(shards, args.repeats)
    say(f"encode_batch: {report['tokenizer']['rows_per_s']:,} rows/s")
    _save(args.out, report)
    report["models"] = []
    for encoder, rows in zip(gpu_models.ENCODERS, (args.bert_rows, args.decoder_rows), strict=True):
        model_table = corpus_rows(args.corpus, rows)
        model_shards = work / f"in-{encoder.key}"
        _write_shards(model_table, model_shards, args.shards)
        model_texts = model_table.column("text").to_pylist()
        report["models"] += gpu_models.measure(encoder, model_texts, model_shards, args, work)
        _save(args.out, report)
    report["cold_start"] = _cold_start(args, work)
    report["seconds"] = round(time.perf_counter() - started, 1)
    markdown = _save(args.out, report)
    print(markdown)
    say(f"written to {args.out / 'gpu.md'} in {report['seconds']} s")
    results_file = args.results or (None if args.smoke or args.quick else RESULTS)
    if results_file is not None:
        write_results(results_file, markdown)
        say(f"GPU section of {results_file} replaced")


def _save(out: Path, report: dict) -> str:
    """gpu.json and gpu.md as they stand after a step; the Markdown."""
    (out / "gpu.json").write_text(json.dumps(report, indent=1))
    markdown = to_markdown(report)
    (out / "gpu.md").write_text(markdown)
    return markdown


def _write_shards(table, shards: Path, parts: int) -> None:
    import pyarrow.parquet as pq

    shards.mkdir(parents=True, exist_ok=True)
    for i, rows in enumerate(_split(table.num_rows, parts)):
        pq.write_table(table.slice(*rows), shards / f"part-{i:05d}.parquet")


def _split(rows: int, parts: int) -> list[tuple[int, int]]:
    """(offset, length) of ``parts`` near-equal consecutive slices of ``rows``."""
    bounds = np.linspace(0, rows, parts + 1).astype(int)
    return [(int(a), int(b - a)) for a, b in itertools.pairwise(bounds)]


def _device_name(device: str) -> str:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return machine(1)["cpu"] + " (CPU, smoke mode)"


def _st(texts, args, dtype, batch_size):
    import torch
    from sentence_transformers import SentenceTransformer

    from etl.model.locate import default_model_path

    model = SentenceTransformer(str(default_model_path()), device=args.device)
    model.to(getattr(torch, dtype))
    model.encode(texts[: batch_size * 2], batch_size=batch_size)  # kernels chosen, caches warm
    sync(args.device)
    start = time.perf_counter()
    vectors = model.encode(texts, batch_size=batch_size, normalize_embeddings=True)
    sync(args.device)
    return len(texts) / (time.perf_counter() - start), np.asarray(vectors, dtype=np.float32)


def _st_best(texts, args, dtype):
    """sentence-transformers at the best batch size of the sweep, in this dtype."""
    best = (0, 0.0, None)
    for bs in args.st_batch_sizes:
        rate, vectors = _st(texts, args, dtype, bs)
        say(f"sentence-transformers {dtype} batch {bs}: {rate:.1f} rows/s")
        if rate > best[1]:
            best = (bs, round(rate, 1), vectors)
    return best


def _cold_start(args, work: Path) -> dict:
    from benchmarks import coldstart

    options = argparse.Namespace(cold_repeats=args.cold_repeats, device=args.device)
    return coldstart.measure(options, work)


def _cuda_tests(args) -> dict:
    """tests/test_cuda.py on this device: counts of passed, failed, skipped."""
    env = dict(os.environ, EMBED_ETL_TEST_DEVICE=args.device)
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_cuda.py"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    (args.out / "cuda-tests.txt").write_text(proc.stdout + proc.stderr)
    last = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr[-300:]
    counts = {k: 0 for k in ("passed", "failed", "skipped", "error")}
    for part in last.replace("=", "").split(","):
        words = part.split()
        if len(words) >= 2 and words[0].isdigit() and words[1].rstrip("s") in counts:
            counts[words[1].rstrip("s")] = int(words[0])
    counts["exit"] = proc.returncode
    say(f"CUDA tests on {args.device}: {last}")
    return counts


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu", description=__doc__)
    parser.add_argument(
        "--corpus", type=Path, default=Path(os.environ.get("EMBED_ETL_CORPUS", DEFAULT_CORPUS))
    )
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--rows", type=int, default=None, help="default 50,000; smoke 64")
    parser.add_argument("--shards", type=int, default=1, help="input files the rows are cut into")
    parser.add_argument("--budgets", default=None, help="token budgets; default 16384,65536")
    parser.add_argument("--st-batch-sizes", default=None, help="default 64,256; quick 256")
    parser.add_argument("--repeats", type=int, default=None, help="default 3; quick, smoke 1")
    parser.add_argument("--cold-repeats", type=int, default=None, help="default 3; quick 1")
    parser.add_argument(
        "--bert-rows", type=int, default=None, help="BERT-base-shaped; default 100,000; smoke 48"
    )
    parser.add_argument(
        "--decoder-rows", type=int, default=None, help="Qwen3-shaped; default 50,000; smoke 32"
    )
    parser.add_argument(
        "--reference-rows", type=int, default=None, help="their float32 references; default 4096"
    )
    parser.add_argument("--smoke", action="store_true", help="every step, small (for the CPU)")
    parser.add_argument("--quick", action="store_true", help="every step once (a few minutes)")
    parser.add_argument(
        "--publish",
        type=Path,
        default=None,
        help="put the table of an earlier run's gpu.json into --results (default "
        "benchmarks/RESULTS.md) and stop; needs no GPU",
    )
    parser.add_argument("--out", type=Path, default=REPO / "bench-results")
    parser.add_argument(
        "--results",
        type=Path,
        default=None,
        help="RESULTS.md to put the table in (default: "
        "benchmarks/RESULTS.md for a full run; none for a smoke run)",
    )
    args = parser.parse_args()
    if args.publish is not None:
        return args
    small = args.smoke
    args.rows = args.rows or (64 if small else 50_000)
    args.budgets = [
        int(x) for x in (args.budgets or ("512,2048" if small else "16384,65536")).split(",")
    ]
    args.st_batch_sizes = [
        int(x)
        for x in (
            args.st_batch_sizes or ("16" if small else "256" if args.quick else "64,256")
        ).split(",")
    ]
    args.repeats = args.repeats or (1 if small or args.quick else 3)
    args.cold_repeats = args.cold_repeats or (1 if small or args.quick else 3)
    args.bert_rows = args.bert_rows or (48 if small else 50_000 if args.quick else 100_000)
    args.decoder_rows = args.decoder_rows or (32 if small else 20_000 if args.quick else 50_000)
    args.reference_rows = args.reference_rows or 4096
    if not 1 <= args.shards <= args.rows:
        parser.error(f"--shards {args.shards}: expected 1 to --rows ({args.rows})")
    if not args.corpus.is_dir():
        parser.error(f"--corpus {args.corpus}: not a directory (set EMBED_ETL_CORPUS)")
    return args


if __name__ == "__main__":
    main()
