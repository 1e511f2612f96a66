"""Object storage: the same job from and to a local S3 server (moto, on 127.0.0.1) against local
disk; the S3 requests it makes per shard; peak memory reading a 1 GB shard from S3 and from
disk (a shard is streamed row group by row group, never downloaded whole)."""

from __future__ import annotations

import argparse
import collections
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from benchmarks.common import REPO, corpus_rows, run_job, say

SHARD_ROWS = 1000


def measure(args: argparse.Namespace, work: Path) -> dict:
    server, env = _moto()
    try:
        os.environ.update(env)
        import boto3

        s3 = boto3.client("s3")
        s3.create_bucket(Bucket="bench")
        table = corpus_rows(args.corpus, args.storage_rows)
        local = work / "storage-in"
        local.mkdir()
        for i, start in enumerate(range(0, table.num_rows, SHARD_ROWS)):
            path = local / f"part-{i:05d}.parquet"
            pq.write_table(table.slice(start, SHARD_ROWS), path)
            s3.upload_file(str(path), "bench", f"in/{path.name}")
        shards = len(list(local.glob("*.parquet")))
        options = {"max_length": args.max_length, "threads": args.threads}
        rates: dict[str, list[float]] = {"disk": [], "s3": []}
        requests: collections.Counter = collections.Counter()
        for repeat in range(args.repeats):
            secs, _, _ = run_job(local, work / f"disk-{repeat}", column="emb_model", **options)
            rates["disk"].append(table.num_rows / secs)
            with _counting(requests if repeat == 0 else collections.Counter()):
                secs, _, _ = _s3_job(f"s3://bench/out-{repeat}", **options)
            rates["s3"].append(table.num_rows / secs)
            say(f"storage: disk {rates['disk'][-1]:.1f} rows/s, s3 {rates['s3'][-1]:.1f} rows/s")
        result = {
            "rows": table.num_rows,
            "shards": shards,
            "rows_per_s_disk": round(statistics.median(rates["disk"]), 1),
            "rows_per_s_s3": round(statistics.median(rates["s3"]), 1),
            "requests_per_shard": {k: round(v / shards, 2) for k, v in sorted(requests.items())},
            "requests_per_shard_total": round(sum(requests.values()) / shards, 2),
        }
        with _counting(requests := collections.Counter()):
            _s3_job("s3://bench/out-0", **options)  # a rerun: everything is done
        result["rerun_requests"] = dict(requests)
        result["memory"] = _memory(args, work, s3)
        return result
    finally:
        server.terminate()
        server.wait()


def _s3_job(out: str, **options):
    from etl import JobConfig
    from etl import run_job as run

    start = time.perf_counter()
    summary = run(JobConfig(inputs=("s3://bench/in/",), output_dir=out, progress=False, **options))
    return time.perf_counter() - start, None, summary.to_dict()


class _counting:
    """Count the S3 requests boto3 clients made meanwhile, by operation."""

    def __init__(self, counter: collections.Counter) -> None:
        self.counter = counter

    def __enter__(self):
        import boto3

        self.real = real = boto3.session.Session.client
        counter = self.counter

        def client(session, *args, **kwargs):
            made = real(session, *args, **kwargs)
            made.meta.events.register(
                "before-call.s3", lambda model, **_: counter.update([model.name])
            )
            return made

        boto3.session.Session.client = client
        return self

    def __exit__(self, *exc):
        import boto3

        boto3.session.Session.client = self.real


def _memory(args: argparse.Namespace, work: Path, s3) -> dict:
    """Peak RSS of streaming every row of a ~1 GB shard, from disk and from S3 (VmHWM: a
    child's ru_maxrss would include this process's peak, inherited at fork)."""
    texts = corpus_rows(args.corpus, 20_000).column("text")
    path = work / "big.parquet"
    schema = pa.schema([("id", pa.int64()), ("text", pa.string())])
    with pq.ParquetWriter(path, schema, use_dictionary=False) as writer:
        written = 0
        while not path.exists() or path.stat().st_size < args.big_shard_mb * 2**20:
            ids = pa.array(range(written, written + len(texts)), pa.int64())
            writer.write_table(pa.table({"id": ids, "text": texts}), row_group_size=len(texts))
            written += len(texts)
    size = path.stat().st_size
    s3.upload_file(str(path), "bench", "big/big.parquet")
    result = {"shard_mb": round(size / 2**20, 1)}
    for name, where in (("disk", str(path)), ("s3", "s3://bench/big/big.parquet")):
        code = (  # the job's own reading stage, windows of 4,096 rows
            "import sys\n"
            "from etl.stages.read.source import iter_windows, parquet_file\n"
            "shard = parquet_file(sys.argv[1])\n"
            "windows = iter_windows(shard, sys.argv[1], ['id', 'text'], 4096)\n"
            "rows = sum(w.num_rows for w in windows)\n"
            "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0]\n"
            "print(rows, hwm.split()[1])"
        )
        out = subprocess.run(
            [sys.executable, "-c", code, where],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        result[f"peak_rss_mb_{name}"] = round(int(out[1]) / 1024, 1)
        result["rows"] = int(out[0])
        peak = result[f"peak_rss_mb_{name}"]
        say(f"storage memory {name}: {peak} MB reading {size / 2**20:.0f} MB")
    return result


def _moto() -> tuple[subprocess.Popen, dict]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(url, timeout=1).close()
            break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("moto did not start") from None
            time.sleep(0.05)
    env = {
        "AWS_ENDPOINT_URL": url,
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    return server, env


def show(r: dict) -> None:
    print(
        f"\nobject storage, {r['rows']:,} rows in {r['shards']} shards: local disk "
        f"{r['rows_per_s_disk']} rows/s, local S3 server {r['rows_per_s_s3']} rows/s"
    )
    print(f"S3 requests per shard (output side, boto3): {r['requests_per_shard_total']}")
    for name, count in r["requests_per_shard"].items():
        print(f"  {name:<28}{count:>6}")
    print(f"a rerun with every shard done: {r['rerun_requests']}")
    m = r["memory"]
    print(
        f"peak RSS streaming a {m['shard_mb']} MB shard ({m['rows']:,} rows): disk "
        f"{m['peak_rss_mb_disk']} MB, S3 {m['peak_rss_mb_s3']} MB"
    )
