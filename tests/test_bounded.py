"""Memory bounded by the job, not by its data: a text over --max-text-bytes is never read into
Python, hashed or tokenized; its row gets null vectors and its shard record says why."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from tests.conftest import records, run_ok, tiny_texts, write_shard


@pytest.mark.parametrize(
    ("reuse", "keep"),
    [(True, ()), (False, ()), (True, ("text",))],
    ids=["store", "no-reuse", "kept"],
)
def test_a_text_over_max_text_bytes_gets_null_vectors_and_a_reason(
    tmp_path, tiny_model, reuse, keep
):
    from etl.verify import verify_job

    texts = tiny_texts(40, seed=3)
    huge = " ".join(["the cat sat on the mat"] * 200)  # 4,599 bytes
    texts[17], texts[30] = huge, None
    write_shard(tmp_path / "in" / "a.parquet", texts, ids=[1000 + i for i in range(40)])
    options = {"max_text_bytes": 4096, "no_reuse": not reuse, "keep_columns": keep}
    summary = run_ok(tmp_path / "in", tmp_path / "out", tiny_model, **options)
    assert summary["refused_rows"] == 1 and summary["null_rows"] == 1
    embedded = len(set(texts) - {None, huge}) if reuse else 38  # each text once, or every row
    assert summary["rows"] == 40 and summary["texts_embedded"] == embedded
    (record,) = records(tmp_path / "out")
    assert record.refused_rows == 1
    assert record.refused == ["row 17 (id 1017): 4,599 bytes of text, over --max-text-bytes 4,096"]

    table = pq.read_table(tmp_path / "out" / "a.parquet")
    vectors = table.column("emb_mean").to_pylist()
    assert vectors[17] is None and vectors[30] is None
    assert table.column("n_tokens")[17].as_py() is None
    if keep:  # a kept text column is written back whole, the refused text too
        assert table.column("text").to_pylist() == texts
    # The other rows are what a run without the huge text gives.
    write_shard(tmp_path / "in2" / "a.parquet", [t for i, t in enumerate(texts) if i != 17])
    run_ok(tmp_path / "in2", tmp_path / "out2", tiny_model)
    plain = pq.read_table(tmp_path / "out2" / "a.parquet")
    expected = plain.column("emb_mean").to_pylist()
    others = [v for i, v in enumerate(vectors) if i != 17]
    assert all((a is None) == (b is None) for a, b in zip(others, expected, strict=True))
    assert np.allclose(
        np.array([v for v in others if v is not None]),
        np.array([v for v in expected if v is not None]),
        atol=1e-6,
    )

    # Recomputed with the job's own --max-text-bytes; the refused row is not sampled.
    report = verify_job(str(tmp_path / "out"), recompute=40)
    assert report.ok, json.dumps(report.to_dict())[:2000]


def test_verify_expects_refused_rows_in_a_dictionary_text_column(tmp_path, tiny_model):
    import pyarrow as pa

    from etl.verify import verify_job

    texts = tiny_texts(12, seed=4)
    texts[5] = "a b c " * 400
    table = pa.table({"id": list(range(12)), "text": pa.array(texts).dictionary_encode()})
    (tmp_path / "in").mkdir()
    pq.write_table(table, tmp_path / "in" / "a.parquet")
    summary = run_ok(tmp_path / "in", tmp_path / "out", tiny_model, max_text_bytes=1000)
    assert summary["refused_rows"] == 1
    report = verify_job(str(tmp_path / "out"))
    assert report.ok, json.dumps(report.to_dict())[:2000]


def test_a_segment_too_large_for_the_journal_is_read_by_its_index(
    tmp_path, tiny_model, monkeypatch
):
    """Segments of more than ENTRY_HASHES records are told without their hashes (no worker or
    entry holds a whole shard's): a later job still finds every text, `store check` reads them,
    gc keeps what the kept run stored."""
    from etl.reuse import publish, shard
    from etl.reuse.collect import collect
    from etl.reuse.journal import Journal
    from etl.reuse.plan import open_store
    from tests.test_store import _cli, _same_as_plain, _shards, _texts

    monkeypatch.setattr(publish, "ENTRY_HASHES", 8)
    monkeypatch.setattr(shard, "ENTRY_HASHES", 8)
    store = str(tmp_path / "store")
    old, kept = _texts(30, "old"), _texts(40, "kept")
    _shards(tmp_path / "a", old, 1)
    _shards(tmp_path / "b", kept, 2)  # 20 texts a shard: over 8
    run_ok(tmp_path / "a", tmp_path / "out-a", tiny_model, store=store)
    run_ok(tmp_path / "b", tmp_path / "out-b", tiny_model, store=store)
    journal = Journal(open_store("--store", store).storage)
    entries = [journal.read(seq) for seq in journal.listed()]
    told = [item for e in entries if e and e.kind == "add" for item in e.header["segments"]]
    assert told and all(item[4:] == [0] for item in told)  # none carries its hashes
    assert all(len(e.payload) == 0 for e in entries if e and e.kind == "add")

    # Run b is kept; what it stored is known only from its segments' own indexes.
    report = collect(open_store("--store", store), keep_runs=1, grace=0)
    assert (report.records_before, report.records_after) == (70, 40)  # `old` goes
    assert _cli("store", "check", store).returncode == 0
    summary = run_ok(tmp_path / "b", tmp_path / "out-b2", tiny_model, store=store)
    assert summary["texts_embedded"] == 0 and summary["rows_reused_from"]["earlier"] == 40
    run_ok(tmp_path / "b", tmp_path / "plain", tiny_model, no_reuse=True)
    _same_as_plain(tmp_path / "out-b2", tmp_path / "plain")


def test_s3_parts_grow_so_that_no_output_below_5_tib_runs_out_of_parts():
    from etl.storage.multipart import MAX_OBJECT, MAX_PART, MAX_PARTS, part_size

    for first in (5 << 20, 8 << 20):  # S3's smallest part, and the default
        sizes = [part_size(n, first) for n in range(1, MAX_PARTS + 1)]
        assert sum(sizes) >= MAX_OBJECT and max(sizes) <= MAX_PART
        assert sizes[0] == first and sum(sizes[:125]) == 125 * first  # 1 GB: the first size


def test_an_s3_upload_sends_growing_parts(s3_server, monkeypatch):
    import boto3

    from etl.storage import multipart, open_storage

    s3, bucket = boto3.client("s3"), "growing-parts"
    s3.create_bucket(Bucket=bucket)

    monkeypatch.setattr(multipart, "PARTS_PER_DOUBLING", 2)
    storage = open_storage(f"s3://{bucket}/out")  # parts of 64 KiB first (the test server's)
    data = np.random.default_rng(0).bytes(10 * (64 << 10) + 100)
    upload = storage.upload("big.bin")
    for start in range(0, len(data), 50_000):
        upload.target.write(data[start : start + 50_000])
    upload.publish()
    assert len(upload.parts) == 6  # 64, 64, 128, 128, 256 KiB and the rest; 11 at a fixed size
    assert s3.get_object(Bucket=bucket, Key="out/big.bin")["Body"].read() == data
