"""Passages against one vector a row: `make bench ARGS="--no-speed --no-cold-start --chunks"`.

The same corpus rows (paragraphs of at least --chunks-min-chars characters), the default model
in float32 on this machine, no store: `--long-text chunk` (one vector a row, joined from windows
of --max-length tokens) against `--chunk-tokens` at the windows' width (a row a passage, naive
chunking), and again at a quarter of it, naive and late (each text once through the model,
its passages pooled from that pass; again at the model's own 256 tokens, where most of these
texts take one pass). Rows/s counts input rows, passages/s output rows;
medians of --chunks-repeats runs each, in turn, start-up included (one model load a run).
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq

from benchmarks.common import corpus_rows, run_job, say


def measure(args: argparse.Namespace, work: Path) -> dict:
    table = corpus_rows(args.corpus, 10**9)
    long = table.filter(
        pc.greater_equal(pc.utf8_length(table.column("text")), args.chunks_min_chars)
    )
    rows = long.slice(0, args.chunks_rows)
    src = work / "chunks" / "in"
    src.mkdir(parents=True, exist_ok=True)
    pq.write_table(rows, src / "part.parquet")
    width = args.chunks_max_length - 2
    modes = {
        f"--long-text chunk (windows of {args.chunks_max_length})": {"long_text": "chunk"},
        f"--chunk-tokens {width}": {"chunk_tokens": width},
        f"--chunk-tokens {width // 4}": {"chunk_tokens": width // 4},
        f"--chunk-tokens {width // 4} --chunking late": {
            "chunk_tokens": width // 4,
            "chunking": "late",
        },
        # The model's own limit: most of these texts in one pass, no overlapping windows.
        f"--chunk-tokens {width // 4} --chunking late --max-length 256": {
            "chunk_tokens": width // 4,
            "chunking": "late",
            "max_length": 256,
        },
    }
    seconds: dict[str, list[float]] = {name: [] for name in modes}
    outputs: dict[str, int] = {}
    for repeat in range(args.chunks_repeats):
        for number, (name, options) in enumerate(modes.items()):
            out = work / "chunks" / f"out-{number}-{repeat}"
            secs, _, summary = run_job(
                src,
                out,
                column="emb_model",
                no_reuse=True,
                num_workers=0,
                **{"max_length": args.chunks_max_length, **options},
            )
            seconds[name].append(secs)
            outputs[name] = summary["rows"]
            say(f"chunks {name}: {secs:.1f} s, {summary['rows']:,} output rows")
    report = {"rows": rows.num_rows, "min_chars": args.chunks_min_chars, "modes": {}}
    for name, runs in seconds.items():
        median = statistics.median(runs)
        report["modes"][name] = {
            "seconds": round(median, 2),
            "runs": [round(s, 2) for s in runs],
            "rows_per_s": round(rows.num_rows / median, 1),
            "passages": outputs[name] if "chunk-tokens" in name else None,
            "passages_per_s": round(outputs[name] / median, 1) if "chunk-tokens" in name else None,
        }
    return report


def show(report: dict) -> None:
    print(
        f"\npassages against one vector a row, {report['rows']:,} rows of >= "
        f"{report['min_chars']} characters, the default model, float32:"
    )
    for name, m in report["modes"].items():
        extra = (
            f", {m['passages']:,} passages, {m['passages_per_s']:,} passages/s"
            if m["passages"]
            else ""
        )
        print(f"  {name:55} {m['rows_per_s']:>8,} rows/s{extra} (median of {m['runs']})")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--chunks", action="store_true", help="also passages vs --long-text chunk")
    parser.add_argument("--chunks-rows", type=int, default=1000)
    parser.add_argument("--chunks-min-chars", type=int, default=500)
    parser.add_argument("--chunks-max-length", type=int, default=128)
    parser.add_argument("--chunks-repeats", type=int, default=3)
