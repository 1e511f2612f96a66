"""Flat memory: peak RSS of the whole job (as users run it) on 10k rows and on everything.

Read from /proc (VmHWM of the job process, RSS of its process tree sampled every 0.1 s): a
child's ru_maxrss would include this process's own peak, inherited at fork.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

from benchmarks.common import REPO, corpus_rows, say


def measure(args: argparse.Namespace, work: Path) -> dict:
    import psutil

    small = work / "mem-small"
    small.mkdir()
    pq.write_table(corpus_rows(args.corpus, args.memory_small), small / "part-00000.parquet")
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
        main_peak, tree_peak, summary = _watch(cmd, psutil)
        result[name] = {
            "rows": summary["rows"],
            "seconds": summary["seconds"],
            "peak_rss_mb": round(main_peak / 2**20, 1),
            "peak_tree_rss_mb": round(tree_peak / 2**20, 1),
        }
        say(
            f"memory {name}: {summary['rows']:,} rows, peak RSS {result[name]['peak_rss_mb']} MB "
            f"(with its workers {result[name]['peak_tree_rss_mb']} MB)"
        )
    result["dtype"] = args.memory_dtype
    for key in ("peak_rss_mb", "peak_tree_rss_mb"):
        ratio = result["rows_all"][key] / result["rows_small"][key]
        result[key.replace("peak", "ratio").replace("_mb", "")] = round(ratio, 3)
    return result


def peak_rss(args: list[str]) -> tuple[int, dict]:
    """`embed-etl ARGS` in a subprocess: its peak RSS (bytes) and its JSON summary."""
    import psutil

    peak, _, summary = _watch([sys.executable, "-m", "jobs.cli", *args], psutil)
    return peak, summary


def _watch(cmd: list[str], psutil) -> tuple[int, int, dict]:
    """Run the job, sampling its memory every 0.1 s: (its peak, its tree's peak, summary)."""
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
        return main_peak, tree_peak, json.loads(stdout.read())


def _vm_hwm(pid: int) -> int:
    """Peak resident set size of a live process, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def show(m: dict) -> None:
    small, everything = m["rows_small"], m["rows_all"]
    print(
        f"peak RSS of the job ({m['dtype']}): "
        f"{small['rows']:,} rows {small['peak_rss_mb']} MB, "
        f"{everything['rows']:,} rows {everything['peak_rss_mb']} MB: ratio {m['ratio_rss']}; "
        f"with its tokenizer worker {small['peak_tree_rss_mb']} MB and "
        f"{everything['peak_tree_rss_mb']} MB: ratio {m['ratio_tree_rss']}"
    )
