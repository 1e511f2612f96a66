"""What the job reads on the S3 test server, request by request, and `status` and `verify` on an
s3:// output: each passes on a good job and fails on a planted fault."""

from __future__ import annotations

import http.client
import io
import json
import subprocess
import sys
import threading
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import REPO, job_config, run_ok, tiny_texts, without_row, write_shard


@dataclass
class Request:
    method: str
    key: str  # bucket/key, unquoted
    range: str | None
    body_bytes: int  # bytes the server sent back


class RecordingProxy:
    """A proxy on 127.0.0.1 in front of the S3 test server that notes every request."""

    def __init__(self, upstream: str) -> None:
        target = urlsplit(upstream)
        self.requests: list[Request] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                upstream = http.client.HTTPConnection(target.hostname, target.port, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                headers["Host"] = target.netloc
                upstream.request(self.command, self.path, body=body, headers=headers)
                reply = upstream.getresponse()
                data = reply.read()
                path = unquote(urlsplit(self.path).path).lstrip("/")
                proxy.requests.append(
                    Request(self.command, path, self.headers.get("Range"), len(data))
                )
                self.send_response(reply.status)
                for name, value in reply.getheaders():
                    skip = ("transfer-encoding", "connection", "content-length")
                    if name.lower() not in skip or (
                        self.command == "HEAD" and name.lower() == "content-length"
                    ):
                        self.send_header(name, value)
                if self.command != "HEAD":
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                upstream.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> RecordingProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture
def s3(s3_server):
    import boto3

    return boto3.client("s3")


@pytest.fixture
def bucket(s3):
    name = f"state-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    return name


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "jobs.cli", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_shards_plan_facts_cost_ranged_gets_only(tmp_path, tiny_model, s3, bucket, monkeypatch):
    """The plan reads a pending shard's footer, and the footer of an output already there:
    ranged GETs of at most 128 KiB each object, never a whole object of MBs."""
    from etl.plan import plan_job

    path = tmp_path / "in" / "big.parquet"
    path.parent.mkdir(parents=True)
    texts = [f"{t} {i} " * 8 for i, t in enumerate(tiny_texts(20_000))]
    pq.write_table(pa.table({"id": range(len(texts)), "text": texts}), path, row_group_size=4096)
    s3.put_object(Bucket=bucket, Key="corpus/big.parquet", Body=path.read_bytes())
    uri, out = f"s3://{bucket}/corpus/", f"s3://{bucket}/vectors"
    run_ok(f"{uri}big.parquet", out, tiny_model)
    # The output stays, its records and done markers go: the plan must read its footer.
    for prefix in ("vectors/_embed_etl/shards/", "vectors/_embed_etl/done/"):
        for item in s3.list_objects_v2(Bucket=bucket, Prefix=prefix)["Contents"]:
            s3.delete_object(Bucket=bucket, Key=item["Key"])
    sizes = {
        f"{bucket}/corpus/big.parquet": s3.head_object(Bucket=bucket, Key="corpus/big.parquet"),
        f"{bucket}/vectors/big.parquet": s3.head_object(Bucket=bucket, Key="vectors/big.parquet"),
    }
    sizes = {k: v["ContentLength"] for k, v in sizes.items()}
    assert min(sizes.values()) > 1 << 20  # objects of MBs: a whole read would show
    import os

    with RecordingProxy(os.environ["AWS_ENDPOINT_URL"]) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        plan = plan_job(job_config(f"{uri}big.parquet", out, tiny_model))
    assert [s.rel_name for s in plan.pending] == ["big.parquet"] and plan.total_rows == 20_000
    for key, size in sizes.items():
        gets = [r for r in proxy.requests if r.method == "GET" and r.key == key]
        assert gets, (key, proxy.requests)
        assert all(r.range for r in gets), [r for r in gets if not r.range]
        read = sum(r.body_bytes for r in gets)
        print(f"{key}: {len(gets)} ranged GETs, {read:,} of {size:,} bytes ({read / size:.2%})")
        # pyarrow reads the last 64 KiB at once, then any longer footer: a constant, whatever
        # the size of the object
        assert read <= 1 << 17 and read < 0.1 * size, (key, read, size)


def test_four_local_workers_cost_a_shard_the_requests_of_one(
    tmp_path, tiny_model, s3, bucket, monkeypatch
):
    """--workers 4: the driver hands each shard to one worker as it asks, so each shard gets
    one claim attempt and the requests a shard stay those of one worker (plus one at most,
    for what each worker costs once); every row appears exactly once. Without the vector
    store, whose segment indexes each worker reads for itself (docs/deploy.md)."""
    shards, rows = 40, 3
    for i in range(shards):
        texts = tiny_texts(rows, seed=i)
        write_shard(
            tmp_path / "in" / f"p{i:02d}.parquet", texts, ids=range(i * rows, (i + 1) * rows)
        )
    import os

    upstream = os.environ["AWS_ENDPOINT_URL"]
    requests = {}
    for workers in (1, 4):
        out = f"{bucket}/w{workers}"
        with RecordingProxy(upstream) as proxy:
            monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)  # the worker processes inherit it
            summary = run_ok(
                tmp_path / "in", f"s3://{out}", tiny_model, workers=workers, no_reuse=True
            )
        monkeypatch.setenv("AWS_ENDPOINT_URL", upstream)
        assert summary["shards_done"] == shards
        assert len({w["pid"] for w in summary["workers"]}) == workers
        requests[workers] = proxy.requests
        claims = [r for r in proxy.requests if r.method == "PUT" and "/_embed_etl/claims/" in r.key]
        assert len(claims) == shards  # one claim attempt a shard, however many workers
        ids = []
        for i in range(shards):
            body = s3.get_object(Bucket=bucket, Key=f"w{workers}/p{i:02d}.parquet")["Body"].read()
            ids += pq.read_table(io.BytesIO(body)).column("id").to_pylist()
        assert sorted(ids) == list(range(shards * rows))  # every row exactly once
    one, four = (len(requests[w]) / shards for w in (1, 4))
    print(f"S3 requests a shard: one worker {one:.2f}, four workers {four:.2f}")
    assert four <= one + 1, (one, four)


def test_a_swap_of_an_object_deleted_since_it_was_read_is_refused_not_an_error(
    s3, bucket, monkeypatch
):
    """A claim released between its heartbeat's read and its conditional PUT: the swap is
    refused, as on local disk, instead of an error that ended the heartbeat thread."""
    from etl.storage import open_storage

    storage = open_storage(f"s3://{bucket}/claims")
    storage.put("a.claim", b"mine")
    client = storage.client
    read = client.get_object

    def read_then_released(**kwargs):
        reply = read(**kwargs)
        s3.delete_object(Bucket=kwargs["Bucket"], Key=kwargs["Key"])  # the main thread's release
        return reply

    monkeypatch.setattr(client, "get_object", read_then_released)
    assert storage.swap("a.claim", b"mine", b"mine") is False
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket, Prefix="claims/")  # not recreated


def _job(tmp_path, tiny_model, s3, bucket, shards=3):
    for i in range(shards):
        path = write_shard(tmp_path / "in" / f"p{i}.parquet", tiny_texts(30, seed=i))
        s3.put_object(Bucket=bucket, Key=f"corpus/p{i}.parquet", Body=path.read_bytes())
    out = f"s3://{bucket}/vectors"
    run_ok(f"s3://{bucket}/corpus/", out, tiny_model, normalize=True)
    return out


def _report(result: subprocess.CompletedProcess) -> dict:
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_status_on_s3_passes_and_sees_a_failed_and_a_deleted_shard(
    tmp_path, tiny_model, s3, bucket
):
    out = _job(tmp_path, tiny_model, s3, bucket)
    good = _cli("status", "-o", out, "--json")
    assert good.returncode == 0, good.stderr
    report = _report(good)
    assert (report["done"], report["failed"], report["pending"]) == (3, 0, 0)
    assert report["rows_done"] == 90
    # Planted: one output deleted, one shard's record turned into a failure.
    s3.delete_object(Bucket=bucket, Key="vectors/p0.parquet")
    key = "vectors/_embed_etl/shards/p1.parquet.json"
    record = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    record.update(status="failed", error="planted")
    s3.put_object(Bucket=bucket, Key=key, Body=json.dumps(record).encode())
    markers = s3.list_objects_v2(Bucket=bucket, Prefix="vectors/_embed_etl/done/p1")["Contents"]
    for marker in markers:
        s3.delete_object(Bucket=bucket, Key=marker["Key"])
    bad = _cli("status", "-o", out, "--json")
    report = _report(bad)
    states = {s["input"]: s["status"] for s in report["shards"]}
    assert states == {"p0.parquet": "pending", "p1.parquet": "failed", "p2.parquet": "done"}
    assert report["failed_shards"] == [{"input": "p1.parquet", "error": "planted"}]
    assert bad.returncode != 0


def test_verify_on_s3_passes_and_finds_a_planted_fault(tmp_path, tiny_model, s3, bucket):
    out = _job(tmp_path, tiny_model, s3, bucket)
    good = _cli("verify", "-o", out, "--json")
    assert good.returncode == 0, good.stderr
    report = _report(good)
    assert report["status"] == "ok" and report["shards"] == 3 and report["rows"] == 90
    # Planted: a row missing from one output, its metadata kept.
    key = "vectors/p2.parquet"
    table = pq.read_table(io.BytesIO(s3.get_object(Bucket=bucket, Key=key)["Body"].read()))
    s3.put_object(Bucket=bucket, Key=key, Body=without_row(table, 10))
    bad = _cli("verify", "-o", out, "--json")
    assert bad.returncode == 3, bad.stderr
    report = _report(bad)
    assert [p["input"] for p in report["problems"]] == ["p2.parquet"]
    assert any("rows: input 30, output 29" in p for p in report["problems"][0]["problems"])


def test_without_boto3_an_s3_output_is_one_plain_line(tmp_path, tiny_model, bucket):
    write_shard(tmp_path / "in" / "a.parquet", tiny_texts(3))
    uri = f"s3://{bucket}/run1"
    code = (
        "import sys; sys.modules['boto3'] = None; from jobs.cli import entry; "
        "sys.argv = ['embed-etl', *sys.argv[1:]]; entry()"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, "run", str(tmp_path / "in"), "-o", uri,
         "--model", str(tiny_model)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    errors = [line for line in result.stderr.splitlines() if line.startswith("embed-etl: error")]
    assert result.returncode == 2, result.stderr
    assert errors == [f"embed-etl: error: {uri}: s3:// needs boto3; pip install 'embed-etl[s3]'"]
