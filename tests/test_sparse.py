"""Sparse and multi-vector models: the job with only --model DIR gives what sentence-transformers'
encode gives, in columns every reader reads, with every guarantee of the dense ones."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests import sparse_models as sm
from tests.conftest import REPO, kill_when, records, run_cli, run_ok, start_job, write_shard

ROWS = sm.texts(48, seed=11)  # 1 to 60 words: very different lengths
BIG_BATCHES = {"batch_tokens": 65_536}  # a window in one batch: short rows padded beside long


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("sparse-models")
    return {
        "max": sm.build_splade_max(root / "max"),
        "sum": sm.build_splade_sum(root / "sum"),
        "free": sm.build_inference_free(root / "free"),
        "mv": sm.build_multi_vector(root / "mv"),
    }


@pytest.fixture(scope="module")
def shard(tmp_path_factory):
    root = tmp_path_factory.mktemp("sparse-in")
    write_shard(root / "in" / "s.parquet", ROWS)
    return root / "in"


def _sparse_rows(path, column="emb_sparse") -> list[tuple[np.ndarray, np.ndarray]]:
    rows = pq.read_table(path).column(column).to_pylist()
    return [
        (np.array([p["index"] for p in r], np.int64), np.array([p["value"] for p in r]))
        for r in rows
    ]


def _assert_same_sparse(got, expected, tolerance=1e-4):
    assert len(got) == len(expected)
    for (index, values), (ref_index, ref_values) in zip(got, expected, strict=True):
        assert np.array_equal(index, ref_index)
        assert np.all(values > 0)
        np.testing.assert_allclose(values, ref_values, rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize(
    "name,task,options,side",
    [
        ("max", None, {}, "encode"),
        ("max", None, BIG_BATCHES, "encode"),
        ("sum", None, {}, "encode"),
        ("sum", None, BIG_BATCHES, "encode"),
        ("free", None, {}, "encode"),  # the Router's default route: its document side
        ("free", None, BIG_BATCHES, "encode"),
        ("free", "query", {}, "query"),  # the static lookup
        ("free", "document", {}, "document"),
    ],
)
def test_a_sparse_model_embeds_as_its_encode_does(
    tmp_path, models, shard, name, task, options, side
):
    run_ok(shard, tmp_path / "out", models[name], task=task, **options)
    got = _sparse_rows(tmp_path / "out" / "s.parquet")
    _assert_same_sparse(got, sm.sparse_reference(models[name], ROWS, side))
    if name == "max":  # max_active_dims, from the model's configuration
        assert max(len(index) for index, _ in got) == sm.MAX_ACTIVE_DIMS


def test_prompt_name_query_takes_the_query_route_as_encode_query_does(tmp_path, models, shard):
    run_ok(shard, tmp_path / "out", models["free"], prompt_name="query")
    got = _sparse_rows(tmp_path / "out" / "s.parquet")
    _assert_same_sparse(got, sm.sparse_reference(models["free"], ROWS, "query"))


@pytest.mark.parametrize("k", [3, sm.MAX_ACTIVE_DIMS, 25])
def test_sparse_top_k_is_max_active_dims(tmp_path, models, shard, k):
    run_ok(shard, tmp_path / "out", models["sum"], sparse_top_k=k)
    got = _sparse_rows(tmp_path / "out" / "s.parquet")
    _assert_same_sparse(got, sm.sparse_reference(models["sum"], ROWS, max_active_dims=k))
    assert max(len(index) for index, _ in got) == k


def test_float16_halves_the_values_and_the_column_is_sorted_pairs(tmp_path, models, shard):
    run_ok(shard, tmp_path / "out", models["sum"], output_dtype="float16")
    path = tmp_path / "out" / "s.parquet"
    kind = pq.read_schema(path).field("emb_sparse").type
    assert kind == pa.list_(pa.struct([("index", pa.int32()), ("value", pa.float16())]))
    got = _sparse_rows(path)
    reference = sm.sparse_reference(models["sum"], ROWS)
    _assert_same_sparse(got, reference, tolerance=2e-3)
    meta = pq.read_metadata(path).metadata
    assert meta[b"embed_etl.kind"] == b"sparse"
    assert meta[b"embed_etl.vocab_size"] == str(len(sm.VOCAB)).encode()
    assert meta[b"embed_etl.backend"].startswith(b"transformers")  # its MLM head


@pytest.mark.parametrize(
    "task,side", [(None, "encode"), ("document", "document"), ("query", "query")]
)
@pytest.mark.parametrize("options", [{}, BIG_BATCHES])
def test_a_multi_vector_model_embeds_as_its_encode_does(
    tmp_path, models, shard, task, side, options
):
    run_ok(shard, tmp_path / "out", models["mv"], task=task, **options)
    table = pq.read_table(tmp_path / "out" / "s.parquet")
    assert table.schema.field("emb_multivector").type == pa.list_(pa.list_(pa.float32(), sm.MV_DIM))
    got = table.column("emb_multivector").to_pylist()
    ids = table.column("token_ids").to_pylist()
    reference = sm.multi_vector_reference(models["mv"], ROWS, side)
    for vectors, row_ids, expected in zip(got, ids, reference, strict=True):
        vectors = np.array(vectors, np.float32)
        assert len(vectors) == len(expected) == len(row_ids)  # the same count per row
        np.testing.assert_allclose(vectors, expected, atol=1e-4)
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    punctuation = {sm.VOCAB.index(p) for p in sm.PUNCT}
    kept = {i for row in ids for i in row}
    assert (kept & punctuation) if task == "query" else not (kept & punctuation)
    if task == "query":
        assert {len(r) for r in ids} == {sm.MV_QUERY_LENGTH}


def test_multi_vector_float16(tmp_path, models, shard):
    run_ok(shard, tmp_path / "out", models["mv"], output_dtype="float16")
    column = pq.read_table(tmp_path / "out" / "s.parquet").column("emb_multivector")
    assert column.type == pa.list_(pa.list_(pa.float16(), sm.MV_DIM))
    reference = sm.multi_vector_reference(models["mv"], ROWS, "encode")
    for vectors, expected in zip(column.to_pylist(), reference, strict=True):
        np.testing.assert_allclose(np.array(vectors, np.float32), expected, atol=2e-3)


@pytest.mark.parametrize(
    "model,options,named",
    [
        ("max", ["--pooling", "cls"], "--pooling cls"),
        ("max", ["--layer", "1"], "--layer"),
        ("max", ["--output-dtype", "int8"], "--output-dtype int8"),
        ("max", ["--truncate-dim", "8"], "--truncate-dim"),
        ("max", ["--long-text", "chunk"], "--long-text chunk"),
        ("max", ["--store", "elsewhere"], "--store"),
        ("mv", ["--sparse-top-k", "4"], "--sparse-top-k"),
        ("mv", ["--pooling", "mean"], "--pooling mean"),
        ("mv", ["--task", "query", "--max-length", "12"], "--max-length 12"),
        ("dense", ["--sparse-top-k", "4"], "--sparse-top-k"),
        ("dense", ["--task", "query"], "--task query"),
    ],
)
def test_nonsense_combinations_are_usage_errors_naming_the_option(
    tmp_path, models, tiny_model, model, options, named
):
    write_shard(tmp_path / "in" / "s.parquet", ROWS[:4])
    result = run_cli(tmp_path, tiny_model if model == "dense" else models[model], *options)
    assert result.exit_code == 2, result.output
    (line,) = [x for x in result.stderr.splitlines() if x.startswith("embed-etl: error:")]
    assert named in line and "Error" not in line and "Traceback" not in result.stderr
    assert not (tmp_path / "out" / "s.parquet").exists()


def test_a_sparse_job_keeps_no_vector_store_and_a_rerun_does_nothing(tmp_path, models, shard):
    first = run_ok(shard, tmp_path / "out", models["max"])
    assert first["texts_embedded"] == len(ROWS)
    assert not (tmp_path / "out" / "_embed_etl" / "vectors").exists()
    again = run_ok(shard, tmp_path / "out", models["max"])
    assert again["rows"] == 0 and again["shards_skipped"] == 1


def test_workers_embed_every_row_once(tmp_path, models):
    for i in range(4):
        write_shard(tmp_path / "in" / f"p{i}.parquet", ROWS, ids=range(i * 100, i * 100 + 48))
    run_ok(tmp_path / "in", tmp_path / "out", models["sum"], workers=2)
    reference = sm.sparse_reference(models["sum"], ROWS)
    for i in range(4):
        path = tmp_path / "out" / f"p{i}.parquet"
        assert pq.read_table(path).column("id").to_pylist() == list(range(i * 100, i * 100 + 48))
        _assert_same_sparse(_sparse_rows(path), reference)


def test_polars_and_duckdb_read_the_sparse_column_and_the_documented_dot_product_works(
    tmp_path, models, shard
):
    import re

    duckdb = pytest.importorskip("duckdb")
    pl = pytest.importorskip("polars")
    run_ok(shard, tmp_path / "out", models["sum"])
    path = tmp_path / "out" / "s.parquet"
    frame = pl.read_parquet(path)
    assert frame.schema["emb_sparse"] == pl.List(
        pl.Struct({"index": pl.Int32, "value": pl.Float32})
    )
    stored = _sparse_rows(path)
    query_index, query_values = stored[5]
    blocks = re.findall(
        r"^```sql\n(.*?)^```", (REPO / "docs" / "output.md").read_text(), re.S | re.M
    )
    (sql,) = [block for block in blocks if "emb_sparse" in block]
    assert "'vectors/*.parquet'" in sql and "$query" in sql
    sql = sql.replace("'vectors/*.parquet'", f"'{path}'")
    query = [
        {"index": int(i), "value": float(v)} for i, v in zip(query_index, query_values, strict=True)
    ]
    top = duckdb.connect().execute(sql, {"query": query}).fetchall()
    scores = {}
    for row, (index, values) in enumerate(stored):
        weights = dict(zip(index.tolist(), values.tolist(), strict=True))
        scores[row] = sum(
            weights.get(int(i), 0.0) * float(v)
            for i, v in zip(query_index, query_values, strict=True)
        )
    best = sorted(scores, key=scores.get, reverse=True)[: len(top)]
    assert [r[0] for r in top] == best  # ids are the row numbers here
    assert [r[1] for r in top] == pytest.approx([scores[r] for r in best], rel=1e-5)


def _plant(path, row, pairs):
    """Rewrite the output with one row's sparse vector replaced, its metadata kept."""
    table = pq.read_table(path)
    rows = table.column("emb_sparse").to_pylist()
    rows[row] = pairs
    column = pa.array(rows, table.schema.field("emb_sparse").type)
    table = table.set_column(table.schema.get_field_index("emb_sparse"), "emb_sparse", column)
    pq.write_table(table.replace_schema_metadata(pq.read_schema(path).metadata), path)


@pytest.mark.parametrize(
    "fault,pairs,found",
    [
        ("unsorted", [{"index": 9, "value": 1.0}, {"index": 3, "value": 1.0}], "not sorted"),
        ("repeated", [{"index": 3, "value": 1.0}, {"index": 3, "value": 2.0}], "not sorted"),
        ("outside", [{"index": len(sm.VOCAB), "value": 1.0}], "outside the vocabulary"),
        ("negative", [{"index": 4, "value": -1.0}], "not finite and positive"),
    ],
)
def test_verify_passes_and_catches_a_planted_fault(tmp_path, models, shard, fault, pairs, found):
    from etl import verify_job

    run_ok(shard, tmp_path / "out", models["max"])
    assert verify_job(str(tmp_path / "out")).ok
    _plant(tmp_path / "out" / "s.parquet", 7, pairs)
    report = verify_job(str(tmp_path / "out"))
    problems = [p for s in report.shards for p in s.problems]
    assert not report.ok and any(found in p and "emb_sparse" in p for p in problems), problems


def test_verify_checks_each_token_vector_of_a_multi_vector_column(tmp_path, models, shard):
    from etl import verify_job

    run_ok(shard, tmp_path / "out", models["mv"])
    assert verify_job(str(tmp_path / "out")).ok
    path = tmp_path / "out" / "s.parquet"
    table = pq.read_table(path)
    rows = table.column("emb_multivector").to_pylist()
    rows[3][1] = [2.0 * x for x in rows[3][1]]  # one token's vector no longer of unit length
    column = pa.array(rows, table.schema.field("emb_multivector").type)
    index = table.schema.get_field_index("emb_multivector")
    table = table.set_column(index, "emb_multivector", column)
    pq.write_table(table.replace_schema_metadata(pq.read_schema(path).metadata), path)
    report = verify_job(str(tmp_path / "out"))
    problems = [p for s in report.shards for p in s.problems]
    assert any("emb_multivector: 1 token vectors not of unit length" in p for p in problems)


def test_sigkill_then_rerun_is_exactly_once_with_a_sparse_model(tmp_path, models):
    texts = sm.texts(2000, seed=4)
    for i in range(3):
        write_shard(tmp_path / "in" / f"p{i}.parquet", texts, ids=range(i * 2000, (i + 1) * 2000))
    out = tmp_path / "out"
    args = [sys.executable, "-m", "jobs.cli", "run", str(tmp_path / "in"), "-o", str(out)]
    args += ["--model", str(models["max"]), "--no-progress"]
    proc = start_job([*args, "--batch-size", "2"])
    kill_when(
        proc,
        lambda: any(r.status.value == "done" for r in records(out)) and list(out.glob(".*")),
        "one shard done and the next in progress",
    )
    done = subprocess.run(args, cwd=REPO, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert 1 <= summary["shards_skipped"] <= 2  # what the killed run finished is not redone
    reference = sm.sparse_reference(models["max"], texts)
    for i in range(3):
        path = out / f"p{i}.parquet"
        assert pq.read_table(path).column("id").to_pylist() == list(range(i * 2000, (i + 1) * 2000))
        _assert_same_sparse(_sparse_rows(path), reference)
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("name,task", [("free", "query"), ("sum", None)])
def test_verify_recompute_embeds_sampled_rows_again_with_the_jobs_task_and_top_k(
    tmp_path, models, shard, name, task
):
    from etl import verify_job

    run_ok(shard, tmp_path / "out", models[name], task=task, sparse_top_k=5)
    report = verify_job(str(tmp_path / "out"), recompute=12, device="cpu")
    assert report.ok, report.to_dict()
    (check,) = report.recompute.columns
    assert check.rows == 12 and check.min_cosine > 0.9999 and check.max_abs_diff < 1e-4
