"""The host side alone: what a GPU's host must do, against the tokenizer's own ceiling.

`make bench ARGS=--feed`. Each figure comes from fresh child processes (optionally pinned to
fewer cores with taskset) running the whole job on long real paragraphs of the corpus:

  standin   the encoder replaced by a stand-in that costs nothing and returns zero tensors of
            the right shapes (here only: never in the product); reading, tokenizing, sorting,
            batching, copying vectors out, encoding them to Arrow and writing remain
  layer0    the real job with --pooling mean --layer 0 (the embedding layer only)
  ceiling   the same tokenizer's encode_batch on the same texts and cores, truncating to
            256 tokens as a user would call it; ceiling_fast: encode_batch_fast without
            truncation (no offsets, no overflow windows: the least work that gives the ids,
            and what the job calls)

``--feed-baseline REV`` runs the same figures with the etl package of another revision too,
in turn with this one's, so that before and after come from the same machine in one run.
Rates are at steady state: (rows of the large run - rows of the small run) / (difference of
their wall times), the median of --feed-repeats each, so that start-up (imports, model load) drops
out. Stage times are seconds per 10,000 rows of the large run, summed over the threads that
did them (read, tokenize and batch run beside the model; they overlap).
"""

from __future__ import annotations

import argparse
import contextlib
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
    table = _long_rows(corpus_rows(args.corpus, 10**9), large, args.feed_min_chars)
    for n in (small, large):
        _write(table.slice(0, n), src / f"in-{n}")
    cores = os.cpu_count() or 1
    trees = {"": None}
    if args.feed_baseline:  # the code of another revision, measured in turn with this one
        trees["before:"] = _checkout(args.feed_baseline, work / "baseline")
    report: dict = {"rows_small": small, "rows_large": large, "min_chars": args.feed_min_chars}
    report["baseline"] = args.feed_baseline
    runs = [("ceiling", {}), ("ceiling", {"fast": True, "whole": True})]
    runs += [("standin", {"batch_tokens": 2048}), ("layer0", {})]
    runs.append(("standin", {"batch_tokens": 32768}))
    for cpus in sorted({1, cores}):
        for kind, options in runs:
            if cpus == 1 and options.get("batch_tokens") == 32768:
                continue
            for prefix, tree in trees.items():
                if kind == "ceiling" and prefix:
                    continue  # the tokenizer is the same
                key = prefix + _key(kind, options, cpus)
                report[key] = _steady(kind, options, src, small, large, cpus, args, tree)
                say(f"feed {key}: {report[key]['rows_per_s']:,.0f} rows/s")
    for key in list(report):
        figures = report[key]
        if isinstance(figures, dict) and "rows_per_s" in figures and "ceiling" not in key:
            cpus = key.rsplit("/", 1)[1]
            for name, ceiling in (("of_ceiling", "ceiling"), ("of_fast", "ceiling_fast")):
                rate = report[f"{ceiling}/{cpus}"]["rows_per_s"]
                figures[name] = round(figures["rows_per_s"] / rate, 3)
    if cores > 1:
        report["scaling"] = {}
        for prefix in trees:
            for kind in ("ceiling", "ceiling_fast", "standin@2048", "layer0"):
                if kind.startswith("ceiling") and prefix:
                    continue
                many = report[f"{prefix}{kind}/{cores}cpu"]["rows_per_s"]
                one = report[f"{prefix}{kind}/1cpu"]["rows_per_s"]
                report["scaling"][prefix + kind] = round(many / one, 2)
    from benchmarks import gil

    report["gil"] = gil.measure(src, small, large)
    return report


def full_model(args: argparse.Namespace, work: Path) -> dict:
    """The whole job with the whole model in float32 (its own recipe), this revision against
    --feed-baseline's in turn: median seconds of --feed-repeats runs each, start-up included,
    and how far apart their vectors are."""
    import numpy as np
    import pyarrow.parquet as pq

    from benchmarks.common import corpus_rows, say

    rows = args.feed_full_rows
    src = work / "full" / "in"
    src.mkdir(parents=True, exist_ok=True)
    pq.write_table(corpus_rows(args.corpus, rows), src / "part.parquet")
    trees = {"": None, "before:": _checkout(args.feed_baseline, work / "baseline")}
    cores = os.cpu_count() or 1
    seconds: dict[str, list[float]] = {prefix: [] for prefix in trees}
    for repeat in range(args.feed_repeats):
        for prefix, tree in trees.items():
            out = work / "full" / f"out{prefix.strip(':')}-{repeat}"
            found = _child("model", {"out": str(out)}, src, cores, tree)
            seconds[prefix].append(found["seconds"])
            say(f"full model {prefix or 'now:'} {rows / found['seconds']:,.1f} rows/s")
    last = args.feed_repeats - 1
    vectors = [
        np.array(
            pq.read_table(work / "full" / f"out{p.strip(':')}-{last}" / "part.parquet")
            .column("emb_model")
            .to_pylist(),
            np.float32,
        )
        for p in trees
    ]
    report = {"rows": rows, "baseline": args.feed_baseline, "cores": cores}
    for prefix in trees:
        median = sorted(seconds[prefix])[len(seconds[prefix]) // 2]
        report[prefix + "model"] = {
            "rows_per_s": round(rows / median, 1),
            "seconds": [round(x, 2) for x in seconds[prefix]],
        }
    report["ratio"] = round(report["model"]["rows_per_s"] / report["before:model"]["rows_per_s"], 3)
    report["max_abs_diff"] = float(np.abs(vectors[0] - vectors[1]).max())
    return report


def _key(kind: str, options: dict, cpus: int) -> str:
    key = kind + (f"@{options['batch_tokens']}" if "batch_tokens" in options else "")
    return key + ("_fast" if options.get("fast") else "") + f"/{cpus}cpu"


def _checkout(revision: str, folder: Path) -> Path:
    """The files of ``revision`` (git archive), to import its etl package from."""
    folder.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", revision, "etl", "jobs"],
        capture_output=True,
        check=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    return folder


def show(report: dict) -> None:
    from benchmarks.common import machine

    print(
        f"\nhost side, steady state ({report['rows_large']:,} - {report['rows_small']:,} rows "
        f"of >= {report['min_chars']} characters), {machine(0)['cpu']}:"
    )
    if report.get("baseline"):
        print(f"  before: = the code of {report['baseline']}, measured in turn with this one")
    for key, figures in report.items():
        if isinstance(figures, dict) and "rows_per_s" in figures:
            share = ""
            if "of_ceiling" in figures:
                share = (
                    f", {figures['of_ceiling']:.2f} of encode_batch, "
                    f"{figures['of_fast']:.2f} of encode_batch_fast"
                )
            stages = figures.get("stages_s_per_10k")
            parts = (", " + ", ".join(f"{k} {v:.2f}" for k, v in stages.items())) if stages else ""
            print(
                f"  {key:<29} {figures['rows_per_s']:>9,.0f} rows/s "
                f"{figures['tokens_per_s']:>11,.0f} tok/s{share}{parts}"
            )
    if "scaling" in report:
        print(
            "  all cores against one: "
            + ", ".join(f"{k} {v}x" for k, v in report["scaling"].items())
        )
    if "gil" in report:
        from benchmarks import gil

        gil.show(report["gil"])


def _long_rows(table, n: int, min_chars: int = MIN_CHARS):
    import pyarrow.compute as pc

    long = table.filter(pc.greater_equal(pc.utf8_length(table.column("text")), min_chars))
    if long.num_rows < n:
        raise SystemExit(f"--feed-rows {n}: the corpus has only {long.num_rows} long rows here")
    return long.slice(0, n)


def _write(table, folder: Path) -> None:
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, folder / "part.parquet", row_group_size=8192)


def _steady(kind, options, src: Path, small: int, large: int, cpus: int, args, tree) -> dict:
    results: dict[int, list] = {small: [], large: []}
    for _ in range(args.feed_repeats):  # in turn, so that a noisy minute hits both sizes
        for n in (small, large):
            results[n].append(_child(kind, options, src / f"in-{n}", cpus, tree))
    # The median run of each size (by its wall time).
    runs = {
        n: sorted(found, key=lambda r: r["seconds"])[len(found) // 2]
        for n, found in results.items()
    }
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


def _child(kind: str, options: dict, src: Path, cpus: int, tree: Path | None) -> dict:
    """One run in a fresh process; with ``tree``, its etl package instead of this one's (the
    benchmark's own code runs from a copy, so that it is this revision's in both)."""
    command = [sys.executable, "-m", "benchmarks.feed", kind, str(src), json.dumps(options)]
    if cpus < (os.cpu_count() or 1):
        command = ["taskset", "-c", ",".join(str(c) for c in range(cpus)), *command]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    cwd = REPO
    if tree is not None:
        cwd = tree.parent / "bench-code"
        if not cwd.exists():
            shutil.copytree(REPO / "benchmarks", cwd / "benchmarks")
        env["PYTHONPATH"] = str(tree)
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, check=False)
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
        inner = getattr(owner, attr, None)
        if inner is None:  # an older revision without this function
            return

        def timed(*a, **k):
            start = time.perf_counter()
            try:
                return inner(*a, **k)
            finally:
                self.add(name, time.perf_counter() - start)

        setattr(owner, attr, timed)

    def wrap_generator(self, owner, attr: str, name: str) -> None:
        inner = getattr(owner, attr, None)
        if inner is None:
            return

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
    import etl.stages.compute.encoder as encoder
    import etl.stages.read.loader as loader
    import etl.stages.read.read_ahead as read_ahead
    import etl.stages.write.sink as sink
    import etl.stages.write.window as window

    stages.wrap_generator(loader, "iter_windows", "read")  # before etl.stages.read.blocks
    stages.wrap_generator(loader, "read_blocks", "read")
    stages.wrap(loader, "tokenize_window", "tokenize")  # before encode_window
    stages.wrap(loader, "encode_window", "tokenize")
    stages.wrap(loader, "finish_window", "ids out of the tokenizer")
    stages.wrap(loader, "plan_batches", "batch")
    stages.wrap(loader, "pad", "batch")  # before etl.stages.read.sequences
    with contextlib.suppress(ImportError):
        from etl.stages.read.sequences import Sequences

        stages.wrap(Sequences, "padded", "batch")
    stages.wrap(read_ahead.Reader, "__next__", "tensors ready (wait)")
    stages.wrap(encoder, "pool", "pool")
    stages.wrap(sink.ShardWriter, "add", "place vectors")
    stages.wrap(window.Window, "finished", "encode output")
    stages.wrap(window.Window, "finished_token_ids", "encode output")
    stages.wrap(sink.ShardWriter, "_write", "write (encode output included)")
    model = "forward" if hasattr(encoder.Encoder, "forward") else "encode"  # older revisions
    if standin:
        setattr(encoder.Encoder, model, _standin_forward)
    stages.wrap(encoder.Encoder, model, "model")


def _standin_forward(self, batch):
    """Costs nothing; the shapes the real encoder gives: (B, D) per column, (B, T, D) tokens."""
    import torch

    rows, length = batch.input_ids.shape
    out = {}
    for column in self.spec.columns:
        if column.tokens:
            out[column.name] = torch.zeros(rows, length, column.dim)
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
        if options.get("whole"):  # no truncation: the least work that gives the ids
            tokenizer.no_truncation()
        else:
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
    keep = options.pop("out", None)  # where to leave the output (the full model's vectors)
    out = Path(keep or tempfile.mkdtemp(prefix="embed-etl-feed-"))
    if kind != "model":  # the host side: the embedding layer only
        options = {"poolings": ("mean",), "layers": (0,), **options}
    try:
        cfg = JobConfig(
            inputs=(src,),
            output_dir=str(out),
            progress=False,
            max_length=256,
            no_reuse=True,
            device="cpu",  # the host side alone, on a GPU's host too
            **options,
        )
        start = time.perf_counter()
        summary = run_job(cfg).to_dict()
        seconds = time.perf_counter() - start
    finally:
        if keep is None:
            shutil.rmtree(out, ignore_errors=True)
    if summary["status"] != "ok":
        raise SystemExit(f"the job failed: {summary}")
    return {"seconds": seconds, "tokens": summary["tokens"], "stages": stages.seconds}


if __name__ == "__main__":
    print(json.dumps(_run_child(sys.argv[1], sys.argv[2], json.loads(sys.argv[3]))), flush=True)
    sys.stdout.flush()
    os._exit(0)
