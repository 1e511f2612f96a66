"""embed-etl verify on the whole shared corpus: its time and peak memory, and the peak memory on
four times the rows (the same shards listed four times over), which should barely move: verify
reads one shard at a time with polars' streaming engine."""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.common import REPO, say


def measure(args: argparse.Namespace, work: Path) -> dict:
    output = Path(args.verify_output) if args.verify_output else work / "verify-out"
    if not (output / "_embed_etl" / "job.json").exists():
        # The real model's width (384) but one layer of six: the vectors are what verify
        # reads, and this embeds the corpus five times faster than the whole model.
        say(f"verify: embedding {args.corpus} into {output} (first layer, 384 dims)")
        cmd = ["run", str(args.corpus), "-o", str(output), "--pooling", "mean", "--layer", "1"]
        subprocess.run(
            [sys.executable, "-m", "jobs.cli", *cmd, "--normalize", "--no-progress"],
            cwd=REPO,
            check=True,
            stdout=subprocess.DEVNULL,
        )
    single = _run(output, [str(args.corpus)])
    four = _four_times(args.corpus, output, work / "verify-x4")
    quadruple = _run(four[1], [str(four[0])])
    return {
        "rows": single["rows"],
        "seconds": single["seconds"],
        "peak_rss_mb": single["peak_rss_mb"],
        "rows_x4": quadruple["rows"],
        "seconds_x4": quadruple["seconds"],
        "peak_rss_mb_x4": quadruple["peak_rss_mb"],
        "ratio_peak_rss": round(quadruple["peak_rss_mb"] / single["peak_rss_mb"], 3),
    }


def _run(output: Path, inputs: list[str]) -> dict:
    """`embed-etl verify --json` as a process: its report, wall time and peak RSS (VmHWM)."""
    cmd = [sys.executable, "-m", "jobs.cli", "verify", "-o", str(output), "--json", *inputs]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, text=True)
    peak = 0
    while proc.poll() is None:
        try:
            status = Path(f"/proc/{proc.pid}/status").read_text()
            peak = max(peak, int(status.split("VmHWM:")[1].split()[0]))
        except (OSError, IndexError, ValueError):
            pass
        time.sleep(0.05)
    report = json.loads(proc.stdout.read())
    seconds = time.perf_counter() - start
    if report["status"] != "ok":
        raise RuntimeError(f"verify found problems: {report['problems'][:3]}")
    say(f"verify: {report['rows']:,} rows in {seconds:.1f} s, peak RSS {peak / 1024:.0f} MB")
    return {"rows": report["rows"], "seconds": round(seconds, 1), "peak_rss_mb": round(peak / 1024)}


def _four_times(corpus: Path, output: Path, root: Path) -> tuple[Path, Path]:
    """The corpus and its output, each shard under four names (symlinks), with the job record
    and manifest records that name them."""
    shutil.rmtree(root, ignore_errors=True)
    inputs, out = root / "in", root / "out"
    state = out / "_embed_etl" / "shards"
    state.mkdir(parents=True)
    job = json.loads((output / "_embed_etl" / "job.json").read_text())
    job["inputs"] = [str(inputs)]
    (out / "_embed_etl" / "job.json").write_text(json.dumps(job))
    for copy in "abcd":
        (inputs / copy).mkdir(parents=True)
        (out / copy).mkdir()
        for shard in sorted(corpus.glob("*.parquet")):
            (inputs / copy / shard.name).symlink_to(shard.resolve())
            (out / copy / shard.name).symlink_to((output / shard.name).resolve())
            record = json.loads(
                (output / "_embed_etl" / "shards" / f"{shard.name}.json").read_text()
            )
            record["input"] = f"{copy}/{shard.name}"
            (state / f"{copy}%2F{shard.name}.json").write_text(json.dumps(record))
    return inputs, out


def show(r: dict) -> None:
    print(
        f"\nembed-etl verify: {r['rows']:,} rows in {r['seconds']} s, peak RSS {r['peak_rss_mb']} "
        f"MB; {r['rows_x4']:,} rows (each shard four times) in {r['seconds_x4']} s, peak RSS "
        f"{r['peak_rss_mb_x4']} MB: ratio {r['ratio_peak_rss']}"
    )
