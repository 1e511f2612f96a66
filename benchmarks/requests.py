"""Requests per shard on a local S3 server: one worker, 8 local workers, 4 Ray actors.

`make bench ARGS="--no-speed --no-cold-start --requests"`. The same job (a tiny seeded BERT
built here, --requests-shards shards of --requests-rows rows, inputs on local disk, the output
on s3://) runs three ways against moto on 127.0.0.1, which counts every request it answers by
kind: one worker; --workers 8; --engine ray with 4 actors on a two-node cluster on loopback
(ray.cluster_utils.Cluster, two CPUs a node; --requests-ray-shards takes the first N shards,
with a one-worker run on them to compare). Requests per shard are the job's requests (plan,
claims, outputs, manifest) over its shards; with the driver handing each shard to one worker,
many workers cost at most the one-worker figure plus one. The job runs with --no-reuse, and
with --requests-store again with the vector store on (the default): a segment a shard, the
workers' journal entries (one per worker every 10 s), the journal polls (one a reader every
5 s), the fetches of the texts a shard repeats from earlier ones, and the compaction the job
does at its end (one GET a small segment). Counts, not timing: the wall times printed beside
them are only for orientation.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from benchmarks.common import REPO, say

WORDS = ["the", "cat", "dog", "sat", "on", "a", "mat", "ran", "far", "away", "big", "red"]
KINDS = (  # the order of the table
    "PUT",
    "PUT if absent",
    "PUT if match",
    "PUT part",
    "GET",
    "HEAD",
    "LIST",
    "LIST uploads",
    "DELETE",
    "POST",
)
RAY_NODES, RAY_CPUS = 2, 2  # two nodes of two CPUs: 4 actors of one CPU
ONE, ONE_RAY = "one worker", "one worker, Ray's shards"
NO_STORE = "without the vector store (--no-reuse): claims, outputs, manifest"
STORE = "with the job's vector store (the default): segments, journal, fetches, compaction"


def measure(args: argparse.Namespace, work: Path) -> dict:
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # Ray nodes advertise 127.0.0.1
    server = CountingS3()
    try:
        os.environ.update(server.env)
        import boto3

        boto3.client("s3").create_bucket(Bucket="bench")
        model = _tiny_model(work / "tiny-model")
        shards, ray_shards = (
            args.requests_shards,
            min(args.requests_ray_shards, args.requests_shards),
        )
        inputs = _tiny_shards(work / "requests-in", shards, args.requests_rows)
        ray_inputs = inputs
        if ray_shards < shards:  # the first ones, in a folder of their own
            ray_inputs = _subset(inputs, work / "requests-in-ray", ray_shards)
        runs = [
            (ONE, inputs, shards, {}),
            ("8 local workers", inputs, shards, {"workers": 8}),
        ]
        if ray_shards < shards:  # the one-worker figure Ray compares with
            runs.append((ONE_RAY, ray_inputs, ray_shards, {}))
        runs.append(("4 Ray actors", ray_inputs, ray_shards, {"engine": "ray"}))
        result: dict = {"rows_per_shard": args.requests_rows, "tables": {}}
        for store in (False, True) if args.requests_store else (False,):
            table = result["tables"][STORE if store else NO_STORE] = {}
            for name, where, count, options in runs:
                options = {**options, "no_reuse": not store}
                out = f"s3://bench/{'store' if store else 'plain'}-{len(table)}"
                if options.get("engine") == "ray":
                    with _two_nodes() as address:
                        options.update(workers=4, threads=1, ray_address=address)
                        table[name] = _counted(server, model, where, out, count, options)
                else:
                    table[name] = _counted(server, model, where, out, count, options)
                figures = table[name]
                say(f"requests: {name}: {figures['total']} a shard, {figures['seconds']} s")
            _judge(table)
        _against_no_store(result["tables"])
        return result
    finally:
        server.stop()


def _counted(
    server: CountingS3, model: Path, inputs: Path, out: str, shards: int, options: dict
) -> dict:
    from etl import JobConfig, run_job

    cfg = JobConfig(
        inputs=(str(inputs),),
        output_dir=out,
        model=str(model),
        progress=False,
        num_workers=0,
        **options,
    )
    server.reset()
    started = time.perf_counter()
    summary = run_job(cfg).to_dict()
    seconds = time.perf_counter() - started
    counts = server.counts()
    if summary["status"] != "ok" or summary["shards_done"] != shards:
        raise RuntimeError(f"the job did not do every shard: {summary['status']}")
    return {
        "shards": shards,
        "per_shard": {k: round(counts[k] / shards, 3) for k in KINDS if counts.get(k)},
        "total": round(sum(counts.values()) / shards, 3),
        "requests": sum(counts.values()),
        "workers": len(summary["workers"]),
        "seconds": round(seconds, 1),
    }


def _against_no_store(tables: dict) -> None:
    """Each run with the store against the same run with --no-reuse: within 1.5x?"""
    plain, store = tables.get(NO_STORE), tables.get(STORE)
    if not plain or not store:
        return
    for name, figures in store.items():
        figures["no_store_total"] = plain[name]["total"]
        figures["ratio_to_no_store"] = round(figures["total"] / plain[name]["total"], 3)


def _judge(runs: dict) -> None:
    """Each many-worker run against the one-worker run on the same shards: within + 1?"""
    for name, figures in runs.items():
        if name in (ONE, ONE_RAY):
            continue
        base = runs.get(ONE_RAY, runs[ONE]) if "Ray" in name else runs[ONE]
        figures["one_worker_total"] = base["total"]
        figures["within_one_more"] = figures["total"] <= base["total"] + 1


class CountingS3:
    """moto on 127.0.0.1 in a child process, counting the requests it answers by kind;
    GET /_counts tells them, DELETE /_counts also starts again from zero."""

    def __init__(self) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        code = f"from benchmarks.requests import serve; serve({port})"
        self.process = subprocess.Popen(
            [sys.executable, "-c", code],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                self.counts()
                break
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("the counting S3 server (moto) did not start") from None
                time.sleep(0.05)
        self.env = {
            "AWS_ENDPOINT_URL": self.url,
            "AWS_ACCESS_KEY_ID": "bench",
            "AWS_SECRET_ACCESS_KEY": "bench",
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def counts(self) -> dict[str, int]:
        with urllib.request.urlopen(f"{self.url}/_counts", timeout=10) as reply:
            return json.loads(reply.read())

    def reset(self) -> None:
        request = urllib.request.Request(f"{self.url}/_counts", method="DELETE")
        urllib.request.urlopen(request, timeout=10).close()

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


def serve(port: int) -> None:
    """The child process: moto's own server application behind a counter."""
    from moto.server import DomainDispatcherApplication, create_backend_app
    from werkzeug.serving import run_simple

    os.environ["MOTO_PORT"] = str(port)
    moto = DomainDispatcherApplication(create_backend_app)
    counts: collections.Counter[str] = collections.Counter()
    lock = threading.Lock()

    def app(environ: dict, start_response) -> list[bytes]:
        if environ["PATH_INFO"] == "/_counts":
            with lock:
                body = json.dumps(counts).encode()
                if environ["REQUEST_METHOD"] == "DELETE":
                    counts.clear()
            start_response("200 OK", [("Content-Length", str(len(body)))])
            return [body]
        with lock:
            counts[kind(environ)] += 1
        return moto(environ, start_response)

    run_simple("127.0.0.1", port, app, threaded=True)


def kind(environ: dict) -> str:
    """A request's kind, from its method, path (bucket or key), query and conditions."""
    method, query = environ["REQUEST_METHOD"], environ.get("QUERY_STRING", "")
    on_key = "/" in environ["PATH_INFO"].strip("/")  # path style: /bucket/key
    if method == "GET" and not on_key:
        return "LIST uploads" if "uploads" in query else "LIST"
    if method == "PUT":
        if "partNumber" in query:
            return "PUT part"
        if environ.get("HTTP_IF_NONE_MATCH"):
            return "PUT if absent"
        if environ.get("HTTP_IF_MATCH"):
            return "PUT if match"
    return method


class _two_nodes:
    """A two-node Ray cluster on this machine (loopback), its address while it lives."""

    def __enter__(self) -> str:
        from ray.cluster_utils import Cluster

        os.environ.pop("RAY_ADDRESS", None)
        self.cluster = Cluster(
            initialize_head=True,
            connect=False,
            head_node_args={"num_cpus": RAY_CPUS, "include_dashboard": False},
        )
        for _ in range(RAY_NODES - 1):
            self.cluster.add_node(num_cpus=RAY_CPUS)
        self.cluster.wait_for_nodes()
        return self.cluster.address

    def __exit__(self, *exc) -> None:
        import ray

        ray.shutdown()
        self.cluster.shutdown()


def _tiny_model(path: Path) -> Path:
    """A 3-layer BERT of hidden size 32 and a 17-word vocabulary, seeded (as the tests')."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    torch.manual_seed(0)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=3,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    BertModel(config).eval().save_pretrained(path)
    BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}).save_pretrained(path)
    return path


def _tiny_shards(folder: Path, shards: int, rows: int) -> Path:
    import random

    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(0)
    for i in range(shards):
        texts = [" ".join(rng.choices(WORDS, k=rng.randint(1, 12))) for _ in range(rows)]
        ids = pa.array(range(i * rows, (i + 1) * rows), pa.int64())
        pq.write_table(pa.table({"id": ids, "text": texts}), folder / f"part-{i:05d}.parquet")
    return folder


def _subset(inputs: Path, folder: Path, shards: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for path in sorted(inputs.glob("*.parquet"))[:shards]:
        (folder / path.name).symlink_to(path)
    return folder


def show(r: dict) -> None:
    print(
        f"\nS3 requests per shard, tiny shards of {r['rows_per_shard']} rows, inputs on local "
        "disk, the output on a local S3 server (moto):"
    )
    for title, runs in r["tables"].items():
        names = list(runs)
        print(f"{title}\n  {'':<16}" + "".join(f"{n:>26}" for n in names))
        print(f"  {'shards':<16}" + "".join(f"{runs[n]['shards']:>26,}" for n in names))
        for k in KINDS:
            if any(k in runs[n]["per_shard"] for n in names):
                cells = "".join(f"{runs[n]['per_shard'].get(k, 0):>26.3f}" for n in names)
                print(f"  {k:<16}{cells}")
        print(f"  {'total':<16}" + "".join(f"{runs[n]['total']:>26.3f}" for n in names))
        verdicts = []
        for n in names:
            ok = runs[n].get("within_one_more")
            verdicts.append("" if ok is None else ("yes" if ok else "NO"))
        print(f"  {'<= one worker+1':<16}" + "".join(f"{v:>26}" for v in verdicts))
        if any("ratio_to_no_store" in runs[n] for n in names):
            cells = "".join(f"{runs[n]['ratio_to_no_store']:>25.3f}x" for n in names)
            print(f"  {'vs --no-reuse':<16}{cells}")
        print(f"  {'wall s':<16}" + "".join(f"{runs[n]['seconds']:>26}" for n in names))
