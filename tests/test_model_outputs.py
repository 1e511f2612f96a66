"""The numbers: each pooling and layer against the plain transformers model, row by row."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from etl.contract import Batch
from etl.model.facts import read_model_info
from etl.spec import build_output_spec
from etl.stages.compute.encoder import Encoder
from tests.conftest import TINY_LAYERS, job_config, run_ok, tiny_texts, write_shard

REAL_TEXTS = [
    "Here is some text to encode",
    "Hi",
    "Parquet stores data by column, so reading one column skips the bytes of the others. " * 6,
    "A cat.",
    "Sentence embeddings map texts with similar meaning to nearby points in a vector space. " * 3,
]


def _reference(model_dir, texts: list[str], max_length: int) -> dict:
    """Each text alone (no padding) through the full model, with every hidden state."""
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir).eval()
    rows = []
    with torch.inference_mode():
        for text in texts:
            enc = tokenizer(text, truncation=True, max_length=max_length, return_tensors="pt")
            out = model(**enc, output_hidden_states=True)
            rows.append(
                {
                    "pooler": out.pooler_output[0],
                    "last": out.last_hidden_state[0],
                    "hidden": [h[0] for h in out.hidden_states],
                }
            )
    return {"rows": rows, "num_layers": model.config.num_hidden_layers}


def _expected(ref: dict, pooling: str, layer: int) -> np.ndarray:
    out = []
    for row in ref["rows"]:
        tokens = row["hidden"][layer]  # (T, H)
        if pooling == "pooler":
            out.append(row["pooler"])
        elif pooling == "cls":
            out.append(tokens[0])
        elif pooling == "mean":
            out.append(tokens.mean(0))
        else:
            out.append(tokens.max(0).values)
    return torch.stack(out).numpy()


@pytest.fixture(params=["tiny", "real"])
def model_case(request, tiny_model, real_model):
    if request.param == "tiny":
        return tiny_model, tiny_texts(12, seed=3), 64
    return real_model, REAL_TEXTS, 256


def _run(tmp_path, model_dir, texts, **kw):
    shard = write_shard(
        tmp_path / "in" / "s.parquet", texts, ids=[100 + i for i in range(len(texts))]
    )
    run_ok(shard, tmp_path / "out", model_dir, **kw)
    return pq.read_table(tmp_path / "out" / "s.parquet")


def test_every_pooling_and_layer_matches_the_full_model(tmp_path, model_case):
    """cls == last_hidden_state[:, 0]; layer k == hidden_states[k]; padding changes nothing.

    All rows go into one batch (huge token budget), so short rows sit next to much longer ones.
    """
    model_dir, texts, max_length = model_case
    ref = _reference(model_dir, texts, max_length)
    top = ref["num_layers"]
    layers = (0, 1, top - 1, -1)
    table = _run(
        tmp_path / "a",
        model_dir,
        texts,
        poolings=("mean", "cls", "max"),
        layers=layers,
        batch_tokens=1 << 20,
        batch_size=len(texts),
    )
    assert table.column("id").to_pylist() == [100 + i for i in range(len(texts))]
    for pooling in ("mean", "cls", "max"):
        for k in (0, 1, top - 1, top):
            name = f"emb_{pooling}" if k == top else f"emb_{pooling}_layer{k}"
            got = np.array(table.column(name).to_pylist(), dtype=np.float32)
            np.testing.assert_allclose(
                got, _expected(ref, pooling, k), atol=1e-5, rtol=0, err_msg=name
            )
    # cls of the last layer is literally last_hidden_state[:, 0]
    cls = np.array(table.column("emb_cls").to_pylist(), dtype=np.float32)
    np.testing.assert_allclose(
        cls, torch.stack([r["last"][0] for r in ref["rows"]]).numpy(), atol=1e-5
    )

    pooled = _run(
        tmp_path / "b",
        model_dir,
        texts,
        poolings=("pooler",),
        batch_tokens=1 << 20,
        batch_size=len(texts),
    )
    got = np.array(pooled.column("emb_pooler").to_pylist(), dtype=np.float32)
    np.testing.assert_allclose(got, _expected(ref, "pooler", top), atol=1e-5, rtol=0)


def test_layer_k_runs_only_k_layers_and_gives_hidden_states_k(model_case):
    model_dir, texts, max_length = model_case
    info = read_model_info(model_dir, str(model_dir))
    k = 2
    cfg = job_config("x", "y", model_dir, layers=(k,), poolings=("mean",))
    spec = build_output_spec(cfg, info, "float32")
    encoder = Encoder(spec, cfg, torch.device("cpu"))
    layers = encoder.model.encoder.layer
    assert len(layers) == k < info.num_layers
    calls = []
    for layer in layers:
        layer.register_forward_hook(lambda *_: calls.append(1))
    from etl.stages.read.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(info)
    ids = torch.tensor(tokenizer(texts[:1], truncation=True, max_length=max_length)["input_ids"])
    batch = Batch(0, 0, torch.arange(1), ids, torch.ones_like(ids))
    got = encoder.encode(batch)[f"emb_mean_layer{k}"].numpy()
    assert len(calls) == k
    ref = _reference(model_dir, texts[:1], max_length)
    np.testing.assert_allclose(got, _expected(ref, "mean", k), atol=1e-5, rtol=0)


def test_row_alone_equals_row_among_much_longer_rows(tiny_model):
    info = read_model_info(tiny_model, "tiny")
    cfg = job_config("x", "y", tiny_model, poolings=("mean", "max", "cls"))
    encoder = Encoder(build_output_spec(cfg, info, "float32"), cfg, torch.device("cpu"))
    short = torch.tensor([[2, 5, 3]])
    alone = encoder.encode(Batch(0, 0, torch.arange(1), short, torch.ones_like(short)))
    ids = torch.zeros((4, 60), dtype=torch.long)
    mask = torch.zeros_like(ids)
    ids[:, :60] = torch.randint(5, 17, (4, 60))
    mask[1:] = 1
    ids[0, :3], mask[0, :3] = short[0], 1
    ids[0, 3:] = 0
    together = encoder.encode(Batch(0, 0, torch.arange(4), ids, mask))
    for name in alone:
        torch.testing.assert_close(together[name][0:1], alone[name], atol=1e-5, rtol=0)


def test_normalize_gives_unit_vectors(tmp_path, tiny_model):
    texts = tiny_texts(10, seed=1)
    table = _run(tmp_path, tiny_model, texts, normalize=True, poolings=("mean", "max"))
    for name in ("emb_mean", "emb_max"):
        vectors = np.array(table.column(name).to_pylist())
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-6)


def test_tiny_model_really_has_the_layers_the_tests_assume(tiny_model):
    assert read_model_info(tiny_model, "tiny").num_layers == TINY_LAYERS
