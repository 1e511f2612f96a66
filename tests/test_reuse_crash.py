"""SIGKILL with a vector store: while a shard is written, while its vectors go into the store,
and between the two; then a rerun. Every row once, no half entry visible, verify passes; on
local disk and on an S3 API server (moto on 127.0.0.1).

The job runs as users run it, with one addition: a wrapper holds it still at the instant the
test names (it writes a marker and waits), so the kill lands exactly there, every time.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from tests.conftest import REPO, kill_when, start_job, tiny_texts, write_shard

SHARDS, ROWS = 4, 1500

HOLD = """
import os, sys, time
from pathlib import Path
import etl.reuse.store as store

marker, point = Path(os.environ["HOLD_MARKER"]), os.environ["HOLD_POINT"]
publish = store.VectorStore.publish

def hold():
    marker.write_text("held")
    time.sleep(600)  # until the test kills the process

def held_publish(self, name, chunks, size_hint=0):
    if point == "between":  # the shard's output is published, its vectors not yet
        hold()
    def first_then_hold():
        for chunk in chunks:
            yield chunk
            hold()  # the first records are in the upload: half an entry
    return publish(self, name, first_then_hold())  # no size: a streamed upload, not one PUT

store.VectorStore.publish = held_publish
from jobs.cli import main
sys.argv = ["embed-etl", *sys.argv[1:]]
main()
"""


def _texts(i: int) -> list[str]:
    return tiny_texts(ROWS, seed=i)


def _start(args: list[str], point: str | None, marker: Path) -> subprocess.Popen:
    env = {**os.environ, "HOLD_MARKER": str(marker), "HOLD_POINT": point or ""}
    code = (
        HOLD
        if point
        else "import sys; from jobs.cli import main; sys.argv[0] = 'embed-etl'; main()"
    )
    return start_job([sys.executable, "-c", code, *args], env=env)


def _crash_and_rerun(run_args: list[str], output_writing, half_entry, tmp_path: Path) -> dict:
    """The three kills in turn, each on a fresh start of the same command, then the rerun."""
    for point in (None, "store", "between"):
        marker = tmp_path / f"held-{point}"
        proc = _start(run_args, point, marker)
        if point is None:
            kill_when(proc, output_writing, "an output being written")
        else:
            kill_when(proc, marker.exists, f"the hold at {point}")
        if point == "store":
            assert half_entry()  # the kill left half a segment behind, where nobody reads it
    rerun = _start(run_args, None, tmp_path / "unused")
    stdout, stderr = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, stderr
    return json.loads(stdout)


def _ids(tables) -> list[int]:
    return sorted(i for t in tables for i in t.column("id").to_pylist())


def _verify(output: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "jobs.cli", "verify", "-o", output, "--json", "--recompute", "10"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["status"] == "ok" and report["recompute"]["rows"] == 10


def test_sigkill_at_three_points_with_a_store_then_a_rerun_on_disk(tmp_path, tiny_model):
    for i in range(SHARDS):
        write_shard(
            tmp_path / "in" / f"p{i}.parquet", _texts(i), ids=range(i * ROWS, (i + 1) * ROWS)
        )
    out = tmp_path / "out"
    args = ["run", str(tmp_path / "in"), "-o", str(out), "--model", str(tiny_model)]
    args += ["--no-progress", "--batch-size", "4"]
    segments = out / "_embed_etl" / "vectors" / "segments"
    summary = _crash_and_rerun(
        args,
        lambda: bool(list(out.glob(".*inprogress*"))),
        lambda: bool(list(segments.glob(".*.seg.inprogress-*"))),
        tmp_path,
    )
    assert summary["status"] == "ok"
    assert _ids(pq.read_table(out / f"p{i}.parquet") for i in range(SHARDS)) == list(
        range(SHARDS * ROWS)
    )
    assert [p.name for p in segments.iterdir() if p.name.startswith(".")] == []  # no half entry
    assert not list(out.glob(".*inprogress*"))
    assert not list((out / "_embed_etl" / "claims").glob("*.claim"))
    _assert_store_readable(str(out))
    _verify(str(out))
    _assert_vectors_of_a_plain_run(tmp_path, tiny_model, out)


def _assert_store_readable(output: str) -> None:
    from tests.test_s3 import _assert_store_whole

    _assert_store_whole(output)


def _assert_vectors_of_a_plain_run(tmp_path: Path, tiny_model: Path, out: Path) -> None:
    plain = tmp_path / "plain"
    args = ["run", str(tmp_path / "in"), "-o", str(plain), "--model", str(tiny_model)]
    proc = _start([*args, "--no-reuse", "--no-progress"], None, tmp_path / "unused")
    assert proc.wait(timeout=300) == 0, proc.stderr.read()
    for i in range(SHARDS):
        a = pq.read_table(out / f"p{i}.parquet").column("emb_mean").to_pylist()
        b = pq.read_table(plain / f"p{i}.parquet").column("emb_mean").to_pylist()
        assert (
            max(float(np.abs(np.subtract(x, y)).max()) for x, y in zip(a, b, strict=True)) <= 1e-5
        )


def test_sigkill_at_three_points_with_a_store_then_a_rerun_on_s3(tmp_path, tiny_model, s3_server):
    import boto3

    s3 = boto3.client("s3")
    bucket = f"reuse-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    for i in range(SHARDS):
        path = write_shard(
            tmp_path / "in" / f"p{i}.parquet", _texts(i), ids=range(i * ROWS, (i + 1) * ROWS)
        )
        s3.put_object(Bucket=bucket, Key=f"corpus/p{i}.parquet", Body=path.read_bytes())
    out = f"s3://{bucket}/vectors"
    args = ["run", f"s3://{bucket}/corpus/", "-o", out, "--model", str(tiny_model)]
    args += ["--no-progress", "--batch-size", "4"]

    def uploading() -> bool:
        found = s3.list_multipart_uploads(Bucket=bucket).get("Uploads", ())
        return any(u["Key"].startswith("vectors/p") for u in found)

    def half_segment() -> bool:
        found = s3.list_multipart_uploads(Bucket=bucket).get("Uploads", ())
        return any(u["Key"].startswith("vectors/_embed_etl/vectors/segments/") for u in found)

    summary = _crash_and_rerun(args, uploading, half_segment, tmp_path)
    assert summary["status"] == "ok"
    tables = []
    for i in range(SHARDS):
        body = s3.get_object(Bucket=bucket, Key=f"vectors/p{i}.parquet")["Body"].read()
        tables.append(pq.read_table(pa_buffer(body)))
    assert _ids(tables) == list(range(SHARDS * ROWS))
    assert not s3.list_multipart_uploads(Bucket=bucket).get("Uploads")  # no half entry left
    listed = s3.list_objects_v2(Bucket=bucket, Prefix="vectors/_embed_etl/claims/")
    assert not listed.get("Contents")
    _assert_store_readable(out)
    _verify(out)


def pa_buffer(body: bytes):
    import pyarrow as pa

    return pa.BufferReader(body)
