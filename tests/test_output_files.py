"""Output files: exact schema, metadata, readers, row order whatever the batching."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import run_ok, tiny_texts, write_shard


def _job(tmp_path, tiny_model, inputs, out="out", **kw):
    return run_ok(inputs, tmp_path / out, tiny_model, **kw)


def test_exact_schema_and_metadata(tmp_path, tiny_model):
    texts = tiny_texts(9)
    shard = write_shard(
        tmp_path / "in" / "s.parquet", texts, lang=pa.array(["en"] * 9), score=pa.array(range(9))
    )
    _job(
        tmp_path,
        tiny_model,
        [shard],
        keep_columns=("lang", "text"),
        poolings=("mean", "cls"),
        layers=(-1, 1),
        normalize=True,
        max_length=32,
    )
    path = tmp_path / "out" / "s.parquet"
    vector = pa.list_(pa.float32(), 32)
    expected = pa.schema(
        [
            ("id", pa.int64()),
            ("lang", pa.string()),
            ("text", pa.string()),
            ("n_tokens", pa.int32()),
            ("truncated", pa.bool_()),
            ("emb_mean", vector),
            ("emb_mean_layer1", vector),
            ("emb_cls", vector),
            ("emb_cls_layer1", vector),
        ]
    )
    schema = pq.read_schema(path)
    assert schema.equals(expected, check_metadata=False), schema
    meta = {
        k.decode(): v.decode() for k, v in schema.metadata.items() if k.startswith(b"embed_etl.")
    }
    assert meta["embed_etl.model"] == str(tiny_model)
    assert len(meta["embed_etl.model_config_sha256"]) == 64
    assert meta["embed_etl.pooling"] == "mean,cls" and meta["embed_etl.layers"] == "3,1"
    assert meta["embed_etl.normalize"] == "true" and meta["embed_etl.max_length"] == "32"
    assert meta["embed_etl.dtype"] == "float32" and meta["embed_etl.version"]
    assert meta["embed_etl.output_dtype"] == "float32" and meta["embed_etl.hidden_size"] == "32"
    columns = json.loads(meta["embed_etl.columns"])
    assert [(c["name"], c["pooling"], c["layer"], c["dim"]) for c in columns] == [
        ("emb_mean", "mean", 3, 32),
        ("emb_mean_layer1", "mean", 1, 32),
        ("emb_cls", "cls", 3, 32),
        ("emb_cls_layer1", "cls", 1, 32),
    ]
    assert {c["source"] for c in columns} == {"options"} and meta["embed_etl.recipe"] == "default"
    assert meta["embed_etl.long_text"] == "truncate"
    table = pq.read_table(path)
    assert (
        table.column("text").to_pylist() == texts and table.column("lang").to_pylist() == ["en"] * 9
    )


def test_polars_reads_vectors_as_arrays(tmp_path, tiny_model):
    pl = pytest.importorskip("polars")
    shard = write_shard(tmp_path / "in" / "s.parquet", tiny_texts(5))
    _job(tmp_path, tiny_model, [shard])
    frame = pl.read_parquet(tmp_path / "out" / "s.parquet")
    assert frame.schema["emb_mean"] == pl.Array(pl.Float32, 32)
    assert frame.schema["id"] == pl.Int64 and frame.height == 5


def test_order_and_values_do_not_depend_on_batching_or_workers(tmp_path, tiny_model):
    """Tiny windows and batches, several workers and shards: same rows, same order, same values."""
    shards = [
        write_shard(
            tmp_path / "in" / f"p{i}.parquet",
            tiny_texts(57, seed=i),
            ids=list(range(i * 100, i * 100 + 57)),
        )
        for i in range(3)
    ]
    _job(
        tmp_path,
        tiny_model,
        [tmp_path / "in"],
        out="big",
        sort_window=4096,
        batch_size=256,
        normalize=True,
    )
    _job(
        tmp_path,
        tiny_model,
        [tmp_path / "in"],
        out="small",
        sort_window=7,
        batch_size=3,
        batch_tokens=64,
        num_workers=2,
        normalize=True,
    )
    for shard in shards:
        name = shard.name
        big = pq.read_table(tmp_path / "big" / name)
        small = pq.read_table(tmp_path / "small" / name)
        assert small.column("id").to_pylist() == pq.read_table(shard).column("id").to_pylist()
        assert big.column("id").to_pylist() == small.column("id").to_pylist()
        np.testing.assert_allclose(
            np.array(small.column("emb_mean").to_pylist()),
            np.array(big.column("emb_mean").to_pylist()),
            atol=1e-5,
            rtol=0,
        )
        assert pq.ParquetFile(tmp_path / "small" / name).metadata.num_row_groups > 1


def test_outputs_mirror_the_input_tree_and_leave_no_temp_files(tmp_path, tiny_model):
    write_shard(tmp_path / "in" / "a" / "x.parquet", tiny_texts(3))
    write_shard(tmp_path / "in" / "b" / "x.parquet", tiny_texts(4))
    _job(tmp_path, tiny_model, [tmp_path / "in"])
    files = sorted(
        p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*.parquet")
    )
    assert files == ["a/x.parquet", "b/x.parquet"]
    assert not list((tmp_path / "out").rglob("*inprogress*"))
