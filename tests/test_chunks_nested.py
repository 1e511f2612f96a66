"""--chunk-layout nested: a row per input row, its passages as lists, equal to the rows layout
regrouped."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from tests.conftest import run_ok, tiny_texts, write_shard

SPANS = pa.list_(pa.struct([("start", pa.int32()), ("end", pa.int32())]))


def _documents() -> list[str | None]:
    """Texts of one to many passages, a null one, an empty one, one over the byte limit."""
    docs: list[str | None] = [
        " ".join(t.split()[: 3 + 7 * (i % 6)])
        for i, t in enumerate(tiny_texts(40, seed=5, longest=60))
    ]
    docs[1], docs[2], docs[9] = None, "", "the cat " * 200
    docs[5] = " ".join(tiny_texts(30, seed=6, longest=12))  # passages over 3 windows or more
    return docs


def _both(tmp_path, tiny_model, docs, **kw) -> tuple[pa.Table, pa.Table]:
    """The rows and the nested outputs of the same job; windows of 8 passage rows, so that a
    row's passages run across windows."""
    write_shard(tmp_path / "in" / "a.parquet", docs)
    tables = []
    for layout in ("rows", "nested"):
        out = tmp_path / layout
        run_ok(tmp_path / "in", out, tiny_model, chunk_layout=layout, sort_window=8, **kw)
        tables.append(pq.read_table(out / "a.parquet"))
    return tables[0], tables[1]


def _regrouped(rows: pa.Table, nested: pa.Table, vectors: list[str]) -> None:
    """The nested table is the rows table, a list per input row: ids, spans, n_tokens and
    every vector (bytes) in order; null lists where the rows layout has its one null row."""
    assert nested.column("id").to_pylist() == list(dict.fromkeys(rows.column("id").to_pylist()))
    present = rows.filter(pc.is_valid(rows.column("chunk")))
    nulls = set(rows.filter(pc.is_null(rows.column("chunk"))).column("id").to_pylist())
    spans = nested.column("chunk_spans")
    assert [
        i
        for i, s in zip(nested.column("id").to_pylist(), spans.to_pylist(), strict=True)
        if s is None
    ] == sorted(nulls)
    flat = pc.list_flatten(spans).combine_chunks()
    assert flat.field("start").to_pylist() == present.column("chunk_start").to_pylist()
    assert flat.field("end").to_pylist() == present.column("chunk_end").to_pylist()
    lengths = pc.list_value_length(spans).to_pylist()
    for name in ["n_tokens", "truncated", *vectors]:
        column = nested.column(name)
        assert pc.list_value_length(column).to_pylist() == lengths, name
        flat = pc.list_flatten(column).combine_chunks()
        assert flat.equals(present.column(name).combine_chunks()), name


@pytest.mark.parametrize("dtype", ["float32", "float16", "int8"])
def test_nested_is_the_rows_layout_regrouped(tmp_path, tiny_model, dtype):
    docs = _documents()
    rows, nested = _both(
        tmp_path,
        tiny_model,
        docs,
        chunk_tokens=6,
        chunk_overlap=2,
        output_dtype=dtype,
        max_text_bytes=1500,
    )
    assert nested.num_rows == len(docs) < rows.num_rows
    vector = {"float32": pa.float32(), "float16": pa.float16(), "int8": pa.int8()}[dtype]
    assert nested.schema.field("emb_mean").type == pa.list_(pa.list_(vector, 32))
    assert nested.schema.field("emb_mean").type.value_type == rows.schema.field("emb_mean").type
    assert nested.schema.field("chunk_spans").type == SPANS
    assert nested.schema.field("n_tokens").type == pa.list_(pa.int32())
    assert "chunk" not in nested.schema.names
    _regrouped(rows, nested, ["emb_mean"])
    spans = nested.column("chunk_spans").to_pylist()
    assert spans[1] is None and spans[9] is None  # null, and over --max-text-bytes
    assert spans[2] == [{"start": 0, "end": 0}]  # empty: one passage
    # Windows of 8 passage rows: rows' passages run across one and across two boundaries.
    ids = rows.column("id").to_numpy()
    first, last = np.searchsorted(ids, ids, "left"), np.searchsorted(ids, ids, "right") - 1
    first, last = first // 8, last // 8
    assert (last - first == 1).any() and (last - first >= 2).any()


def test_a_kept_text_is_the_whole_text(tmp_path, tiny_model):
    docs = _documents()
    rows, nested = _both(
        tmp_path, tiny_model, docs, chunk_tokens=5, keep_columns=("text",), max_text_bytes=1500
    )
    _regrouped(rows, nested, ["emb_mean"])
    assert nested.column("text").to_pylist() == docs  # over the byte limit too, as without
    assert nested.schema.field("text").type == pa.string()


def test_verify_passes_and_catches_a_bad_span_and_a_missing_passage(tmp_path, tiny_model):
    from etl import verify_job

    docs = [" ".join(["the cat sat on the mat"] * (1 + i % 5)) for i in range(30)]
    docs[3] = None
    write_shard(tmp_path / "in" / "a.parquet", docs)
    out = tmp_path / "out"
    run_ok(tmp_path / "in", out, tiny_model, chunk_tokens=8, chunk_layout="nested")
    report = verify_job(str(out))
    assert report.ok, report.to_dict()
    path = out / "a.parquet"
    good = pq.read_table(path)

    def planted(column: str, values: list) -> list[str]:
        at = good.schema.get_field_index(column)
        table = good.set_column(at, column, pa.array(values, good.schema.field(column).type))
        pq.write_table(table.replace_schema_metadata(good.schema.metadata), path)
        return [p for s in verify_job(str(out)).shards for p in s.problems]

    spans = good.column("chunk_spans").to_pylist()
    spans[5][-1]["end"] += 1000
    assert any("spans outside" in p for p in planted("chunk_spans", spans))
    spans = good.column("chunk_spans").to_pylist()
    spans[6][1]["start"] = spans[6][1]["end"] - 1  # a gap after the first passage
    assert any("spans outside" in p for p in planted("chunk_spans", spans))
    vectors = good.column("emb_mean").to_pylist()
    del vectors[7][1]  # a passage's vector missing
    assert any("emb_mean" in p and "chunk_spans" in p for p in planted("emb_mean", vectors))
    table = good
    for name in ("chunk_spans", "n_tokens", "truncated", "emb_mean"):  # a whole passage missing
        values = good.column(name).to_pylist()
        del values[8][1]
        at = table.schema.get_field_index(name)
        table = table.set_column(at, name, pa.array(values, good.schema.field(name).type))
    pq.write_table(table, path)
    missing = [p for s in verify_job(str(out)).shards for p in s.problems]
    assert missing and all("spans outside" in p for p in missing), missing
    spans = good.column("chunk_spans").to_pylist()
    spans[3] = [{"start": 0, "end": 0}]  # a passage for a null text
    assert any("null" in p for p in planted("chunk_spans", spans))
    pq.write_table(good, path)
    assert verify_job(str(out)).ok


def test_worker_processes_write_the_rows_one_process_writes(tmp_path, tiny_model):
    for i in range(3):
        texts = tiny_texts(200, seed=i, longest=40)
        write_shard(tmp_path / "in" / f"p{i}.parquet", texts, ids=range(i * 200, (i + 1) * 200))
    kw = {"chunk_tokens": 8, "chunk_overlap": 2, "chunk_layout": "nested", "sort_window": 64}
    run_ok(tmp_path / "in", tmp_path / "one", tiny_model, **kw)
    run_ok(tmp_path / "in", tmp_path / "two", tiny_model, workers=2, **kw)
    for i in range(3):
        one = (tmp_path / "one" / f"p{i}.parquet").read_bytes()
        assert one == (tmp_path / "two" / f"p{i}.parquet").read_bytes()
        assert pq.read_metadata(tmp_path / "one" / f"p{i}.parquet").num_rows == 200


def test_chunk_layout_needs_chunk_tokens_and_a_known_value(tmp_path, tiny_model):
    from click.testing import CliRunner

    from etl import ConfigError
    from jobs.cli import cli

    write_shard(tmp_path / "in" / "a.parquet", ["the cat"])
    with pytest.raises(ConfigError, match="--chunk-layout goes with --chunk-tokens"):
        run_ok(tmp_path / "in", tmp_path / "out", tiny_model, chunk_layout="nested")
    with pytest.raises(ConfigError, match="--chunk-layout lists: expected one of rows, nested"):
        run_ok(tmp_path / "in", tmp_path / "out", tiny_model, chunk_tokens=4, chunk_layout="lists")
    args = ["run", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--chunk-tokens", "4"]
    result = CliRunner().invoke(cli, [*args, "--chunk-layout", "lists"])
    assert result.exit_code == 2 and "--chunk-layout" in result.output
    assert "Traceback" not in result.output


def test_a_resumed_job_never_mixes_layouts(tmp_path, tiny_model):
    """A job is resumed in the layout it began with (rows, the default, is not written into
    the identity, so the fingerprints of rows outputs stay as they were)."""
    from etl.errors import OutputConflictError

    write_shard(tmp_path / "in" / "a.parquet", ["the cat sat on the mat"] * 3)
    run_ok(tmp_path / "in", tmp_path / "out", tiny_model, chunk_tokens=4)
    with pytest.raises(OutputConflictError, match=r"passages\.layout: none -> nested"):
        run_ok(tmp_path / "in", tmp_path / "out", tiny_model, chunk_tokens=4, chunk_layout="nested")
