"""make bench: this job against what users would write instead, on the same rows and machine.

Runs in one process, on the same rows of the shared corpus (default 20,000, max_length 256,
the default model, mean pooling, normalized):
  (a)  this job end to end, Parquet in to Parquet out, exact (float32) and fast (--fast-dtype);
  (b)  sentence-transformers `encode`, at its default batch size and at its best one;
  (c)  the seed-style loop, `tokenizer.encode` then `model(input_ids)[0]`, one text at a time,
       on an evenly spaced subset, scaled.
Prints texts/s, tokens/s, ratios, useful model FLOP/s against a float32 matmul peak measured in
the same run, padding ratio, per-row cosines and peak RSS; writes the same figures as JSON.
With --memory, also embeds 10k rows and the whole corpus in child processes and compares their
peak RSS (flat memory: the whole corpus should stay within 1.25x of 10k rows). With --sizes,
writes one whole shard with each --output-dtype and compares the file sizes.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CORPUS = REPO.parent / "shared" / "corpus" / "pydocs"


def main() -> None:
    args = _parse()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from etl.encoder import default_threads

    threads = args.threads or default_threads()
    torch.set_num_threads(threads)
    report: dict = {"date": dt.date.today().isoformat(), "machine": _machine(threads)}
    work = Path(tempfile.mkdtemp(prefix="embed-etl-bench-"))
    if not args.no_speed:
        _speed(args, report, work, torch)
    if args.memory:
        report["memory"] = _memory(args, work)
    if args.sizes:
        report["sizes"] = _sizes(args, work)
    _print(report)
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    for path in (args.out / f"bench-{stamp}.json", args.out / "latest.json"):
        path.write_text(json.dumps(report, indent=1))
    _say(f"figures written to {args.out / 'latest.json'}")


def _speed(args, report: dict, work: Path, torch) -> None:
    """(a), (b) and (c) on the same rows, interleaved, --repeats times."""
    from etl.encoder import load_tokenizer
    from etl.modelinfo import resolve_model

    model = resolve_model(None)
    tokenizer = load_tokenizer(model)
    table = _rows(args.corpus, args.rows)
    texts = table.column("text").to_pylist()
    lengths = np.array([len(x) for x in _token_ids(tokenizer, texts, args.max_length)])
    config = json.loads(Path(model.path, "config.json").read_text())
    useful_flops = _useful_flops(lengths, config)
    per_text = useful_flops / len(texts)
    report.update(
        rows=len(texts),
        max_length=args.max_length,
        real_tokens=int(lengths.sum()),
        useful_gflop=round(useful_flops / 1e9, 1),
        repeats=args.repeats,
    )
    _say(
        f"{len(texts):,} rows, {lengths.sum():,} tokens (median {int(np.median(lengths))}), "
        f"{report['machine']['threads']} threads, {report['machine']['cpu']}"
    )
    report["matmul_peak_gflops"] = round(_matmul_peak(torch) / 1e9, 1)
    _say(f"float32 matmul peak: {report['matmul_peak_gflops']} GFLOP/s")

    shard_dir = work / "in"
    shard_dir.mkdir()
    for i, start in enumerate(range(0, table.num_rows, 10_000)):
        pq.write_table(table.slice(start, 10_000), shard_dir / f"part-{i:05d}.parquet")

    results: dict[str, dict] = {}
    vectors: dict[str, np.ndarray] = {}
    st_best = None
    subset = np.linspace(0, len(texts) - 1, min(args.seed_rows, len(texts))).astype(int)
    subset_per_text = _useful_flops(lengths[subset], config) / len(subset)
    for repeat in range(args.repeats):
        for name, dtype in (("job_exact", "float32"), ("job_fast", args.fast_dtype)):
            secs, vec, summary = _run_job(shard_dir, work / f"{name}-{repeat}", dtype, args)
            padding = summary["padding_ratio"]
            _add(results, name, secs, len(texts), lengths.sum(), per_text, padding=padding)
            results[name]["dtype"] = dtype
            vectors[name] = vec
        if st_best is None:
            st_best = _st_sweep(texts, args)
            report["st_sweep_texts_per_s"] = st_best[1]
        for name, bs in (("st_default", 32), ("st_best", st_best[0])):
            secs, vec = _run_st(texts, bs)
            _add(results, name, secs, len(texts), lengths.sum(), per_text, batch_size=bs)
            vectors[name] = vec
        secs = _run_seed_loop(model.path, [texts[i] for i in subset], args.max_length)
        tokens = lengths[subset].sum()
        _add(results, "seed_loop", secs, len(subset), tokens, subset_per_text, subset=len(subset))

    peak = report["matmul_peak_gflops"] * 1e9
    for r in results.values():
        r["texts_per_s"] = round(statistics.median(r.pop("rates")), 1)
        r["tokens_per_s"] = round(statistics.median(r.pop("token_rates")), 1)
        flops_per_s = r.pop("flops_per_text") * r["texts_per_s"]
        r["useful_gflops"] = round(flops_per_s / 1e9, 1)
        r["fraction_of_peak"] = round(flops_per_s / peak, 3)
    for name in results:
        for other in ("st_default", "st_best", "seed_loop"):
            if name.startswith("job"):
                ratio = results[name]["texts_per_s"] / results[other]["texts_per_s"]
                results[name][f"x_{other}"] = round(ratio, 2)
    report["results"] = results
    report["cosine"] = {
        "job_exact_vs_st": _cosines(vectors["job_exact"], vectors["st_best"]),
        "job_fast_vs_job_exact": _cosines(vectors["job_fast"], vectors["job_exact"]),
    }
    report["peak_rss_mb_this_process"] = round(
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1
    )


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--corpus", type=Path, default=Path(os.environ.get("EMBED_ETL_CORPUS", DEFAULT_CORPUS))
    )
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=1, help="medians over this many runs")
    parser.add_argument("--seed-rows", type=int, default=600, help="subset for the seed loop")
    parser.add_argument("--sweep-rows", type=int, default=2000, help="subset for ST batch sweep")
    parser.add_argument("--st-batch-sizes", default="2,4,8,16,32,64,128")
    parser.add_argument("--fast-dtype", default="bfloat16", help="dtype of the fast mode")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--memory", action="store_true", help="also the flat-memory runs (slow)")
    parser.add_argument("--memory-small", type=int, default=10_000)
    parser.add_argument(
        "--memory-dtype", default="float32", help="compute dtype of the memory runs"
    )
    parser.add_argument("--no-speed", action="store_true", help="skip the speed runs")
    parser.add_argument(
        "--sizes", action="store_true", help="also the output size of one shard per --output-dtype"
    )
    parser.add_argument("--job-args", default="", help="extra options for the job runs")
    parser.add_argument("--out", type=Path, default=REPO / "bench-results")
    args = parser.parse_args()
    if not args.corpus.is_dir():
        parser.error(f"--corpus {args.corpus}: not a directory (set EMBED_ETL_CORPUS)")
    return args


def _rows(corpus: Path, n: int) -> pa.Table:
    """The first n rows of the corpus, shard by shard in name order."""
    parts, total = [], 0
    for path in sorted(corpus.glob("*.parquet")):
        part = pq.read_table(path, columns=["id", "text"])
        parts.append(part.slice(0, n - total))
        total += parts[-1].num_rows
        if total >= n:
            break
    return pa.concat_tables(parts)


def _token_ids(tokenizer, texts, max_length):
    return tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]


def _useful_flops(lengths: np.ndarray, config: dict) -> float:
    """2 x multiply-adds of the encoder over real tokens only: projections, FFN, attention."""
    h, inner, layers = (
        config["hidden_size"],
        config["intermediate_size"],
        config["num_hidden_layers"],
    )
    per_token = 4 * h * h + 2 * h * inner  # Q, K, V, output projections; FFN up and down
    macs = layers * (lengths.sum() * per_token + 2 * h * (lengths.astype(np.float64) ** 2).sum())
    return 2.0 * float(macs)


def _matmul_peak(torch) -> float:
    best = 0.0
    for n in (1024, 2048):
        a, b = torch.randn(n, n), torch.randn(n, n)
        torch.mm(a, b)
        for _ in range(5):
            start = time.perf_counter()
            for _ in range(4):
                torch.mm(a, b)
            best = max(best, 4 * 2 * n**3 / (time.perf_counter() - start))
    return best


def _run_job(inputs: Path, out: Path, dtype: str, args) -> tuple[float, np.ndarray, dict]:
    from etl.pipeline import run_job

    from etl.config import JobConfig

    extra = _job_kwargs(args.job_args)
    cfg = JobConfig(
        inputs=(str(inputs),),
        output_dir=str(out),
        normalize=True,
        max_length=args.max_length,
        dtype=dtype,
        threads=args.threads,
        progress=False,
        **extra,
    )
    start = time.perf_counter()
    summary = run_job(cfg).to_dict()
    secs = time.perf_counter() - start
    assert summary["status"] == "ok", summary
    files = sorted(out.glob("part-*.parquet"))
    vec = np.concatenate(
        [np.array(pq.read_table(f).column("emb_mean").to_pylist(), np.float32) for f in files]
    )
    _say(f"job {dtype}: {secs:.1f} s, padding ratio {summary['padding_ratio']}")
    return secs, vec, summary


def _job_kwargs(text: str) -> dict:
    """--job-args "batch_tokens=2048 num_workers=0" -> JobConfig keyword arguments."""
    kwargs = {}
    for item in text.split():
        key, _, value = item.partition("=")
        kwargs[key] = int(value) if value.lstrip("-").isdigit() else value
    return kwargs


def _st_model():
    from etl.modelinfo import resolve_model
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(resolve_model(None).path, device="cpu")


def _st_sweep(texts: list[str], args) -> tuple[int, dict]:
    """Best sentence-transformers batch size, measured on an evenly spaced subset."""
    model = _st_model()
    subset = [
        texts[i]
        for i in np.linspace(0, len(texts) - 1, min(args.sweep_rows, len(texts))).astype(int)
    ]
    rates = {}
    for bs in (int(x) for x in args.st_batch_sizes.split(",")):
        start = time.perf_counter()
        model.encode(subset, batch_size=bs, normalize_embeddings=True)
        rates[bs] = round(len(subset) / (time.perf_counter() - start), 1)
        _say(f"sentence-transformers sweep: batch {bs}: {rates[bs]} texts/s")
    return max(rates, key=rates.get), rates


def _run_st(texts: list[str], batch_size: int) -> tuple[float, np.ndarray]:
    model = _st_model()
    start = time.perf_counter()
    vec = model.encode(texts, batch_size=batch_size, normalize_embeddings=True)
    secs = time.perf_counter() - start
    _say(f"sentence-transformers batch {batch_size}: {secs:.1f} s")
    return secs, vec


def _run_seed_loop(model_path: str, texts: list[str], max_length: int) -> float:
    """The loop from the transformers docs: one text at a time, no batching, no padding."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModel.from_pretrained(model_path).eval()
    start = time.perf_counter()
    with torch.inference_mode():
        for text in texts:
            ids = torch.tensor([tokenizer.encode(text, truncation=True, max_length=max_length)])
            hidden = model(ids)[0]  # (1, T, H)
            torch.nn.functional.normalize(hidden.mean(dim=1), dim=-1)
    secs = time.perf_counter() - start
    _say(f"seed loop: {len(texts)} texts in {secs:.1f} s")
    return secs


def _add(
    results: dict, name: str, secs: float, rows: int, tokens: int, flops_per_text: float, **extra
) -> None:
    entry = results.setdefault(name, {"rates": [], "token_rates": []})
    entry["flops_per_text"] = flops_per_text
    entry["rates"].append(rows / secs)
    entry["token_rates"].append(float(tokens) / secs)
    entry.update(extra)


def _cosines(a: np.ndarray, b: np.ndarray) -> dict:
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return {"min": round(float(cos.min()), 6), "mean": round(float(cos.mean()), 6)}


def _memory(args, work: Path) -> dict:
    """Peak RSS of the whole job (as users run it) on the first 10k rows and on everything.

    Read from /proc (VmHWM of the job process, RSS of its process tree sampled every 0.1 s):
    a child's ru_maxrss would include this process's own peak, inherited at fork.
    """
    import psutil

    small = work / "mem-small"
    small.mkdir()
    pq.write_table(_rows(args.corpus, args.memory_small), small / "part-00000.parquet")
    result = {}
    for name, inputs in (("rows_small", small), ("rows_all", args.corpus)):
        out = work / f"mem-out-{name}"
        cmd = [
            sys.executable,
            "-m",
            "jobs.cli",
            "run",
            str(inputs),
            "-o",
            str(out),
            "--normalize",
            "--max-length",
            str(args.max_length),
            "--dtype",
            args.memory_dtype,
            "--no-progress",
        ]
        with tempfile.TemporaryFile() as stdout:
            proc = subprocess.Popen(cmd, cwd=REPO, stdout=stdout, stderr=subprocess.DEVNULL)
            main_peak, tree_peak = 0, 0
            job = psutil.Process(proc.pid)
            while proc.poll() is None:
                try:
                    main_peak = max(main_peak, _vm_hwm(proc.pid))
                    tree = [job, *job.children(recursive=True)]
                    tree_peak = max(tree_peak, sum(p.memory_info().rss for p in tree))
                except (psutil.Error, OSError):
                    pass
                time.sleep(0.1)
            stdout.seek(0)
            summary = json.loads(stdout.read())
        result[name] = {
            "rows": summary["rows"],
            "seconds": summary["seconds"],
            "peak_rss_mb": round(main_peak / 2**20, 1),
            "peak_tree_rss_mb": round(tree_peak / 2**20, 1),
        }
        _say(
            f"memory {name}: {summary['rows']:,} rows, peak RSS {result[name]['peak_rss_mb']} MB "
            f"(with its workers {result[name]['peak_tree_rss_mb']} MB)"
        )
    result["dtype"] = args.memory_dtype
    for key in ("peak_rss_mb", "peak_tree_rss_mb"):
        ratio = result["rows_all"][key] / result["rows_small"][key]
        result[key.replace("peak", "ratio").replace("_mb", "")] = round(ratio, 3)
    return result


def _sizes(args, work: Path) -> dict:
    """One whole shard of the corpus written with each --output-dtype: file and vector bytes."""
    from etl.pipeline import run_job

    from etl.config import OUTPUT_DTYPES, JobConfig

    shard = sorted(args.corpus.glob("*.parquet"))[0]
    result = {"shard": shard.name, "rows": pq.read_metadata(shard).num_rows, "dtypes": {}}
    for dtype in OUTPUT_DTYPES:
        out = work / f"sizes-{dtype}"
        cfg = JobConfig(
            inputs=(str(shard),),
            output_dir=str(out),
            normalize=True,
            max_length=args.max_length,
            output_dtype=dtype,
            threads=args.threads,
            progress=False,
        )
        assert run_job(cfg).ok
        path = out / shard.name
        meta = pq.read_metadata(path)
        names = meta.schema.to_arrow_schema().names
        column = names.index("emb_mean")
        vector_bytes = sum(
            meta.row_group(g).column(i).total_compressed_size
            for g in range(meta.num_row_groups)
            for i in range(meta.num_columns)
            if meta.schema.column(i).path.split(".")[0] == names[column]
        )
        result["dtypes"][dtype] = {
            "file_bytes": path.stat().st_size,
            "vector_bytes": vector_bytes,
            "vector_bytes_per_row": round(vector_bytes / meta.num_rows, 1),
        }
        _say(f"sizes {dtype}: file {path.stat().st_size:,} bytes, vectors {vector_bytes:,} bytes")
    return result


def _vm_hwm(pid: int) -> int:
    """Peak resident set size of a live process, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def _machine(threads: int) -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch

    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "threads": threads,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def _print(report: dict) -> None:
    if "results" in report:
        _print_speed(report)
    if "sizes" in report:
        _print_sizes(report["sizes"])
    if "memory" in report:
        m = report["memory"]
        small, everything = m["rows_small"], m["rows_all"]
        print(
            f"peak RSS of the job ({m['dtype']}): "
            f"{small['rows']:,} rows {small['peak_rss_mb']} MB, "
            f"{everything['rows']:,} rows {everything['peak_rss_mb']} MB: ratio {m['ratio_rss']}; "
            f"with its tokenizer worker {small['peak_tree_rss_mb']} MB and "
            f"{everything['peak_tree_rss_mb']} MB: ratio {m['ratio_tree_rss']}"
        )


def _print_sizes(sizes: dict) -> None:
    print(f"\none shard, {sizes['shard']} ({sizes['rows']:,} rows), normalized emb_mean:")
    header = ("--output-dtype", "file MB", "vectors MB", "bytes/row", "vs float32")
    print(f"{header[0]:<16}{header[1]:>9}{header[2]:>12}{header[3]:>11}{header[4]:>12}")
    base = sizes["dtypes"]["float32"]["file_bytes"]
    for dtype, r in sizes["dtypes"].items():
        print(
            f"{dtype:<16}{r['file_bytes'] / 1e6:>9.2f}{r['vector_bytes'] / 1e6:>12.2f}"
            f"{r['vector_bytes_per_row']:>11}{base / r['file_bytes']:>11.1f}x"
        )


def _print_speed(report: dict) -> None:
    rows = report["results"]
    print(
        f"\n{report['rows']:,} rows of the shared corpus, max_length {report['max_length']}, "
        f"{report['real_tokens']:,} real tokens; {report['machine']['cpu']}, "
        f"{report['machine']['threads']} threads; float32 matmul peak "
        f"{report['matmul_peak_gflops']} GFLOP/s; medians of {report['repeats']} run(s)\n"
    )
    print(f"{'what':<34}{'texts/s':>9}{'tokens/s':>10}{'GFLOP/s':>9}{'of peak':>9}{'padding':>9}")
    labels = {
        "job_exact": "(a) embed-etl, float32 (exact)",
        "job_fast": f"(a) embed-etl, fast ({rows['job_fast'].get('dtype', 'bfloat16')})",
        "st_default": "(b) sentence-transformers bs32",
        "st_best": f"(b) sentence-transformers bs{rows['st_best']['batch_size']}",
        "seed_loop": f"(c) one text at a time ({rows['seed_loop']['subset']} rows)",
    }
    for name, label in labels.items():
        r = rows[name]
        padding = r.get("padding")
        print(
            f"{label:<34}{r['texts_per_s']:>9.1f}{r['tokens_per_s']:>10.0f}{r['useful_gflops']:>9.1f}"
            f"{r['fraction_of_peak']:>9.0%}{padding if padding else '':>9}"
        )
    for name in ("job_exact", "job_fast"):
        r = rows[name]
        print(
            f"{labels[name]}: {r['x_st_best']}x sentence-transformers best, "
            f"{r['x_st_default']}x its default, {r['x_seed_loop']}x the one-text loop"
        )
    cos = report["cosine"]
    print(
        f"cosine exact vs sentence-transformers: min {cos['job_exact_vs_st']['min']}, "
        f"mean {cos['job_exact_vs_st']['mean']}"
    )
    print(
        f"cosine fast vs exact: min {cos['job_fast_vs_job_exact']['min']}, "
        f"mean {cos['job_fast_vs_job_exact']['mean']}"
    )
    print(f"peak RSS of this process: {report['peak_rss_mb_this_process']} MB")


def _say(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
