"""Length is never silent: n_tokens and truncated on every row; --long-text chunk and error."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from click.testing import CliRunner

from etl import JobConfig
from etl.model.locate import resolve_model
from etl.stages.read.chunks import chunk_windows
from etl.stages.read.tokenizer import load_tokenizer
from etl.stages.read.tokens import PIECE_CHARS, content_ids
from jobs.cli import cli
from tests.conftest import TINY_WORDS, run_cli, run_ok, tiny_texts, write_shard

MAX_LENGTH = 16  # [CLS] + 14 text tokens + [SEP] per window


def _long_text(tokens: int, seed: int = 7) -> str:
    rng = np.random.default_rng(seed)
    return " ".join(rng.choice(TINY_WORDS, size=tokens))  # one token per tiny-vocabulary word


def _run(tmp_path, tiny_model, out, **kw):
    summary = run_ok(tmp_path / "in", tmp_path / out, tiny_model, max_length=MAX_LENGTH, **kw)
    return summary, pq.read_table(tmp_path / out / "s.parquet")


def _vectors(table, column):
    return np.array(table.column(column).to_pylist(), dtype=np.float32)


def test_every_row_says_how_long_it_was_and_whether_it_was_cut(tmp_path, tiny_model):
    texts = [*tiny_texts(20, longest=40), None, ""]
    write_shard(tmp_path / "in" / "s.parquet", texts)
    summary, table = _run(tmp_path, tiny_model, "out")
    tokenizer = load_tokenizer(resolve_model(str(tiny_model)))
    expected = [None if t is None else len(tokenizer(t)["input_ids"]) for t in texts]
    assert table.column("n_tokens").to_pylist() == expected
    cut = [None if n is None else n > MAX_LENGTH for n in expected]
    assert table.column("truncated").to_pylist() == cut
    assert summary["truncated_rows"] == sum(1 for c in cut if c) > 0
    assert summary["shards"][0]["truncated_rows"] == summary["truncated_rows"]
    status = CliRunner().invoke(cli, ["status", "-o", str(tmp_path / "out"), "--json"])
    assert json.loads(status.stdout)["shards"][0]["truncated_rows"] == summary["truncated_rows"]
    text = CliRunner().invoke(cli, ["status", "-o", str(tmp_path / "out")]).stdout
    assert "truncated rows by shard" in text and "s.parquet" in text


@pytest.mark.parametrize("overlap", [0, 3])
def test_chunk_is_the_token_weighted_mean_of_its_windows(tmp_path, tiny_model, overlap):
    from transformers import AutoModel

    long = _long_text(3 * MAX_LENGTH)  # 48 text tokens: three times the window
    short = tiny_texts(12, seed=3, longest=10)
    write_shard(tmp_path / "in" / "s.parquet", [*short[:6], long, *short[6:]])
    options = {"poolings": ("mean", "cls", "max"), "normalize": False}
    summary, chunked = _run(
        tmp_path, tiny_model, "chunk", long_text="chunk", chunk_overlap=overlap, **options
    )
    _, truncated = _run(tmp_path, tiny_model, "truncate", **options)

    # Independently: tokenize the whole text, cut the windows by hand, run each one alone.
    tokenizer = load_tokenizer(resolve_model(str(tiny_model)))
    tokenizer.backend_tokenizer.no_truncation()
    ids = tokenizer(long, add_special_tokens=False)["input_ids"]
    assert len(ids) == 3 * MAX_LENGTH
    width, stride = MAX_LENGTH - 2, MAX_LENGTH - 2 - overlap
    windows, start = [], 0
    while True:
        windows.append(
            [tokenizer.cls_token_id, *ids[start : start + width], tokenizer.sep_token_id]
        )
        if start + width >= len(ids):
            break
        start += stride
    model = AutoModel.from_pretrained(tiny_model).eval()
    with torch.inference_mode():
        hidden = [model(input_ids=torch.tensor([w])).last_hidden_state[0] for w in windows]
    weights = np.array([len(w) for w in windows], dtype=np.float64)
    means = np.stack([h.mean(dim=0).numpy() for h in hidden])
    clss = np.stack([h[0].numpy() for h in hidden])
    maxes = np.stack([h.max(dim=0).values.numpy() for h in hidden])
    row = 6
    np.testing.assert_allclose(
        _vectors(chunked, "emb_mean")[row], weights @ means / weights.sum(), atol=1e-5
    )
    np.testing.assert_allclose(
        _vectors(chunked, "emb_cls")[row], weights @ clss / weights.sum(), atol=1e-5
    )
    np.testing.assert_allclose(_vectors(chunked, "emb_max")[row], maxes.max(axis=0), atol=1e-5)
    # The long row is whole: not truncated, its full length recorded, counted as chunked.
    assert chunked.column("truncated").to_pylist()[row] is False
    assert chunked.column("n_tokens").to_pylist()[row] == 3 * MAX_LENGTH + 2
    assert (summary["chunked_rows"], summary["truncated_rows"]) == (1, 0)
    # Rows that fit one window are exactly what truncate mode gives.
    others = [i for i in range(chunked.num_rows) if i != row]
    for column in ("emb_mean", "emb_cls", "emb_max"):
        assert np.array_equal(
            _vectors(chunked, column)[others], _vectors(truncated, column)[others]
        )


def test_chunk_then_normalize(tmp_path, tiny_model):
    write_shard(tmp_path / "in" / "s.parquet", [_long_text(40), "the cat"])
    _, raw = _run(tmp_path, tiny_model, "raw", long_text="chunk")
    _, unit = _run(tmp_path, tiny_model, "unit", long_text="chunk", normalize=True)
    joined = _vectors(raw, "emb_mean")
    expected = joined / np.linalg.norm(joined, axis=1, keepdims=True)
    np.testing.assert_allclose(_vectors(unit, "emb_mean"), expected, atol=1e-6)


def test_long_text_error_fails_the_shard_naming_the_row(tmp_path, tiny_model):
    write_shard(tmp_path / "in" / "good.parquet", tiny_texts(10, longest=10))
    write_shard(
        tmp_path / "in" / "bad.parquet",
        ["the cat", _long_text(30), _long_text(40)],
        ids=[5, 77, 78],
    )
    result = run_cli(tmp_path, tiny_model, "--max-length", str(MAX_LENGTH), "--long-text", "error")
    assert result.exit_code == 3, result.output
    assert "Traceback" not in result.output
    assert "bad.parquet: row 1 (id 77) has 32 tokens, more than --max-length 16" in result.stderr
    assert not (tmp_path / "out" / "bad.parquet").exists()
    assert pq.read_table(tmp_path / "out" / "good.parquet").num_rows == 10


def test_chunk_overlap_is_checked_against_the_window():
    with pytest.raises(
        Exception, match="--chunk-overlap goes with --chunk-tokens or --long-text chunk"
    ):
        JobConfig(inputs=("x",), output_dir="o", chunk_overlap=4)


def test_chunk_overlap_must_leave_room(tmp_path, tiny_model):
    write_shard(tmp_path / "in" / "s.parquet", ["the cat"])
    result = run_cli(
        tmp_path, tiny_model, "--max-length", "16", "--long-text", "chunk", "--chunk-overlap", "14"
    )
    assert result.exit_code == 2
    assert "--chunk-overlap 14: must be less than the 14 text tokens of a window" in result.stderr


def test_huge_text_windows_are_exact_and_tokenized_piecewise(tiny_model):
    tokenizer = load_tokenizer(resolve_model(str(tiny_model)))
    text = _long_text(60_000)  # ~250 KB, several pieces
    assert len(text) > 3 * PIECE_CHARS
    content = content_ids(tokenizer, text)
    tokenizer.backend_tokenizer.no_truncation()
    assert content.tolist() == tokenizer(text, add_special_tokens=False)["input_ids"]
    specials = (tokenizer.cls_token_id,), (tokenizer.sep_token_id,)
    windows = chunk_windows(content, 16, 2, *specials)
    assert all(len(w) <= 16 for w in windows)
    assert windows[-1][-2] == content[-1]  # the last window reaches the end of the text
    covered = np.concatenate([w[1:-1] if i == 0 else w[3:-1] for i, w in enumerate(windows)])
    assert np.array_equal(covered, content)  # overlap 2: every token once, in order


def test_progress_counts_a_chunked_row_once():
    from etl.contract import Batch, WindowInfo
    from etl.worker.progress import rows_done

    # Window of 4 rows: row 1 is null, row 2 was split into 3 windows.
    multi = np.array([False, False, True, False])
    info = WindowInfo(0, 4, 2, passthrough=None, null_rows=1, chunked_rows=1, multi=multi)

    def batch(rows, window=None):
        ids = torch.ones((len(rows), 3), dtype=torch.long)
        return Batch(0, 0, torch.tensor(rows), ids, ids, window)

    first, second = batch([0, 2, 2], info), batch([2, 3])
    assert rows_done(first, multi) + rows_done(second, multi) == 4
    plain = WindowInfo(0, 2, 1, passthrough=None)
    assert rows_done(batch([0, 1], plain), None) == 2
