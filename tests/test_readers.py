"""What each reader sees in an output file, and the query of docs/output.md, run as written."""

from __future__ import annotations

import re

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import REPO, run_ok, tiny_texts, write_shard

DIM = 32  # the tiny model's width


def _documented_query() -> str:
    """The dense SQL block of docs/output.md, as a reader would copy it."""
    blocks = re.findall(
        r"^```sql\n(.*?)^```", (REPO / "docs" / "output.md").read_text(), re.S | re.M
    )
    (sql,) = [block for block in blocks if "emb_model" in block]
    return sql


@pytest.fixture(scope="module")
def output(tmp_path_factory, tiny_model):
    root = tmp_path_factory.mktemp("readers")
    for i in range(2):
        write_shard(
            root / "in" / f"p{i}.parquet", tiny_texts(40, seed=i), ids=range(i * 40, i * 40 + 40)
        )
    run_ok(root / "in", root / "out", tiny_model, normalize=True)
    return root / "out"


def test_pyarrow_reads_fixed_size_lists(output):
    assert pq.read_schema(output / "p0.parquet").field("emb_mean").type == pa.list_(
        pa.float32(), DIM
    )


def test_polars_reads_arrays(output):
    pl = pytest.importorskip("polars")
    assert pl.read_parquet(output / "p0.parquet").schema["emb_mean"] == pl.Array(pl.Float32, DIM)


def test_duckdb_reads_lists_and_the_documented_query_works(output):
    """Parquet has no fixed-size list, and DuckDB does not read the Arrow schema pyarrow and
    polars use: it sees FLOAT[], so array functions need the cast docs/output.md shows."""
    duckdb = pytest.importorskip("duckdb")
    con = duckdb.connect()
    files = str(output / "*.parquet")
    described = con.execute(f"DESCRIBE SELECT * FROM read_parquet('{files}')").fetchall()
    kinds = {row[0]: row[1] for row in described}
    assert kinds["emb_mean"] == "FLOAT[]"
    query = np.array(pq.read_table(output / "p1.parquet").column("emb_mean")[7].as_py(), np.float32)
    # The documented query, with this model's column, width and files:
    sql = _documented_query()
    for placeholder in ("emb_model", "[384]", "'vectors/*.parquet'", "$query"):
        assert placeholder in sql, placeholder
    sql = sql.replace("emb_model", "emb_mean").replace("[384]", f"[{DIM}]")
    sql = sql.replace("'vectors/*.parquet'", f"'{files}'")
    top = con.execute(sql, {"query": query.tolist()}).fetchall()
    assert top[0][0] == 47 and top[0][1] == pytest.approx(1.0, abs=1e-6)  # the row itself
    assert [score for _, score in top] == sorted((score for _, score in top), reverse=True)
