"""The packaged all-MiniLM-L6-v2: tokenizer ids and parity with sentence-transformers."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from etl.model.locate import resolve_model
from etl.stages.read.tokenizer import load_tokenizer
from tests.conftest import run_ok


def test_default_model_tokenizer_ids():
    tokenizer = load_tokenizer(resolve_model(None))
    ids = tokenizer("Here is some text to encode")["input_ids"]
    assert ids == [101, 2182, 2003, 2070, 3793, 2000, 4372, 16044, 102]


def test_default_model_is_found_offline_with_its_facts():
    info = resolve_model(None)
    assert (info.num_layers, info.hidden_size, info.default_max_length) == (6, 384, 256)


def _sample(corpus, n_per_shard: int = 20) -> pa.Table:
    """Rows from every shard of the shared corpus, the longest of each shard included."""
    parts = []
    for path in sorted(corpus.glob("*.parquet")):
        table = pq.read_table(path)
        lengths = np.array([len(t) for t in table.column("text").to_pylist()])
        picks = sorted({*range(n_per_shard - 1), int(lengths.argmax())})
        parts.append(table.take(picks))
    return pa.concat_tables(parts)


def test_mean_normalized_matches_sentence_transformers(tmp_path, corpus, real_model):
    from sentence_transformers import SentenceTransformer

    sample = _sample(corpus)  # 16 shards x 20 rows = 320 rows, a few over 256 tokens
    assert sample.num_rows >= 200
    src = tmp_path / "in"
    src.mkdir()
    half = sample.num_rows // 2
    pq.write_table(sample.slice(0, half), src / "a.parquet")
    pq.write_table(sample.slice(half), src / "b.parquet")
    summary = run_ok(src, tmp_path / "out", num_workers=2)  # the model's recipe: mean, Normalize
    assert summary["rows"] == sample.num_rows
    assert summary["truncated_rows"] > 0  # the comparison covers truncation too

    out = pa.concat_tables(
        [pq.read_table(tmp_path / "out" / n) for n in ("a.parquet", "b.parquet")]
    )
    assert out.column("id").to_pylist() == sample.column("id").to_pylist()
    ours = np.array(out.column("emb_model").to_pylist(), dtype=np.float32)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)  # normalized

    st = SentenceTransformer(str(real_model), device="cpu")
    theirs = st.encode(sample.column("text").to_pylist(), batch_size=32)
    cosine = (ours * theirs).sum(1) / (
        np.linalg.norm(ours, axis=1) * np.linalg.norm(theirs, axis=1)
    )
    assert cosine.min() >= 0.99999, f"worst row {cosine.argmin()}: {cosine.min()}"
