"""An honest identity: whatever changes the vectors changes the fingerprint, by content.

A model trained again and saved over the old one (same architecture, so every file keeps its
size), a tokenizer file edited, a Dense layer retrained: the rerun into the same output refuses,
naming what changed, and --overwrite re-embeds with the new files.
"""

from __future__ import annotations

import json
import os
import re
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest

from etl.model import digests
from tests.conftest import run_cli, write_shard
from tests.models import CASES, save_sentence_transformer, texts


@pytest.fixture(scope="module")
def st_model(tmp_path_factory):
    """The tiny BERT of tests.models saved by sentence-transformers: cls + Dense + Normalize."""
    case = next(c for c in CASES if c.arch == "bert" and c.dense)
    return save_sentence_transformer(case, tmp_path_factory.mktemp("st-bert"))


@pytest.fixture
def model(tmp_path, st_model):
    copy = tmp_path / "model"
    shutil.copytree(st_model, copy)
    return copy


def _perturb_safetensors(path, scale=0.5):
    """New values written over the old ones in place, header untouched: the file keeps its
    size to the byte, as when a fine-tuned model of the same architecture is saved over it."""
    data = bytearray(path.read_bytes())
    header_len = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + header_len])
    rng = np.random.default_rng(7)
    for name, entry in header.items():
        if name == "__metadata__" or entry["dtype"] != "F32":
            continue
        begin, end = (8 + header_len + o for o in entry["data_offsets"])
        values = np.frombuffer(bytes(data[begin:end]), np.float32)
        data[begin:end] = (
            (values + scale * rng.standard_normal(values.size)).astype(np.float32).tobytes()
        )
    size = path.stat().st_size
    path.write_bytes(bytes(data))
    assert path.stat().st_size == size


def _vectors(out):
    return np.array(pq.read_table(out / "a.parquet").column("emb_model").to_pylist(), np.float32)


def _job(tmp_path, model, *extra):
    return run_cli(tmp_path, model, *extra)


def _first_run(tmp_path, model):
    write_shard(tmp_path / "in" / "a.parquet", texts(40))
    result = _job(tmp_path, model)
    assert result.exit_code == 0, result.output
    return _vectors(tmp_path / "out") if (model / "modules.json").exists() else None


@pytest.mark.parametrize(
    "change, named",
    [
        ("weights", "model_weights"),
        ("tokenizer", "model_tokenizer"),
        ("dense", "recipe.dense"),
    ],
)
def test_a_retrained_file_of_the_same_size_is_refused_then_overwrite_re_embeds(
    tmp_path, model, change, named
):
    before = _first_run(tmp_path, model)
    record = json.loads((tmp_path / "out" / "_embed_etl" / "job.json").read_text())
    if change == "weights":
        _perturb_safetensors(model / "model.safetensors")
    elif change == "dense":
        dense = next(model.glob("*_Dense"))
        _perturb_safetensors(dense / "model.safetensors")
    else:  # swap two words' ids: same file size, other ids for the same text
        tokenizer = model / "tokenizer.json"
        size, text = tokenizer.stat().st_size, tokenizer.read_text()
        cat, dog = (re.search(rf'"{w}": *\d+', text).group(0) for w in ("cat", "dog"))
        swapped = {cat: cat.split(":")[0] + ":" + dog.split(":")[1]}
        swapped[dog] = dog.split(":")[0] + ":" + cat.split(":")[1]
        text = re.sub("|".join(map(re.escape, swapped)), lambda m: swapped[m.group(0)], text)
        tokenizer.write_text(text)
        assert tokenizer.stat().st_size == size

    refused = _job(tmp_path, model)
    assert refused.exit_code == 1
    assert named in refused.stderr and "--overwrite" in refused.stderr
    assert np.array_equal(_vectors(tmp_path / "out"), before)  # the old vectors are untouched
    again = json.loads((tmp_path / "out" / "_embed_etl" / "job.json").read_text())
    assert again["fingerprint"] == record["fingerprint"]

    redone = _job(tmp_path, model, "--overwrite")
    assert redone.exit_code == 0, redone.output
    summary = json.loads(redone.stdout.strip().splitlines()[-1])
    assert summary["shards_done"] == 1 and summary["fingerprint"] != record["fingerprint"]
    after = _vectors(tmp_path / "out")
    assert after.shape == before.shape and np.abs(after - before).max() > 1e-3
    from sentence_transformers import SentenceTransformer

    expected = SentenceTransformer(str(model), device="cpu").encode(
        texts(40), convert_to_numpy=True
    )
    assert np.abs(after - expected).max() < 1e-4  # the new model's vectors


@pytest.mark.parametrize(
    "which, backend",
    [("tiny", "plain-bert, tokenizers"), ("st", "plain-bert, transformers")],
)
def test_the_backend_is_in_the_fingerprint_and_the_file_metadata(
    tmp_path, model, tiny_model, which, backend
):
    """The tiny BERT's tokenizer is a BertTokenizerFast (tokenizers reads it alone); the
    sentence-transformers model's is a generic PreTrainedTokenizerFast (transformers')."""
    _first_run(tmp_path, tiny_model if which == "tiny" else model)
    column = "emb_mean" if which == "tiny" else "emb_model"
    meta = pq.read_schema(tmp_path / "out" / "a.parquet").metadata
    assert column in pq.read_schema(tmp_path / "out" / "a.parquet").names
    assert meta[b"embed_etl.backend"] == backend.encode()
    record = json.loads((tmp_path / "out" / "_embed_etl" / "job.json").read_text())
    assert record["identity"]["backend"] == backend
    assert len(meta[b"embed_etl.model_weights_sha256"]) == 32


def test_a_digest_is_remembered_until_the_file_changes(tmp_path, monkeypatch):
    path = tmp_path / "weights.bin"
    path.write_bytes(b"a" * 1000)
    monkeypatch.setattr(digests, "RACY_SECONDS", -60.0)  # as if written a minute ago
    hashed = []
    real = digests._sha256
    monkeypatch.setattr(digests, "_sha256", lambda p: hashed.append(p) or real(p))
    first = digests.file_digest(path)
    assert digests.file_digest(path) == first and len(hashed) == 1  # remembered
    mtime = os.stat(path).st_mtime_ns
    path.write_bytes(b"b" * 1000)  # same size, and the old modification time put back
    os.utime(path, ns=(mtime, mtime))
    second = digests.file_digest(path)
    assert second != first and len(hashed) == 2  # the change time gave it away


def test_a_file_changed_just_now_is_not_remembered(tmp_path, monkeypatch):
    path = tmp_path / "weights.bin"
    path.write_bytes(b"a" * 1000)
    hashed = []
    real = digests._sha256
    monkeypatch.setattr(digests, "_sha256", lambda p: hashed.append(p) or real(p))
    digests.file_digest(path)
    digests.file_digest(path)
    assert len(hashed) == 2  # racy: the clock may not have moved since it was written


def test_a_hub_cache_blob_name_is_its_digest(tmp_path, monkeypatch):
    import hashlib

    content = b"weights" * 100
    sha = hashlib.sha256(content).hexdigest()
    blob = tmp_path / "blobs" / sha
    blob.parent.mkdir()
    blob.write_bytes(content)
    snapshot = tmp_path / "snapshots" / "abc"
    snapshot.mkdir(parents=True)
    (snapshot / "model.safetensors").symlink_to(blob)
    monkeypatch.setattr(digests, "_sha256", lambda p: pytest.fail("read a hub blob"))
    assert digests.file_digest(snapshot / "model.safetensors") == sha
