"""The host side alone: what a GPU's host must do, against the tokenizer's own ceiling.

`make bench ARGS=--feed`. Each figure comes from fresh child processes (optionally pinned to
fewer cores with taskset) running the whole job on long real paragraphs of the corpus:

  standin   the encoder replaced by a stand-in that costs nothing and returns zero tensors of
            the right shapes (here only: never in the product); reading, tokenizing, sorting,
            batching, copying vectors out, encoding them to Arrow and writing remain
  layer0    the real job with --pooling mean --layer 0 (the embedding layer only)
  ceiling   the same tokenizer's encode_batch on the same texts and cores (ceiling_fast:
            encode_batch_fast, which skips the offsets: what the job calls where it can)

Rates are at steady state: (rows of the large run - rows of the small run) / (difference of
their wall times), best of --feed-repeats each, so that start-up (imports, model load) drops
out. Stage times are seconds per 10,000 rows of the large run, summed over the threads that
did them (read, tokenize and batch run beside the model; they overlap).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MIN_CHARS = 150  # "long real paragraphs": corpus rows of at least this many characters (72k)


def measure(args: argparse.Namespace, work: Path) -> dict:
    from benchmarks.common import corpus_rows, say

    small, large = args.feed_rows_small, args.feed_rows
    src = work / "feed"
    src.mkdir(parents=True, exist_ok=True)
    table = _long_rows(corpus_rows(args.corpus, 10**9), large)
    for n in (small, large):
        _write(table.slice(0, n), src / f"in-{n}")
    cores = os.cpu_count() or 1
    report: dict = {"rows_small": small, "rows_large": large, "min_chars": MIN_CHARS}
    runs = [("ceiling", {}), ("ceiling", {"fast": True})]
    runs += [("standin", {"batch_tokens": 2048}), ("layer0", {})]
    runs.append(("standin", {"batch_tokens": 32768}))
    for cpus in sorted({1, cores}):
        for kind, options in runs:
            if cpus == 1 and options.get("batch_tokens") == 32768:
                continue
            key = f"{kind}" + (f"@{options['batch_tokens']}" if "batch_tokens" in options else "")
            key += "_fast" if options.get("fast") else ""
            key += f"/{cpus}cpu"
            report[key] = _steady(kind, options, src, small, large, cpus, args)
            say(f"feed {key}: {report[key]['rows_per_s']:,.0f} rows/s")
    for cpus in sorted({1, cores}):
        ceiling = report[f"ceiling/{cpus}cpu"]["rows_per_s"]
        for key in list(report):
            if key.endswith(f"/{cpus}cpu") and not key.startswith("ceiling/"):
                report[key]["of_ceiling"] = round(report[key]["rows_per_s"] / ceiling, 3)
    if cores > 1:
        report["scaling"] = {
            kind: round(
                report[f"{kind}/{cores}cpu"]["rows_per_s"] / report[f"{kind}/1cpu"]["rows_per_s"],
                2,
            )
            for kind in ("ceiling", "standin@2048", "layer0")
        }
    return report


def show(report: dict) -> None:
    print(
        f"\nhost side, steady state ({report['rows_large']:,} - {report['rows_small']:,} rows "
        f"of >= {report['min_chars']} characters):"
    )
    for key, figures in report.items():
        if isinstance(figures, dict) and "rows_per_s" in figures:
            share = (
                f", {figures['of_ceiling']:.2f} of encode_batch" if "of_ceiling" in figures else ""
            )
            stages = figures.get("stages_s_per_10k")
            parts = (", " + ", ".join(f"{k} {v:.2f}" for k, v in stages.items())) if stages else ""
            print(
                f"  {key:<22} {figures['rows_per_s']:>9,.0f} rows/s "
                f"{figures['tokens_per_s']:>11,.0f} tok/s{share}{parts}"
            )
    if "scaling" in report:
        print(
            "  all cores against one: "
            + ", ".join(f"{k} {v}x" for k, v in report["scaling"].items())
        )


def _long_rows(table, n: int):
    import pyarrow.compute as pc

    long = table.filter(pc.greater_equal(pc.utf8_length(table.column("text")), MIN_CHARS))
    if long.num_rows < n:
        raise SystemExit(f"--feed-rows {n}: the corpus has only {long.num_rows} long rows here")
    return long.slice(0, n)


def _write(table, folder: Path) -> None:
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, folder / "part.parquet", row_group_size=8192)


def _steady(kind, options, src: Path, small: int, large: int, cpus: int, args) -> dict:
    runs = {}
    for n in (small, large):
        results = [
            _child(kind, options, src / f"in-{n}", cpus, args) for _ in range(args.feed_repeats)
        ]
        runs[n] = min(results, key=lambda r: r["seconds"])
    seconds = runs[large]["seconds"] - runs[small]["seconds"]
    tokens = runs[large]["tokens"] - runs[small]["tokens"]
    figures = {
        "rows_per_s": round((large - small) / seconds, 1),
        "tokens_per_s": round(tokens / seconds, 1),
        "seconds_small": round(runs[small]["seconds"], 3),
        "seconds_large": round(runs[large]["seconds"], 3),
    }
    if runs[large].get("stages"):
        scale = 10_000 / large
        figures["stages_s_per_10k"] = {
            k: round(v * scale, 3) for k, v in runs[large]["stages"].items()
        }
    return figures


def _child(kind: str, options: dict, src: Path, cpus: int, args) -> dict:
    command = [sys.executable, "-m", "benchmarks.feed", kind, str(src), json.dumps(options)]
    if cpus < (os.cpu_count() or 1):
        command = ["taskset", "-c", ",".join(str(c) for c in range(cpus)), *command]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


class Stages:
    """Seconds spent in each stage, summed over every thread that runs it."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.lock = threading.Lock()

    def add(self, name: str, seconds: float) -> None:
        with self.lock:
            self.seconds[name] = self.seconds.get(name, 0.0) + seconds

    def wrap(self, owner, attr: str, name: str) -> None:
        inner = getattr(owner, attr)

        def timed(*a, **k):
            start = time.perf_counter()
            try:
                return inner(*a, **k)
            finally:
                self.add(name, time.perf_counter() - start)

        setattr(owner, attr, timed)

    def wrap_generator(self, owner, attr: str, name: str) -> None:
        inner = getattr(owner, attr)

        def timed(*a, **k):
            items = inner(*a, **k)
            while True:
                start = time.perf_counter()
                try:
                    item = next(items)
                except StopIteration:
                    self.add(name, time.perf_counter() - start)
                    return
                self.add(name, time.perf_counter() - start)
                yield item

        setattr(owner, attr, timed)


def _instrument(stages: Stages, standin: bool) -> None:
    import etl.stages.encoder as encoder
    import etl.stages.loader as loader
    import etl.stages.read_ahead as read_ahead
    import etl.stages.sink as sink

    stages.wrap_generator(loader, "iter_windows", "read")
    stages.wrap(loader, "tokenize_window", "tokenize")
    stages.wrap(loader, "plan_batches", "batch")
    stages.wrap(loader, "pad", "batch")
    stages.wrap(read_ahead.Reader, "__next__", "tensors ready (wait)")
    stages.wrap(encoder, "pool", "pool")
    stages.wrap(sink.ShardWriter, "add", "encode output")
    stages.wrap(sink.ShardWriter, "_write", "write")
    if standin:
        encoder.Encoder.encode = _standin_encode
    stages.wrap(encoder.Encoder, "encode", "model")


def _standin_encode(self, batch):
    """Costs nothing; the shapes the real encoder gives: (B, D) per column, (B, T, H) tokens."""
    import torch

    rows, length = batch.input_ids.shape
    out = {}
    for column in self.spec.columns:
        if column.tokens:
            out[column.name] = torch.zeros(rows, length, self.spec.model.hidden_size)
        else:
            out[column.name] = torch.zeros(rows, column.dim)
    return out


def _run_child(kind: str, src: str, options: dict) -> dict:
    import pyarrow.parquet as pq

    if kind == "ceiling":
        from tokenizers import Tokenizer

        from etl.model.locate import default_model_path

        texts = pq.read_table(src, columns=["text"]).column("text").to_pylist()
        tokenizer = Tokenizer.from_file(str(default_model_path() / "tokenizer.json"))
        tokenizer.enable_truncation(256)
        tokenizer.no_padding()  # all-MiniLM's tokenizer.json pads to 128; the job pads per batch
        encode = tokenizer.encode_batch_fast if options.get("fast") else tokenizer.encode_batch
        start = time.perf_counter()
        encoded = encode(texts)
        seconds = time.perf_counter() - start
        return {"seconds": seconds, "tokens": sum(len(e.ids) for e in encoded)}
    from etl import JobConfig, run_job

    stages = Stages()
    _instrument(stages, standin=kind == "standin")
    out = Path(tempfile.mkdtemp(prefix="embed-etl-feed-"))
    try:
        cfg = JobConfig(
            inputs=(src,),
            output_dir=str(out),
            progress=False,
            poolings=("mean",),
            layers=(0,),
            max_length=256,
            no_reuse=True,
            **options,
        )
        start = time.perf_counter()
        summary = run_job(cfg).to_dict()
        seconds = time.perf_counter() - start
    finally:
        shutil.rmtree(out, ignore_errors=True)
    if summary["status"] != "ok":
        raise SystemExit(f"the job failed: {summary}")
    return {"seconds": seconds, "tokens": summary["tokens"], "stages": stages.seconds}


if __name__ == "__main__":
    print(json.dumps(_run_child(sys.argv[1], sys.argv[2], json.loads(sys.argv[3]))), flush=True)
    sys.stdout.flush()
    os._exit(0)
