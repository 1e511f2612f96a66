"""embed-etl verify finds what went wrong in an output, shard by shard, and passes a clean one."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from jobs.cli import cli
from tests.conftest import run_ok, tiny_texts, write_shard

SHARDS = 3


@pytest.fixture(scope="module")
def job(tmp_path_factory, tiny_model):
    """A normalized job over three shards (a null text and duplicate ids included)."""
    root = tmp_path_factory.mktemp("verify")
    for i in range(SHARDS):
        texts = tiny_texts(30, seed=i)
        texts[4] = None
        ids = [i * 100 + k for k in range(30)]
        ids[7] = ids[6]  # duplicates are kept as they are
        write_shard(root / "in" / f"p{i}.parquet", texts, ids=ids)
    run_ok(root / "in", root / "out", tiny_model, normalize=True)
    return root


def _verify(out, *extra):
    result = CliRunner().invoke(cli, ["verify", "-o", str(out), "--json", *extra])
    return result.exit_code, json.loads(result.stdout)


def _rewrite(path, change):
    table = pq.read_table(path)
    changed = change(table)
    pq.write_table(changed.replace_schema_metadata(table.schema.metadata), path)


def _vectors(table, fn):
    """The table with its emb_mean vectors passed through fn (a (N, D) array)."""
    column = table.column("emb_mean").combine_chunks()
    values = column.values.to_numpy(zero_copy_only=False).reshape(len(column), -1).copy()
    values = fn(values)
    array = pa.FixedSizeListArray.from_arrays(
        pa.array(values.reshape(-1), pa.float32()), values.shape[1], mask=column.is_null()
    )
    return table.set_column(table.schema.get_field_index("emb_mean"), "emb_mean", array)


def _nan(v):
    v[3, 5] = np.nan
    return v


def _long(v):
    v[2] *= 1.5
    return v


def _drop_row(t):
    return pa.concat_tables([t.slice(0, 10), t.slice(11)])


def _repeat_row(t):
    return pa.concat_tables([t.slice(0, 10), t.slice(9)])


PLANTED = {
    "a missing row": (_drop_row, "rows: input 30, output 29"),
    "a duplicated row": (_repeat_row, "rows: input 30, output 31"),
    "two rows swapped": (lambda t: t.take([0, 1, 3, 2, *range(4, 30)]), "ids out of place: 2"),
    "a NaN": (lambda t: _vectors(t, _nan), "1 vectors with NaN or infinity"),
    "a non-unit vector": (lambda t: _vectors(t, _long), "1 vectors not of unit length"),
    "a vector of the wrong width": (
        lambda t: _vectors(t, lambda v: v[:, :31]),
        "emb_mean: fixed_size_list<element: float>[31], expected",
    ),
}


def test_a_clean_output_checks_out(job):
    code, report = _verify(job / "out")
    assert code == 0 and report["status"] == "ok", report
    assert report["shards"] == SHARDS and report["rows"] == SHARDS * 30


@pytest.mark.parametrize("planted", sorted(PLANTED))
def test_each_planted_problem_is_found_and_named(job, tmp_path, planted):
    change, message = PLANTED[planted]
    out = tmp_path / "out"
    shutil.copytree(job / "out", out)
    _rewrite(out / "p1.parquet", change)
    code, report = _verify(out)
    assert code == 3, report
    assert [p["input"] for p in report["problems"]] == ["p1.parquet"]
    assert any(message in problem for problem in report["problems"][0]["problems"]), report


def test_a_file_of_another_job_and_a_truncated_file_are_found(job, tmp_path, tiny_model):
    out = tmp_path / "out"
    shutil.copytree(job / "out", out)
    run_ok(job / "in", tmp_path / "other", tiny_model, normalize=True, max_length=16)
    shutil.copy(tmp_path / "other" / "p0.parquet", out / "p0.parquet")
    data = (out / "p2.parquet").read_bytes()
    (out / "p2.parquet").write_bytes(data[: len(data) // 2])
    code, report = _verify(out)
    assert code == 3
    found = {p["input"]: " ".join(p["problems"]) for p in report["problems"]}
    assert "made by another job" in found["p0.parquet"]
    assert "not a readable Parquet file" in found["p2.parquet"]


def test_sample_checks_vectors_on_a_fraction_but_every_id(job, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(job / "out", out)
    _rewrite(out / "p0.parquet", lambda t: _vectors(t, _nan))  # row 3: not in every 4th row
    _rewrite(out / "p1.parquet", lambda t: t.take([1, 0, *range(2, 30)]))
    code, report = _verify(out, "--sample", "0.25")
    found = {p["input"]: " ".join(p["problems"]) for p in report["problems"]}
    assert set(found) == {"p1.parquet"} and "ids out of place" in found["p1.parquet"]
    assert code == 3


def test_a_job_of_token_vectors_passes_and_a_token_off_unit_length_is_found(tmp_path, tiny_model):
    texts = tiny_texts(20)
    texts[3] = None
    write_shard(tmp_path / "in" / "s.parquet", texts)
    run_ok(tmp_path / "in", tmp_path / "out", tiny_model, poolings=("tokens",), normalize=True)
    code, report = _verify(tmp_path / "out")
    assert code == 0 and report["status"] == "ok", report

    def stretch(table):
        rows = table.column("emb_tokens").to_pylist()
        rows[5][0] = [3 * x for x in rows[5][0]]
        column = pa.array(rows, table.schema.field("emb_tokens").type)
        return table.set_column(table.schema.get_field_index("emb_tokens"), "emb_tokens", column)

    _rewrite(tmp_path / "out" / "s.parquet", stretch)
    code, report = _verify(tmp_path / "out")
    (problem,) = report["problems"][0]["problems"]
    assert code == 3 and "emb_tokens: 1 token vectors not of unit length" in problem
