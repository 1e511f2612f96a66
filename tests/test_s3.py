"""Corpora where they live: s3:// in and out against a real S3 API server on 127.0.0.1 (moto),
configured only through the standard AWS environment variables; and memory://, a second
backend through the same storage seam. Same files, same guarantees as local paths."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
import uuid

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import REPO, kill_group, run_ok, start_job, tiny_texts, wait_until, write_shard

SHARDS = 4


@pytest.fixture
def s3(s3_server):
    import boto3

    return boto3.client("s3")


@pytest.fixture
def bucket(s3):
    name = f"embed-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    return name


def _corpus(s3, bucket, tmp_path, rows=40, shards=SHARDS):
    """The same shards locally (tmp_path/in) and in s3://bucket/corpus/."""
    for i in range(shards):
        path = write_shard(
            tmp_path / "in" / f"p{i}.parquet",
            tiny_texts(rows, seed=i),
            ids=range(i * rows, (i + 1) * rows),
        )
        s3.put_object(Bucket=bucket, Key=f"corpus/p{i}.parquet", Body=path.read_bytes())
    return f"s3://{bucket}/corpus/"


def _cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "jobs.cli", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _keys(s3, bucket, prefix=""):
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return sorted(item["Key"] for page in pages for item in page.get("Contents", ()))


def _table(s3, bucket, key) -> pa.Table:
    return pq.read_table(io.BytesIO(s3.get_object(Bucket=bucket, Key=key)["Body"].read()))


def test_s3_to_s3_gives_the_files_of_a_local_run(tmp_path, tiny_model, s3, bucket):
    uri = _corpus(s3, bucket, tmp_path)
    common = ["--model", str(tiny_model), "--normalize", "--no-progress"]
    on_s3 = _cli("run", uri, "-o", f"s3://{bucket}/vectors", *common)
    assert on_s3.returncode == 0, on_s3.stderr
    local = _cli("run", str(tmp_path / "in"), "-o", str(tmp_path / "out"), *common)
    assert local.returncode == 0, local.stderr
    for i in range(SHARDS):
        remote = _table(s3, bucket, f"vectors/p{i}.parquet")
        here = pq.read_table(tmp_path / "out" / f"p{i}.parquet")
        assert remote.equals(here, check_metadata=True)  # schema, metadata, every value
    status = _cli("status", "-o", f"s3://{bucket}/vectors", "--json")
    assert status.returncode == 0 and json.loads(status.stdout)["done"] == SHARDS
    again = _cli("run", uri, "-o", f"s3://{bucket}/vectors", *common)
    assert json.loads(again.stdout)["shards_skipped"] == SHARDS
    glob_run = _cli(
        "run", f"s3://{bucket}/corpus/p[02].parquet", "-o", f"s3://{bucket}/two", *common
    )
    assert glob_run.returncode == 0, glob_run.stderr
    assert _keys(s3, bucket, "two/p") == ["two/p0.parquet", "two/p2.parquet"]


def test_passages_on_s3_are_the_passages_of_a_local_run(tmp_path, tiny_model, s3, bucket):
    """Late passages, nested, from and to S3: the files a local run writes; verify passes."""
    uri = _corpus(s3, bucket, tmp_path)
    common = ["--model", str(tiny_model), "--no-progress", "--chunk-tokens", "6"]
    common += ["--chunking", "late", "--chunk-layout", "nested"]
    on_s3 = _cli("run", uri, "-o", f"s3://{bucket}/passages", *common)
    assert on_s3.returncode == 0, on_s3.stderr
    local = _cli("run", str(tmp_path / "in"), "-o", str(tmp_path / "out"), *common)
    assert local.returncode == 0, local.stderr
    for i in range(SHARDS):
        remote = _table(s3, bucket, f"passages/p{i}.parquet")
        assert remote.equals(pq.read_table(tmp_path / "out" / f"p{i}.parquet"))
    checked = _cli("verify", "-o", f"s3://{bucket}/passages")
    assert checked.returncode == 0, checked.stdout + checked.stderr


def _start(tiny_model, uri, output, *extra) -> subprocess.Popen:
    args = ["run", uri, "-o", output, "--model", str(tiny_model), "--batch-size", "4"]
    return start_job([sys.executable, "-m", "jobs.cli", *args, "--no-progress", *extra])


_kill = kill_group


def test_sigkill_at_three_points_then_a_rerun_is_exactly_once_with_no_strays(
    tmp_path, tiny_model, s3, bucket
):
    rows = 2000
    uri = _corpus(s3, bucket, tmp_path, rows=rows)
    out = f"s3://{bucket}/vectors"
    done = lambda: len(_keys(s3, bucket, "vectors/_embed_etl/done/"))  # noqa: E731
    claimed = lambda: bool(_keys(s3, bucket, "vectors/_embed_etl/claims/"))  # noqa: E731
    uploading = lambda: bool(s3.list_multipart_uploads(Bucket=bucket).get("Uploads"))  # noqa: E731
    procs = []
    try:
        # 1: mid-way through the first shard, its output going up in parts
        procs.append(_start(tiny_model, uri, out))
        wait_until(
            procs[-1], lambda: claimed() and uploading(), "a multipart upload under way", poll=0.01
        )
        _kill(procs[-1])
        assert done() == 0 and uploading()  # the killed run left an unfinished upload
        # 2: after a rerun has finished one shard, while it works on the next
        procs.append(_start(tiny_model, uri, out))
        wait_until(
            procs[-1],
            lambda: done() >= 1 and claimed(),
            "one shard done, another claimed",
            poll=0.01,
        )
        _kill(procs[-1])
        before = done()
        # 3: as soon as one more shard is recorded
        procs.append(_start(tiny_model, uri, out))
        wait_until(procs[-1], lambda: done() > before, "one more shard done", poll=0.01)
        _kill(procs[-1])
    finally:
        for proc in procs:
            if proc.poll() is None:
                _kill(proc)
    before = done()
    assert before < SHARDS
    rerun = _cli("run", uri, "-o", out, "--model", str(tiny_model), "--no-progress")
    assert rerun.returncode == 0, rerun.stderr
    summary = json.loads(rerun.stdout)
    assert (summary["shards_skipped"], summary["shards_done"]) == (before, SHARDS - before)
    ids = [
        i
        for k in range(SHARDS)
        for i in _table(s3, bucket, f"vectors/p{k}.parquet").column("id").to_pylist()
    ]
    assert sorted(ids) == list(range(SHARDS * rows))  # every row exactly once
    strays = [
        k
        for k in _keys(s3, bucket, "vectors/")
        if not k.startswith(("vectors/_embed_etl/shards/", "vectors/_embed_etl/done/"))
        and k not in ("vectors/_embed_etl/job.json", "vectors/_embed_etl/vectors/store.json")
        and not (k.startswith("vectors/_embed_etl/vectors/segments/") and k.endswith(".seg"))
        and not k.startswith("vectors/_embed_etl/vectors/log/")
        and k != "vectors/_embed_etl/vectors/checkpoint.json"
        and not (k.startswith("vectors/p") and k.endswith(".parquet"))
    ]
    assert strays == []  # no claim, no temporary object
    assert not s3.list_multipart_uploads(Bucket=bucket).get("Uploads")  # none left unfinished
    _assert_store_whole(out)


def _assert_store_whole(output: str) -> None:
    """Every segment the job's store names reads back whole: trailer, index blocks, records."""
    from etl.reuse.audit import check_store
    from etl.reuse.plan import open_store

    report = check_store(open_store("--reuse", output))
    assert report.segments and report.records, report
    assert report.ok, [d.describe() for d in report.damage]


def test_two_processes_on_one_s3_output_never_share_a_shard(tmp_path, tiny_model, s3, bucket):
    uri = _corpus(s3, bucket, tmp_path, rows=600)
    out = f"s3://{bucket}/vectors"
    procs = [_start(tiny_model, uri, out, "--threads", "1") for _ in range(2)]
    done = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, stderr
        done.append({s["input"] for s in json.loads(stdout)["shards"] if s["status"] == "done"})
    assert not done[0] & done[1], f"both processes did {done[0] & done[1]}"
    assert done[0] | done[1] == {f"p{i}.parquet" for i in range(SHARDS)}


def test_a_corrupt_object_fails_alone(tmp_path, tiny_model, s3, bucket):
    uri = _corpus(s3, bucket, tmp_path)
    s3.put_object(Bucket=bucket, Key="corpus/p9.parquet", Body=b"PAR1 not really parquet")
    result = _cli("run", uri, "-o", f"s3://{bucket}/vectors", "--model", str(tiny_model))
    assert result.returncode == 3, result.stderr
    summary = json.loads(result.stdout)
    assert (summary["shards_done"], summary["shards_failed"]) == (SHARDS, 1)
    failed = [s for s in summary["shards"] if s["status"] == "failed"]
    assert failed[0]["input"] == "p9.parquet" and "p9.parquet" in failed[0]["error"]


def test_a_second_backend_memory_runs_the_same_job(tmp_path, tiny_model):
    """memory:// (fsspec) through the same storage seam: same files as local paths."""
    import fsspec

    memory = fsspec.filesystem("memory")
    root = f"/embed-{uuid.uuid4().hex[:8]}"
    for i in range(SHARDS):
        path = write_shard(tmp_path / "in" / f"p{i}.parquet", tiny_texts(30, seed=i))
        memory.pipe(f"{root}/in/p{i}.parquet", path.read_bytes())
    run_ok(f"memory://{root}/in", f"memory://{root}/out", tiny_model, normalize=True)
    run_ok(tmp_path / "in", tmp_path / "out", tiny_model, normalize=True)
    for i in range(SHARDS):
        remote = pq.read_table(io.BytesIO(memory.cat(f"{root}/out/p{i}.parquet")))
        assert remote.equals(pq.read_table(tmp_path / "out" / f"p{i}.parquet"), check_metadata=True)
    again = run_ok(f"memory://{root}/in", f"memory://{root}/out", tiny_model, normalize=True)
    assert again["shards_skipped"] == SHARDS


def test_resume_and_status_list_instead_of_reading_each_shard(
    tmp_path, tiny_model, s3, bucket, monkeypatch
):
    """Requests to plan a rerun of a finished job do not grow with the number of shards."""
    import boto3

    from etl import job_status, plan_job
    from tests.conftest import job_config

    calls: list[str] = []
    real_client = boto3.session.Session.client

    def counting_client(self, *args, **kwargs):
        client = real_client(self, *args, **kwargs)
        client.meta.events.register("before-call.s3", lambda model, **_: calls.append(model.name))
        return client

    monkeypatch.setattr(boto3.session.Session, "client", counting_client)
    counts = {}
    for shards in (3, 12):
        uri = _corpus(s3, bucket, tmp_path, rows=5, shards=shards)
        out = f"s3://{bucket}/v{shards}"
        assert run_ok(uri, out, tiny_model)["shards_done"] == shards
        calls.clear()
        assert not plan_job(job_config(uri, out, tiny_model)).pending
        planned = list(calls)
        calls.clear()
        assert job_status(out).counts()["done"] == shards
        counts[shards] = (planned, list(calls))
    assert counts[3] == counts[12]  # the same requests for 3 shards and for 12
    assert set(counts[12][0]) <= {"ListObjectsV2", "GetObject"}  # listings and job.json


def test_a_bad_uri_a_missing_bucket_and_denied_credentials_are_one_line(
    tmp_path, tiny_model, s3, bucket, s3_server
):
    write_shard(tmp_path / "in" / "s.parquet", tiny_texts(3))
    base = ["--model", str(tiny_model)]
    cases = [
        (["run", str(tmp_path / "in"), "-o", "s3://"], 2, "s3://: expected s3://bucket/prefix"),
        (["run", str(tmp_path / "in"), "-o", "s3://no-such-bucket-x/v"], 2, "does not exist"),
        (["run", "s3://no-such-bucket-x/in/", "-o", str(tmp_path / "o")], 2, "s3://no-such"),
        (["run", str(tmp_path / "in"), "-o", "nosuch://x/y"], 2, "nosuch://x/y"),
    ]
    for args, code, message in cases:
        result = _cli(*args, *base)
        assert result.returncode == code, (args, result.stderr)
        lines = [line for line in result.stderr.splitlines() if "error" in line]
        assert len(lines) == 1 and message in lines[0], result.stderr
        assert "Traceback" not in result.stderr
    assert not (tmp_path / "o").exists()
    # A server that checks credentials, and knows none of ours.
    strict = _strict_server()
    try:
        env = {**os.environ, "AWS_ENDPOINT_URL": strict[1]}
        result = subprocess.run(
            [sys.executable, "-m", "jobs.cli", "run", str(tmp_path / "in"), "-o",
             f"s3://{bucket}/denied", *base],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
    finally:
        strict[0].terminate()
        strict[0].wait()
    assert result.returncode == 1, result.stderr
    assert f"s3://{bucket}/denied: access denied" in result.stderr
    assert not _keys(s3, bucket, "denied/")


def _strict_server():
    import socket
    import urllib.request

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "0"}
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return server, url
        except OSError as exc:
            if getattr(exc, "code", None):  # it answers, if only to refuse us
                return server, url
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                pytest.fail("the strict S3 server did not start")
            time.sleep(0.05)


def test_vectors_of_s3_inputs_match_local_inputs_in_process(tmp_path, tiny_model, s3, bucket):
    uri = _corpus(s3, bucket, tmp_path)
    run_ok(uri, tmp_path / "from-s3", tiny_model)
    run_ok(tmp_path / "in", tmp_path / "from-disk", tiny_model)
    for i in range(SHARDS):
        a = pq.read_table(tmp_path / "from-s3" / f"p{i}.parquet").column("emb_mean")
        b = pq.read_table(tmp_path / "from-disk" / f"p{i}.parquet").column("emb_mean")
        np.testing.assert_array_equal(np.array(a.to_pylist()), np.array(b.to_pylist()))
