"""The model's recipe and the user's options: what wins, what is refused, token vectors of the
packaged model, hub ids resolved from the cache."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from tests.conftest import REPO, run_cli, run_ok, write_shard
from tests.models import CASES, save_sentence_transformer, texts

BERT = next(c for c in CASES if c.arch == "bert")  # cls, Dense, Normalize, prompts
DISTILBERT = next(c for c in CASES if c.arch == "distilbert")  # no pooler


@pytest.fixture(scope="module")
def bert_st(tmp_path_factory):
    return save_sentence_transformer(BERT, tmp_path_factory.mktemp("bert-st"))


def _copy(model_dir, tmp_path):
    target = tmp_path / "model"
    shutil.copytree(model_dir, target)
    return target


def test_explicit_options_override_the_recipe(tmp_path, bert_st):
    write_shard(tmp_path / "in" / "s.parquet", texts(8))
    run_ok(tmp_path / "in", tmp_path / "recipe", bert_st)
    run_ok(tmp_path / "in", tmp_path / "mine", bert_st, poolings=("cls",))
    run_ok(tmp_path / "in", tmp_path / "raw", bert_st, normalize=False)
    recipe = np.array(pq.read_table(tmp_path / "recipe" / "s.parquet").column("emb_model"))
    mine = pq.read_table(tmp_path / "mine" / "s.parquet")
    raw = np.array(pq.read_table(tmp_path / "raw" / "s.parquet").column("emb_model").to_pylist())
    assert np.array(recipe.tolist()).shape[1] == 24  # the Dense projection: 32 -> 24
    cls = np.array(mine.column("emb_cls").to_pylist())
    assert cls.shape[1] == 32  # --pooling: no Dense
    assert not np.allclose(np.linalg.norm(cls, axis=1), 1.0)  # nor the model's Normalize
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1.0)  # --no-normalize wins
    normed = raw / np.linalg.norm(raw, axis=1, keepdims=True)
    np.testing.assert_allclose(np.array(recipe.tolist()), normed, atol=1e-6)
    meta = json.loads(
        pq.read_schema(tmp_path / "mine" / "s.parquet").metadata[b"embed_etl.columns"]
    )
    assert meta[0]["source"] == "options" and meta[0]["dense"] is False


def test_prompts_by_text_by_name_and_unknown_names(tmp_path, bert_st):
    write_shard(tmp_path / "in" / "s.parquet", texts(6))
    run_ok(tmp_path / "in", tmp_path / "named", bert_st, prompt_name="query")
    run_ok(tmp_path / "in", tmp_path / "text", bert_st, prompt="query: ")
    run_ok(tmp_path / "in", tmp_path / "none", bert_st)
    vec = {
        n: np.array(pq.read_table(tmp_path / n / "s.parquet").column("emb_model").to_pylist())
        for n in ("named", "text", "none")
    }
    np.testing.assert_array_equal(vec["named"], vec["text"])
    assert not np.allclose(vec["named"], vec["none"])
    fingerprints = {
        n: pq.read_schema(tmp_path / n / "s.parquet").metadata[b"embed_etl.fingerprint"]
        for n in vec
    }
    assert fingerprints["named"] == fingerprints["text"] != fingerprints["none"]
    result = run_cli(tmp_path, bert_st, "--prompt-name", "title")
    assert result.exit_code == 2
    assert "--prompt-name title" in result.stderr and "passage, query" in result.stderr
    both = run_cli(tmp_path, bert_st, "--prompt", "x", "--prompt-name", "query")
    assert both.exit_code == 2 and "give one of the two" in both.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "breakage,message",
    [
        ("invalid json", "cannot read"),
        ("unknown module", "sentence_transformers.models.LSTM"),
        ("foreign module", "my_package.Pooler"),
        ("missing pooling", "1_Pooling/config.json not found"),
        ("unknown pooling", "pooling mode ['median']"),
    ],
)
def test_a_broken_recipe_is_one_clear_line_and_nothing_is_written(
    tmp_path, bert_st, breakage, message
):
    model = _copy(bert_st, tmp_path)
    modules = json.loads((model / "modules.json").read_text())
    if breakage == "invalid json":
        (model / "modules.json").write_text("[{")
    elif breakage in ("unknown module", "foreign module"):
        kind = {"unknown module": "sentence_transformers.models.LSTM"}.get(breakage)
        modules[1]["type"] = kind or "my_package.Pooler"
        (model / "modules.json").write_text(json.dumps(modules))
    elif breakage == "missing pooling":
        (model / "1_Pooling" / "config.json").unlink()
    else:
        (model / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode": "median"}))
    write_shard(tmp_path / "in" / "s.parquet", texts(3))
    result = run_cli(tmp_path, model)
    assert result.exit_code == 1, result.output
    assert message in result.stderr and f"--model {model}" in result.stderr
    assert len(result.stderr.strip().splitlines()) <= 2  # the error, and nothing else but a log
    assert not (tmp_path / "out").exists()


def test_pooler_on_a_model_without_one_is_refused(tmp_path):
    model = save_sentence_transformer(DISTILBERT, tmp_path / "m")
    write_shard(tmp_path / "in" / "s.parquet", texts(3))
    result = run_cli(tmp_path, model, "--pooling", "pooler")
    assert result.exit_code == 1 and "--pooling pooler" in result.stderr
    assert not (tmp_path / "out" / "s.parquet").exists()


def test_a_model_with_its_own_code_needs_trust_remote_code(tmp_path, bert_st, monkeypatch):
    model = _copy(bert_st, tmp_path)
    config = json.loads((model / "config.json").read_text())
    config["auto_map"] = {"AutoModel": "modeling_custom.CustomBert"}
    config["architectures"] = ["CustomBert"]
    (model / "config.json").write_text(json.dumps(config))
    (model / "modeling_custom.py").write_text(
        "from transformers import BertModel\n\n\nclass CustomBert(BertModel):\n    pass\n"
    )
    write_shard(tmp_path / "in" / "s.parquet", texts(4))
    refused = run_cli(tmp_path, model)
    assert refused.exit_code == 1 and "--trust-remote-code" in refused.stderr
    assert not (tmp_path / "out").exists()
    monkeypatch.setenv("HF_MODULES_CACHE", str(tmp_path / "hf-modules"))
    trusted = run_cli(tmp_path, model, "--trust-remote-code")
    assert trusted.exit_code == 0, trusted.output
    run_ok(tmp_path / "in", tmp_path / "plain", bert_st)
    np.testing.assert_allclose(
        np.array(pq.read_table(tmp_path / "out" / "s.parquet").column("emb_model").to_pylist()),
        np.array(pq.read_table(tmp_path / "plain" / "s.parquet").column("emb_model").to_pylist()),
        atol=1e-6,
    )


def test_a_hub_id_resolves_from_the_cache_with_its_modules(tmp_path, bert_st):
    """The Hugging Face cache layout, offline: models--org--name/snapshots/<commit>/..."""
    cache = tmp_path / "hub"
    repo = cache / "models--acme--tiny-st"
    commit = "0123456789abcdef0123456789abcdef01234567"
    shutil.copytree(bert_st, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    write_shard(tmp_path / "in" / "s.parquet", texts(5))
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    args = ["run", str(tmp_path / "in"), "-o", str(tmp_path / "hub-out"), "--model", "acme/tiny-st"]
    proc = subprocess.run(
        [sys.executable, "-m", "jobs.cli", *args, "--no-progress", "--num-workers", "0"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    run_ok(tmp_path / "in", tmp_path / "dir-out", bert_st)
    hub = pq.read_table(tmp_path / "hub-out" / "s.parquet")
    local = pq.read_table(tmp_path / "dir-out" / "s.parquet")
    assert hub.schema.field("emb_model").type.list_size == 24  # the Dense module was found
    np.testing.assert_array_equal(
        np.array(hub.column("emb_model").to_pylist()),
        np.array(local.column("emb_model").to_pylist()),
    )


def test_token_vectors_of_the_packaged_model(tmp_path, real_model):
    """Each row's token vectors equal hidden_states[-1] of the row run alone; ids are the
    tokenizer's; the seed sentence gives 9 vectors of 384."""
    from transformers import AutoModel, AutoTokenizer

    rows = [
        "Here is some text to encode",
        "Hi",
        "Parquet stores data by column, so reading one column skips the others. " * 8,
        "A cat.",
    ]
    write_shard(tmp_path / "in" / "s.parquet", rows)
    run_ok(tmp_path / "in", tmp_path / "out", real_model, poolings=("tokens",), batch_size=4)
    table = pq.read_table(tmp_path / "out" / "s.parquet")
    tokenizer = AutoTokenizer.from_pretrained(real_model)
    model = AutoModel.from_pretrained(real_model).eval()
    vectors = table.column("emb_tokens").to_pylist()
    assert np.array(vectors[0]).shape == (9, 384)
    with torch.inference_mode():
        for text, ids, got in zip(
            rows, table.column("token_ids").to_pylist(), vectors, strict=True
        ):
            expected_ids = tokenizer(text, truncation=True, max_length=256)["input_ids"]
            assert ids == expected_ids
            hidden = model(torch.tensor([ids])).last_hidden_state[0]
            np.testing.assert_allclose(np.array(got), hidden.numpy(), atol=1e-5, rtol=0)
    assert table.schema.field("emb_tokens").type.value_type.list_size == 384


def test_token_vectors_of_a_chunked_row_cover_each_token_once(tmp_path, bert_st):
    from transformers import AutoTokenizer

    long = " ".join(texts(1, seed=3)[0] for _ in range(8))  # well over one 16-token window
    write_shard(tmp_path / "in" / "s.parquet", [long, "the cat"])
    run_ok(
        tmp_path / "in",
        tmp_path / "out",
        bert_st,
        poolings=("tokens",),
        long_text="chunk",
        chunk_overlap=3,
        max_length=16,
        prompt_name="passage",
        output_dtype="float16",
    )
    table = pq.read_table(tmp_path / "out" / "s.parquet")
    tokenizer = AutoTokenizer.from_pretrained(bert_st)
    whole = tokenizer("passage: " + long)["input_ids"]  # no truncation: every token once
    ids = table.column("token_ids").to_pylist()
    assert ids[0] == whole and ids[1] == tokenizer("passage: the cat")["input_ids"]
    vectors = table.column("emb_tokens").to_pylist()
    assert [len(v) for v in vectors] == [len(i) for i in ids]
    assert table.schema.field("emb_tokens").type.value_type.value_type == "halffloat"


def test_do_lower_case_in_the_recipe_lower_cases_like_sentence_transformers(tmp_path):
    from sentence_transformers import SentenceTransformer

    roberta = next(c for c in CASES if c.arch == "roberta")  # byte-level BPE: case-sensitive
    model = save_sentence_transformer(roberta, tmp_path / "m")
    settings_file = model / "sentence_bert_config.json"
    settings = json.loads(settings_file.read_text())
    settings_file.write_text(json.dumps({**settings, "do_lower_case": True}))
    rows = [t.upper() for t in texts(6, seed=2)]
    write_shard(tmp_path / "in" / "s.parquet", rows)
    run_ok(tmp_path / "in", tmp_path / "out", model)
    ours = np.array(pq.read_table(tmp_path / "out" / "s.parquet").column("emb_model").to_pylist())
    st = SentenceTransformer(str(model), device="cpu")
    assert st[0].do_lower_case
    np.testing.assert_allclose(ours, st.encode(rows), atol=1e-4, rtol=0)
    lower = [t.lower() for t in rows]
    np.testing.assert_allclose(ours, st.encode(lower), atol=1e-4, rtol=0)  # case is gone
