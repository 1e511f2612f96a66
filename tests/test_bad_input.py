"""Bad input gets a clear answer and loses nothing; the good shards always finish."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import REPO, run_cli, tiny_texts, write_shard


def _good_shard(tmp_path):
    return write_shard(tmp_path / "in" / "good.parquet", tiny_texts(12), ids=range(12))


def _assert_good_complete(tmp_path):
    table = pq.read_table(tmp_path / "out" / "good.parquet")
    assert table.column("id").to_pylist() == list(range(12))
    assert table.column("emb_mean").null_count == 0


def _failed_message(result) -> str:
    summary = json.loads(result.stdout)
    (failed,) = [s for s in summary["shards"] if s["status"] == "failed"]
    return failed["error"]


def _write_bytes(path, data: bytes):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _truncated_parquet(tmp_path) -> bytes:
    write_shard(tmp_path / "scratch.parquet", tiny_texts(200))
    data = (tmp_path / "scratch.parquet").read_bytes()
    return data[: len(data) // 2]


@pytest.mark.parametrize(
    "kind,expected",
    [
        ("garbage", "not a readable Parquet file"),
        ("empty", "not a readable Parquet file"),
        ("csv", "not a readable Parquet file"),
        ("truncated", "not a readable Parquet file"),
    ],
)
def test_unreadable_file_fails_only_its_shard(tmp_path, tiny_model, kind, expected):
    _good_shard(tmp_path)
    bad = tmp_path / "in" / "bad.parquet"
    data = {
        "garbage": bytes(range(256)) * 8,
        "empty": b"",
        "csv": b"id,text\n1,hello\n",
        "truncated": _truncated_parquet(tmp_path),
    }[kind]
    _write_bytes(bad, data)
    result = run_cli(tmp_path, tiny_model)
    assert result.exit_code == 3
    message = _failed_message(result)
    assert str(bad) in message and expected in message
    assert message.count(str(bad)) == 1 and "Error" not in message  # one line, no class names
    _assert_good_complete(tmp_path)
    assert not (tmp_path / "out" / "bad.parquet").exists()
    assert not list((tmp_path / "out").glob(".*inprogress*"))


def test_missing_column_in_one_shard_names_column_file_and_columns(tmp_path, tiny_model):
    _good_shard(tmp_path)
    bad = tmp_path / "in" / "bad.parquet"
    pq.write_table(pa.table({"id": [1], "body": ["x"]}), bad)
    result = run_cli(tmp_path, tiny_model)
    assert result.exit_code == 3
    message = _failed_message(result)
    assert "no column 'text' (--text-column)" in message and str(bad) in message
    assert "the file has: id, body" in message
    _assert_good_complete(tmp_path)


def test_text_column_of_the_wrong_type_fails_its_shard(tmp_path, tiny_model):
    _good_shard(tmp_path)
    pq.write_table(pa.table({"id": [1, 2], "text": [3, 4]}), tmp_path / "in" / "bad.parquet")
    result = run_cli(tmp_path, tiny_model)
    assert result.exit_code == 3
    assert "has type int64; expected a string column" in _failed_message(result)
    _assert_good_complete(tmp_path)


def test_null_text_keeps_the_row_with_null_vectors_and_is_counted(tmp_path, tiny_model):
    texts = ["the cat", None, "", "   ", None, "a dog ran far"]
    write_shard(tmp_path / "in" / "s.parquet", texts)
    result = run_cli(tmp_path, tiny_model, "--pooling", "mean", "--pooling", "cls")
    assert result.exit_code == 0
    summary = json.loads(result.stdout)
    assert summary["null_rows"] == 2 and summary["rows"] == 6
    table = pq.read_table(tmp_path / "out" / "s.parquet")
    assert table.column("id").to_pylist() == list(range(6))
    for name in ("emb_mean", "emb_cls"):
        valid = [v is not None for v in table.column(name).to_pylist()]
        assert valid == [True, False, True, True, False, True]  # empty strings are embedded


def test_all_null_window_and_zero_row_shard(tmp_path, tiny_model):
    write_shard(tmp_path / "in" / "nulls.parquet", [None] * 5)
    write_shard(tmp_path / "in" / "empty.parquet", [])
    result = run_cli(tmp_path, tiny_model, "--keep-column", "text")
    assert result.exit_code == 0, result.output
    empty = pq.read_table(tmp_path / "out" / "empty.parquet")
    assert empty.num_rows == 0
    assert empty.schema.names == ["id", "text", "n_tokens", "truncated", "emb_mean"]
    assert empty.schema.field("emb_mean").type == pa.list_(pa.float32(), 32)
    nulls = pq.read_table(tmp_path / "out" / "nulls.parquet")
    for column in ("emb_mean", "n_tokens", "truncated"):  # no text: nothing to measure either
        assert nulls.column(column).null_count == 5, column


def test_dictionary_and_large_string_text_work_like_plain_strings(tmp_path, tiny_model):
    texts = tiny_texts(15, seed=4)
    plain = pa.array(texts, pa.string())
    variants = {
        "plain": plain,
        "large": plain.cast(pa.large_string()),
        "dict": plain.dictionary_encode(),
    }
    (tmp_path / "in").mkdir()
    for name, column in variants.items():
        pq.write_table(
            pa.table({"id": range(15), "text": column}), tmp_path / "in" / f"{name}.parquet"
        )
    assert pa.types.is_dictionary(
        pq.read_schema(tmp_path / "in" / "dict.parquet").field("text").type
    )
    assert run_cli(tmp_path, tiny_model).exit_code == 0
    vectors = {
        n: np.array(pq.read_table(tmp_path / "out" / f"{n}.parquet").column("emb_mean").to_pylist())
        for n in variants
    }
    np.testing.assert_array_equal(vectors["large"], vectors["plain"])
    np.testing.assert_array_equal(vectors["dict"], vectors["plain"])


def test_duplicate_and_null_ids_are_kept_as_they_are(tmp_path, tiny_model):
    ids = pa.array([7, 7, None, 3, None], pa.int64())
    (tmp_path / "in").mkdir()
    pq.write_table(pa.table({"id": ids, "text": tiny_texts(5)}), tmp_path / "in" / "s.parquet")
    assert run_cli(tmp_path, tiny_model).exit_code == 0
    assert pq.read_table(tmp_path / "out" / "s.parquet").column("id").to_pylist() == [
        7,
        7,
        None,
        3,
        None,
    ]


def test_huge_string_is_truncated_counted_and_memory_stays_bounded(tmp_path, tiny_model):
    """A 2 MB text: cut at --max-length, counted in the summary, peak RSS barely moves."""
    huge = " ".join(["big red dog"] * 180_000)  # 2.2 MB, ~540k tokens
    assert len(huge) > 2_000_000
    write_shard(tmp_path / "a" / "in" / "s.parquet", ["the cat", huge[:60]])
    write_shard(tmp_path / "b" / "in" / "s.parquet", ["the cat", huge])

    def run(root, *extra):
        code = (
            "import json, resource, sys; from jobs.cli import main; sys.argv = sys.argv[1:]\n"
            "try: main()\n"
            "except SystemExit as e: rc = e.code\n"
            "rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
            "print(json.dumps({'rc': rc, 'rss_kb': rss}))"
        )
        args = [
            "embed-etl",
            "run",
            str(root / "in"),
            "-o",
            str(root / "out"),
            "--model",
            str(tiny_model),
            "--max-length",
            "16",
            "--num-workers",
            "0",
            "--no-progress",
            *extra,
        ]
        proc = subprocess.run(
            [sys.executable, "-c", code, *args],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=300,
            check=True,
        )
        summary, measured = (json.loads(line) for line in proc.stdout.strip().splitlines()[-2:])
        assert measured["rc"] == 0, proc.stderr
        return summary, measured["rss_kb"]

    small_summary, small_rss = run(tmp_path / "a")
    summary, rss = run(tmp_path / "b")
    assert summary["truncated_rows"] == 1 and small_summary["truncated_rows"] == 1
    assert (rss - small_rss) / 1024 < 150, f"peak RSS grew by {(rss - small_rss) / 1024:.0f} MB"
    cut = pq.read_table(tmp_path / "b" / "out" / "s.parquet").column("emb_mean").to_pylist()[1]
    short = pq.read_table(tmp_path / "a" / "out" / "s.parquet").column("emb_mean").to_pylist()[1]
    np.testing.assert_allclose(cut, short, atol=1e-5)  # both are the first 16 tokens

    # --long-text chunk embeds all of it (38,572 windows): tokenized in pieces, memory bounded.
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "in").symlink_to(tmp_path / "b" / "in")
    summary, rss = run(tmp_path / "c", "--long-text", "chunk")
    assert summary["chunked_rows"] == 1 and summary["truncated_rows"] == 0
    # 540,000 text tokens in windows of 14, each with [CLS] and [SEP]; plus "the cat" (4).
    assert summary["tokens"] == 540_000 + 2 * 38_572 + 4
    assert (rss - small_rss) / 1024 < 150, f"peak RSS grew by {(rss - small_rss) / 1024:.0f} MB"
    table = pq.read_table(tmp_path / "c" / "out" / "s.parquet")
    assert table.column("n_tokens").to_pylist() == [4, 540_002]


def test_a_failure_reads_as_its_message_and_only_a_bug_is_named_as_one():
    import pyarrow.lib

    from etl.errors import StorageError, reason

    assert reason(StorageError("s3://b/k: access denied")) == "s3://b/k: access denied"
    assert reason(pyarrow.lib.ArrowInvalid("Parquet magic bytes not found")) == (
        "Parquet magic bytes not found"
    )
    assert reason(OSError(28, "No space left on device")) == "[Errno 28] No space left on device"
    bug = reason(KeyError("emb_mean"))
    assert bug.startswith("internal error (KeyError: 'emb_mean')") and "--verbose" in bug
