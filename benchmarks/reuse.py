"""Reuse: a corpus that repeats itself, last night's re-export of it, and one that never repeats.

Built from the shared corpus, which has no repeated text:
  day 1     --reuse-distinct texts, each repeated a Pareto(2)-distributed number of times (half
            the rows repeat an earlier text, a few texts hundreds of times), shuffled, 8 files
  day 2     day 1 again: 5% of the rows edited, 1% deleted, 1% new, shuffled into 5 files
            with other names, embedded with --reuse day 1's output
  no repeat --reuse-overhead-rows rows as they are, with and without the store, interleaved
            --repeats times (medians): the price of hashing and lookups when nothing repeats
Every run is the whole job in this process, Parquet in, Parquet out, the model loaded each time.
Day 2's vectors are compared with its --no-reuse run, row by row, in order.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from benchmarks.common import corpus_rows, job_options, say


def measure(args: argparse.Namespace, work: Path) -> dict:
    rng = random.Random(20261202)
    pool = corpus_rows(args.corpus, args.reuse_distinct * 2).column("text").to_pylist()
    distinct, spare = pool[: args.reuse_distinct], pool[args.reuse_distinct :]
    counts = np.minimum(np.floor(np.random.default_rng(1).pareto(2.0, len(distinct)) + 1), 1000)
    day1 = [t for t, c in zip(distinct, counts.astype(int), strict=True) for _ in range(c)]
    rng.shuffle(day1)
    day2, new = _re_export(day1, spare, rng)
    _write(work / "day1", day1, 8, "part")
    _write(work / "day2", day2, 5, "export")
    options = {"normalize": True, "max_length": args.max_length, "threads": args.threads}
    options.update(job_options(args.job_args))
    result = {"day1_rows": len(day1), "day1_distinct": len(set(day1))}
    result["day1_repeat_share"] = round(1 - result["day1_distinct"] / len(day1), 3)
    result["day2_rows"], result["day2_new_texts"] = len(day2), len(new)
    say(
        f"reuse: day 1 {len(day1):,} rows, {result['day1_distinct']:,} distinct; day 2 "
        f"{len(day2):,} rows, {len(new):,} texts not in day 1"
    )
    result["day1"] = _pair(work / "day1", work, "day1", options)
    reuse = {"reuse": (str(work / "out-day1-reuse"),)}
    result["day2"] = _pair(work / "day2", work, "day2", options, reuse)
    a, b = (_read(work / f"out-day2-{m}") for m in ("reuse", "plain"))
    result["day2_same_ids_in_order"] = bool(a[0] == b[0])
    result["day2_max_abs_diff"] = float(np.abs(a[1] - b[1]).max())
    result["day2_after"] = _after_maintenance(work, options, reuse, b)
    result["overhead"] = _overhead(args, work, options)
    return result


def _after_maintenance(work: Path, options: dict, reuse: dict, plain: tuple) -> dict:
    """Day 2 again after `store compact` of day 1's store, then after `store gc` keeping day
    1's run: still only what is new embedded, the same vectors."""
    from etl.reuse.collect import collect
    from etl.reuse.compact import compact
    from etl.reuse.plan import open_store

    found = {}
    for step in ("compact", "gc"):
        store = open_store("--reuse", reuse["reuse"][0])
        started = time.perf_counter()
        report = compact(store, force=True) if step == "compact" else collect(store, keep_runs=1)
        took = time.perf_counter() - started
        summary = _run(work / "day2", work / f"out-day2-after-{step}", **options, **reuse)
        ids, vectors = _read(work / f"out-day2-after-{step}")
        found[step] = {
            "seconds": round(took, 2),
            "segments_after": report.segments_after,
            "texts_embedded": summary["texts_embedded"],
            "same_ids_in_order": ids == plain[0],
            "max_abs_diff": float(np.abs(vectors - plain[1]).max()),
        }
        say(f"reuse day 2 after store {step}: {found[step]}")
    return found


def _re_export(day1: list[str], spare: list[str], rng: random.Random) -> tuple[list[str], set]:
    rows = list(day1)
    n = len(rows)
    for i in rng.sample(range(n), n // 20):  # edited: a sentence added at the end
        rows[i] = f"{rows[i]} See also the notes of release {i % 97}."
    for i in sorted(rng.sample(range(n), n // 100), reverse=True):
        del rows[i]
    rows += spare[: n // 100]
    rng.shuffle(rows)
    return rows, set(rows) - set(day1)


def _write(folder: Path, texts: list[str], files: int, stem: str) -> None:
    folder.mkdir(parents=True)
    size = -(-len(texts) // files)
    for i in range(files):
        part = texts[i * size : (i + 1) * size]
        ids = pa.array(range(i * size, i * size + len(part)), pa.int64())
        pq.write_table(pa.table({"id": ids, "text": part}), folder / f"{stem}-{i:05d}.parquet")


def _run(inputs: Path, out: Path, **options) -> dict:
    from etl import JobConfig, run_job

    cfg = JobConfig(inputs=(str(inputs),), output_dir=str(out), progress=False, **options)
    start = time.perf_counter()
    summary = run_job(cfg).to_dict()
    summary["wall"] = time.perf_counter() - start
    if summary["status"] != "ok":
        raise RuntimeError(f"the job failed: {summary}")
    return summary


def _pair(inputs: Path, work: Path, name: str, options: dict, reuse: dict | None = None) -> dict:
    """The same inputs with the store (and --reuse) and with --no-reuse."""
    found = {}
    for mode, extra in (("reuse", reuse or {}), ("plain", {"no_reuse": True})):
        summary = _run(inputs, work / f"out-{name}-{mode}", **options, **extra)
        found[mode] = {
            "seconds": round(summary["wall"], 1),
            "rows_per_s": round(summary["rows"] / summary["wall"], 1),
            "texts_embedded": summary["texts_embedded"],
            "rows_reused_from": summary["rows_reused_from"],
        }
        say(f"reuse {name} {mode}: {found[mode]}")
    found["speedup"] = round(found["plain"]["seconds"] / found["reuse"]["seconds"], 2)
    return found


def _read(out: Path) -> tuple[list, np.ndarray]:
    tables = [pq.read_table(p) for p in sorted(out.glob("*.parquet"))]
    ids = [i for t in tables for i in t.column("id").to_pylist()]
    column = next(n for n in tables[0].column_names if n.startswith("emb_"))
    vectors = np.concatenate(
        [
            t.column(column).combine_chunks().flatten().to_numpy().reshape(t.num_rows, -1)
            for t in tables
        ]
    )
    return ids, vectors


def _overhead(args: argparse.Namespace, work: Path, options: dict) -> dict:
    """A corpus without repeats, with and without the store, in turn: medians of rows/s."""
    folder = work / "no-repeats"
    _write(
        folder,
        corpus_rows(args.corpus, args.reuse_overhead_rows).column("text").to_pylist(),
        2,
        "part",
    )
    rates: dict[str, list[float]] = {"reuse": [], "plain": []}
    for repeat in range(args.repeats):
        for mode, extra in (("reuse", {}), ("plain", {"no_reuse": True})):
            summary = _run(folder, work / f"out-norepeat-{mode}-{repeat}", **options, **extra)
            rates[mode].append(summary["rows"] / summary["wall"])
            say(f"reuse overhead {mode} #{repeat}: {rates[mode][-1]:.1f} rows/s")
    medians = {m: round(statistics.median(r), 1) for m, r in rates.items()}
    return {
        "rows": args.reuse_overhead_rows,
        "repeats": args.repeats,
        "rows_per_s": medians,
        "all_rows_per_s": {m: [round(x, 1) for x in r] for m, r in rates.items()},
        "ratio": round(medians["reuse"] / medians["plain"], 3),
    }


def show(r: dict) -> None:
    d1, d2, o = r["day1"], r["day2"], r["overhead"]
    print(
        f"reuse, day 1 ({r['day1_rows']:,} rows, {r['day1_distinct']:,} distinct, "
        f"{r['day1_repeat_share']:.0%} of rows repeat): {d1['reuse']['rows_per_s']} rows/s, "
        f"{d1['reuse']['texts_embedded']:,} texts embedded; --no-reuse "
        f"{d1['plain']['rows_per_s']} rows/s, {d1['plain']['texts_embedded']:,} texts: "
        f"{d1['speedup']}x"
    )
    print(
        f"reuse, day 2 ({r['day2_rows']:,} rows, {r['day2_new_texts']:,} new texts) with --reuse "
        f"day 1: {d2['reuse']['texts_embedded']:,} texts embedded in {d2['reuse']['seconds']} s; "
        f"--no-reuse {d2['plain']['seconds']} s: {d2['speedup']}x; same ids in order "
        f"{r['day2_same_ids_in_order']}, max |diff| {r['day2_max_abs_diff']:.1e}"
    )
    for step, after in r.get("day2_after", {}).items():
        print(
            f"reuse, day 2 after `store {step}` of day 1 ({after['seconds']} s, "
            f"{after['segments_after']} segments): {after['texts_embedded']:,} texts embedded; "
            f"same ids in order {after['same_ids_in_order']}, max |diff| "
            f"{after['max_abs_diff']:.1e}"
        )
    print(
        f"reuse, no repeats ({o['rows']:,} rows, medians of {o['repeats']}): "
        f"{o['rows_per_s']['reuse']} rows/s with the store, {o['rows_per_s']['plain']} without: "
        f"ratio {o['ratio']}"
    )


def measure_memory(args: argparse.Namespace, work: Path) -> dict:
    """Peak RSS of the job with its store on a corpus and on ten times as many distinct texts
    (the same rows ten times, each copy with its own prefix: ten times the shards, and a store
    ten times larger), the embedding layer only (--layer 0), so that 10x fits in minutes."""
    from benchmarks.memory import peak_rss

    base = corpus_rows(args.corpus, args.reuse_memory_rows).column("text").to_pylist()
    shard = 10_000
    result: dict = {"rows": len(base), "shard_rows": shard}
    for times in (1, 10):
        folder = work / f"reuse-mem-{times}x"
        texts = [f"[copy {k}] {t}" if k else t for k in range(times) for t in base]
        _write(folder, texts, -(-len(texts) // shard), "part")
        for mode, extra in (("reuse", []), ("plain", ["--no-reuse"])):
            cmd = ["run", str(folder), "-o", str(work / f"reuse-mem-out-{times}x-{mode}")]
            peak, summary = peak_rss([*cmd, "--layer", "0", "--no-progress", *extra])
            result[f"{mode}_{times}x"] = {
                "rows": summary["rows"],
                "texts_embedded": summary["texts_embedded"],
                "seconds": summary["seconds"],
                "peak_rss_mb": round(peak / 2**20, 1),
            }
            say(f"reuse memory {times}x {mode}: {result[f'{mode}_{times}x']}")
    for mode in ("reuse", "plain"):
        ratio = result[f"{mode}_10x"]["peak_rss_mb"] / result[f"{mode}_1x"]["peak_rss_mb"]
        result[f"{mode}_ratio"] = round(ratio, 3)
    return result


def show_memory(m: dict) -> None:
    r1, r10, p1, p10 = (m[k] for k in ("reuse_1x", "reuse_10x", "plain_1x", "plain_10x"))
    print(
        f"reuse memory (--layer 0, shards of {m['shard_rows']:,} rows): {r1['rows']:,} distinct "
        f"texts {r1['peak_rss_mb']} MB, {r10['rows']:,} {r10['peak_rss_mb']} MB: ratio "
        f"{m['reuse_ratio']}; --no-reuse {p1['peak_rss_mb']} and {p10['peak_rss_mb']} MB: ratio "
        f"{m['plain_ratio']}"
    )


def measure_small_shards(args: argparse.Namespace, work: Path) -> dict:
    """Many small shards with default options, the store on and off: N and 4N shards of
    --small-shard-rows rows, each run a fresh `embed-etl run` in turn, --repeats times; the
    marginal cost of a shard is (time(4N) - time(N)) / 3N, start-up cancelled out."""
    import subprocess
    import sys

    from benchmarks.common import REPO

    n, rows = args.small_shards, args.small_shard_rows
    texts = corpus_rows(args.corpus, 4 * n * rows).column("text").to_pylist()
    for count in (n, 4 * n):
        _write(work / f"small-{count}", texts[: count * rows], count, "part")
    seconds: dict[str, list[float]] = {}
    for repeat in range(args.repeats):
        for count in (n, 4 * n):
            for mode, extra in (("store", []), ("no_reuse", ["--no-reuse"])):
                out = work / f"small-out-{count}-{mode}-{repeat}"
                cmd = [sys.executable, "-m", "jobs.cli", "run", str(work / f"small-{count}")]
                cmd += ["-o", str(out), "--no-progress", *extra]
                started = time.perf_counter()
                done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
                took = time.perf_counter() - started
                if done.returncode != 0:
                    raise RuntimeError(f"small shards: {done.stderr[-2000:]}")
                seconds.setdefault(f"{mode}_{count}", []).append(took)
                say(f"small shards {mode} {count}: {took:.1f} s")
    medians = {key: statistics.median(values) for key, values in seconds.items()}
    marginal = {
        mode: (medians[f"{mode}_{4 * n}"] - medians[f"{mode}_{n}"]) / (3 * n) * 1000
        for mode in ("store", "no_reuse")
    }
    return {
        "shards": [n, 4 * n],
        "rows_per_shard": rows,
        "repeats": args.repeats,
        "seconds": {k: round(v, 2) for k, v in medians.items()},
        "all_seconds": {k: [round(x, 2) for x in v] for k, v in seconds.items()},
        "marginal_ms": {k: round(v, 1) for k, v in marginal.items()},
        "ratio": round(marginal["store"] / marginal["no_reuse"], 3),
    }


def show_small_shards(r: dict) -> None:
    n, big = r["shards"]
    m = r["marginal_ms"]
    print(
        f"small shards ({r['rows_per_shard']} rows each, medians of {r['repeats']}): a shard "
        f"between {n:,} and {big:,} shards costs {m['store']} ms with the store, "
        f"{m['no_reuse']} ms with --no-reuse: ratio {r['ratio']}"
    )
