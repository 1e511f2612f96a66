"""Every supported architecture, saved as a sentence-transformers model with its own recipe:
the job with only --model (and --prompt-name) gives what SentenceTransformer.encode gives; layer
k is hidden_states[k] from k layers; chunking and every output dtype work."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from tests.conftest import job_config, run_ok, write_shard
from tests.models import CASE_IDS, CASES, save_sentence_transformer, texts

PROMPT_NAMES = {"bert": "query", "modernbert": "query", "qwen3": "query"}  # others: none/default
TEXTS = texts(24, seed=5)


@pytest.fixture(scope="module", params=CASES, ids=CASE_IDS)
def case(request, tmp_path_factory):
    """(case, the saved sentence-transformers model's directory), built once per module."""
    path = tmp_path_factory.mktemp(request.param.arch)
    return request.param, save_sentence_transformer(request.param, path)


def _vectors(path, column):
    return np.array(pq.read_table(path).column(column).to_pylist(), dtype=np.float32)


def _shard(tmp_path):
    return write_shard(tmp_path / "in" / "s.parquet", TEXTS)


def test_default_run_equals_sentence_transformers_encode(tmp_path, case):
    from sentence_transformers import SentenceTransformer

    spec, model_dir = case
    prompt_name = PROMPT_NAMES.get(spec.arch)
    extra = {"prompt_name": prompt_name} if prompt_name else {}
    # One huge token budget: rows of 1 to 60 words share batches, padded to the longest.
    run_ok(_shard(tmp_path), tmp_path / "out", model_dir, batch_tokens=1 << 16, **extra)
    ours = _vectors(tmp_path / "out" / "s.parquet", "emb_model")
    st = SentenceTransformer(str(model_dir), device="cpu")
    theirs = st.encode(TEXTS, prompt_name=prompt_name, batch_size=32, convert_to_numpy=True)
    assert ours.shape == theirs.shape
    assert np.abs(ours - theirs).max() <= 1e-4, spec.arch
    meta = pq.read_schema(tmp_path / "out" / "s.parquet").metadata
    assert meta[b"embed_etl.recipe"] == b"model"
    column = json.loads(meta[b"embed_etl.columns"])[0]
    assert column["pooling"] == "+".join(spec.pooling) and column["source"] == "model"
    assert column["dense"] == bool(spec.dense)
    if prompt_name or spec.default_prompt:
        expected = st.prompts[prompt_name or spec.default_prompt]
        assert meta[b"embed_etl.prompt"].decode() == expected
        n_tokens = pq.read_table(tmp_path / "out" / "s.parquet").column("n_tokens").to_pylist()
        seen = st.tokenizer([expected + t for t in TEXTS])["input_ids"]
        assert n_tokens == [len(ids) for ids in seen]  # what the model saw, prompt included


def test_layer_k_is_hidden_states_k_from_k_layers(tmp_path, case):
    """Token vectors of --layer 1 equal the whole model's hidden_states[1] for each row alone,
    and the model that made them has one layer."""
    from transformers import AutoModel

    from etl.model.locate import resolve_model
    from etl.spec import build_output_spec
    from etl.stages.compute.encoder import Encoder, _find_layers

    _, model_dir = case
    run_ok(_shard(tmp_path), tmp_path / "out", model_dir, poolings=("tokens",), layers=(1,))
    table = pq.read_table(tmp_path / "out" / "s.parquet")
    full = AutoModel.from_pretrained(model_dir).eval()
    with torch.inference_mode():
        for ids, vectors in zip(
            table.column("token_ids").to_pylist(),
            table.column("emb_tokens_layer1").to_pylist(),
            strict=True,
        ):
            hidden = full(torch.tensor([ids]), output_hidden_states=True).hidden_states[1][0]
            np.testing.assert_allclose(np.array(vectors), hidden.numpy(), atol=1e-5, rtol=0)
    info = resolve_model(str(model_dir))
    cfg = job_config("x", "y", model_dir, poolings=("mean",), layers=(1,))
    encoder = Encoder(build_output_spec(cfg, info, "float32"), cfg, torch.device("cpu"))
    assert len(_find_layers(encoder.model, 1)) == 1 < info.num_layers


def test_chunking_and_every_output_dtype(tmp_path, case):
    _, model_dir = case
    shard = _shard(tmp_path)
    base = run_ok(shard, tmp_path / "f32", model_dir, max_length=16)
    exact = _vectors(tmp_path / "f32" / "s.parquet", "emb_model")
    chunk = run_ok(shard, tmp_path / "chunk", model_dir, max_length=16, long_text="chunk")
    assert chunk["chunked_rows"] == base["truncated_rows"] > 0
    table = pq.read_table(tmp_path / "chunk" / "s.parquet")
    short = np.array([n <= 16 for n in table.column("n_tokens").to_pylist()])
    chunked = _vectors(tmp_path / "chunk" / "s.parquet", "emb_model")
    assert np.array_equal(chunked[short], exact[short])  # one window: exactly truncate's
    assert np.isfinite(chunked).all()
    run_ok(shard, tmp_path / "f16", model_dir, max_length=16, output_dtype="float16")
    half = _vectors(tmp_path / "f16" / "s.parquet", "emb_model")
    np.testing.assert_allclose(half, exact, atol=2e-3 * max(1.0, np.abs(exact).max()), rtol=1e-3)
    for dtype, kind in (("int8", np.int8), ("binary", np.uint8)):
        run_ok(shard, tmp_path / dtype, model_dir, max_length=16, output_dtype=dtype)
        stored = pq.read_schema(tmp_path / dtype / "s.parquet").field("emb_model").type
        width = exact.shape[1] // 8 if dtype == "binary" else exact.shape[1]
        assert stored.list_size == width and stored.value_type.to_pandas_dtype() == kind
    signs = np.array(
        pq.read_table(tmp_path / "binary" / "s.parquet").column("emb_model").to_pylist(), np.uint8
    )
    assert np.array_equal(np.unpackbits(signs, axis=1).astype(bool), exact > 0)


def test_padding_is_on_the_side_the_tokenizer_says(case):
    from etl.model.locate import resolve_model
    from etl.stages.read.batching import pad
    from etl.stages.read.tokenizer import layout, load_tokenizer

    spec, model_dir = case
    found = layout(load_tokenizer(resolve_model(str(model_dir))))
    assert found.left_padding == (spec.padding_side == "left")
    ids, mask = pad([[7, 8, 9], [7]], found.pad_id, left=found.left_padding)
    assert mask.tolist() == (
        [[1, 1, 1], [0, 0, 1]] if found.left_padding else [[1, 1, 1], [1, 0, 0]]
    )
    assert ids[1].tolist().count(7) == 1 and found.pad_id in ids[1].tolist()
