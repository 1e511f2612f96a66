"""Speed: this job against sentence-transformers and the one-text loop, on the same rows.

(a) this job end to end, Parquet in to Parquet out, exact (float32) and fast (--fast-dtype);
(b) sentence-transformers `encode`, at its default batch size and at its best one;
(c) the seed-style loop, `tokenizer.encode` then `model(input_ids)[0]`, one text at a time, on
    an evenly spaced subset, scaled.
Texts/s, tokens/s, useful model FLOP/s (the encoder's cost model in etl.model.facts) against a
float32 matmul peak measured in the same run, padding ratio and per-row cosines. Medians over
--repeats interleaved runs.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from benchmarks.common import corpus_rows, cosines, job_options, run_job, say


def measure(args: argparse.Namespace, report: dict, work: Path) -> None:
    """(a), (b) and (c) on the same rows, interleaved, --repeats times; figures into report."""
    from etl.model.locate import resolve_model
    from etl.stages.read.tokenizer import load_tokenizer

    model = resolve_model(None)
    tokenizer = load_tokenizer(model)
    table = corpus_rows(args.corpus, args.rows)
    texts = table.column("text").to_pylist()
    ids = tokenizer(texts, truncation=True, max_length=args.max_length)["input_ids"]
    lengths = np.array([len(x) for x in ids])
    per_text = useful_flops(model, lengths) / len(texts)
    report.update(
        rows=len(texts),
        max_length=args.max_length,
        real_tokens=int(lengths.sum()),
        useful_gflop=round(per_text * len(texts) / 1e9, 1),
        repeats=args.repeats,
    )
    say(
        f"{len(texts):,} rows, {lengths.sum():,} tokens (median {int(np.median(lengths))}), "
        f"{report['machine']['threads']} threads, {report['machine']['cpu']}"
    )
    report["matmul_peak_gflops"] = round(matmul_peak() / 1e9, 1)
    say(f"float32 matmul peak: {report['matmul_peak_gflops']} GFLOP/s")

    shard_dir = work / "in"
    shard_dir.mkdir()
    for i, start in enumerate(range(0, table.num_rows, 10_000)):
        pq.write_table(table.slice(start, 10_000), shard_dir / f"part-{i:05d}.parquet")

    results: dict[str, dict] = {}
    vectors: dict[str, np.ndarray] = {}
    st_best = None
    subset = np.linspace(0, len(texts) - 1, min(args.seed_rows, len(texts))).astype(int)
    subset_per_text = useful_flops(model, lengths[subset]) / len(subset)
    options = {"normalize": True, "max_length": args.max_length, "threads": args.threads}
    options.update(job_options(args.job_args))
    for repeat in range(args.repeats):
        for name, dtype in (("job_exact", "float32"), ("job_fast", args.fast_dtype)):
            out = work / f"{name}-{repeat}"
            secs, vec, summary = run_job(shard_dir, out, dtype=dtype, **options)
            say(f"job {dtype}: {secs:.1f} s, padding ratio {summary['padding_ratio']}")
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
        "job_exact_vs_st": cosines(vectors["job_exact"], vectors["st_best"]),
        "job_fast_vs_job_exact": cosines(vectors["job_fast"], vectors["job_exact"]),
    }
    report["peak_rss_mb_this_process"] = round(
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1
    )


def useful_flops(model, lengths: np.ndarray) -> float:
    """The encoder's FLOPs over real tokens only: each row costs T x flops_per_token(T)."""
    return float(sum(int(t) * model.flops_per_token(int(t)) for t in lengths))


def matmul_peak() -> float:
    """Best float32 matmul rate of this machine, FLOP/s."""
    import torch

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


def _st_model():
    from sentence_transformers import SentenceTransformer

    from etl.model.locate import default_model_path

    return SentenceTransformer(str(default_model_path()), device="cpu")


def _st_sweep(texts: list[str], args: argparse.Namespace) -> tuple[int, dict]:
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
        say(f"sentence-transformers sweep: batch {bs}: {rates[bs]} texts/s")
    return max(rates, key=rates.get), rates


def _run_st(texts: list[str], batch_size: int) -> tuple[float, np.ndarray]:
    model = _st_model()
    start = time.perf_counter()
    vec = model.encode(texts, batch_size=batch_size, normalize_embeddings=True)
    secs = time.perf_counter() - start
    say(f"sentence-transformers batch {batch_size}: {secs:.1f} s")
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
    say(f"seed loop: {len(texts)} texts in {secs:.1f} s")
    return secs


def _add(
    results: dict, name: str, secs: float, rows: int, tokens: int, flops_per_text: float, **extra
) -> None:
    entry = results.setdefault(name, {"rates": [], "token_rates": []})
    entry["flops_per_text"] = flops_per_text
    entry["rates"].append(rows / secs)
    entry["token_rates"].append(float(tokens) / secs)
    entry.update(extra)


def show(report: dict) -> None:
    rows = report["results"]
    machine = report["machine"]
    print(
        f"\n{report['rows']:,} rows of the shared corpus, max_length {report['max_length']}, "
        f"{report['real_tokens']:,} real tokens; {machine['cpu']} "
        f"({' '.join(machine.get('cpu_flags', [])) or 'no AVX2'}), {machine['threads']} threads; "
        f"float32 matmul peak {report['matmul_peak_gflops']} GFLOP/s; medians of "
        f"{report['repeats']} run(s)\n"
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
