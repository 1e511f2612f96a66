"""--chunk-tokens: a row per passage, its span into the text, its vector that of the passage."""

from __future__ import annotations

import itertools
import json
import subprocess

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import REPO, job_args, kill_when, run_ok, start_job, tiny_texts, write_shard
from tests.models import CASES, save_sentence_transformer, texts

PARAGRAPHS = [
    "Parquet is a columnar file format. Each row group holds a slice of the rows, and each "
    "column chunk is compressed on its own. Readers can skip what they do not need!",
    "An embedding maps a text to a vector; similar texts get close vectors. Search then "
    "compares a query's vector with every passage's, or with an index of them.",
    "",
    None,
    "short",
    "Tokenizers cut text into pieces: words, sub-words, punctuation. A long word such as "
    "internationalization becomes several pieces, and so do numbers like 3.14159 or 2026.",
]


def _documents(n: int) -> list[str | None]:
    """Texts of 1 to ~200 words from the tiny families' vocabulary, with some null or empty."""
    parts = texts(4 * n, seed=3)
    found: list[str | None] = [" ".join(parts[i : i + 1 + i % 7]) for i in range(0, 4 * n, 4)]
    found[1], found[2] = None, ""
    return found


def _passages(path) -> pa.Table:
    return pq.read_table(path)


def _check_spans(table: pa.Table, source: dict, tokens: int, tokenizer) -> int:
    """Every text's spans cover it in order, each passage re-tokenizes to <= tokens; returns
    how many texts were cut into more than one passage."""
    rows = table.to_pylist()
    by_id: dict = {}
    for row in rows:
        by_id.setdefault(row["id"], []).append(row)
    assert list(by_id) == list(source)  # every input row, once, in order
    cut = 0
    for key, passages in by_id.items():
        text = source[key]
        if text is None:
            assert len(passages) == 1 and passages[0]["chunk"] is None
            continue
        assert [p["chunk"] for p in passages] == list(range(len(passages)))
        assert passages[0]["chunk_start"] == 0 and passages[-1]["chunk_end"] == len(text)
        for before, after in itertools.pairwise(passages):
            assert before["chunk_start"] < after["chunk_start"] <= before["chunk_end"]
        for p in passages:
            span = text[p["chunk_start"] : p["chunk_end"]]
            assert len(tokenizer(span, add_special_tokens=False)["input_ids"]) <= tokens
        cut += len(passages) > 1
    return cut


@pytest.mark.parametrize("family", ["default", "roberta", "xlm-roberta"])
def test_each_passage_is_sentence_transformers_encode_of_its_span(tmp_path, real_model, family):
    from sentence_transformers import SentenceTransformer

    if family == "default":
        model, docs, tokens = real_model, PARAGRAPHS * 3, 12
    else:
        case = next(c for c in CASES if c.arch == family)
        model, docs, tokens = save_sentence_transformer(case, tmp_path / "m"), _documents(40), 16
    write_shard(tmp_path / "in" / "a.parquet", docs)
    summary = run_ok(tmp_path / "in", tmp_path / "out", model, chunk_tokens=tokens)
    table = _passages(tmp_path / "out" / "a.parquet")
    assert summary["rows"] == table.num_rows > len(docs)
    st = SentenceTransformer(str(model), device="cpu")
    source = dict(enumerate(docs))
    assert _check_spans(table, source, tokens, st.tokenizer) >= 3
    present = [r for r in table.to_pylist() if r["chunk"] is not None]
    spans = [source[r["id"]][r["chunk_start"] : r["chunk_end"]] for r in present]
    expected = st.encode(spans, batch_size=8, convert_to_numpy=True)
    got = np.array([r["emb_model"] for r in present], np.float32)
    assert np.abs(got - expected).max() < 1e-5
    nulls = [r for r in table.to_pylist() if r["chunk"] is None]
    assert len(nulls) == sum(d is None for d in docs) and all(r["emb_model"] is None for r in nulls)


def test_overlap_and_sentence_boundaries_keep_the_spans_whole(tmp_path, real_model):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(real_model))
    write_shard(tmp_path / "in" / "a.parquet", PARAGRAPHS * 2)
    source = dict(enumerate(PARAGRAPHS * 2))
    sentence_ends = {}
    for boundary, overlap in (("tokens", 4), ("tokens", 0), ("sentence", 0)):
        out = tmp_path / f"out-{boundary}-{overlap}"
        run_ok(
            tmp_path / "in",
            out,
            real_model,
            chunk_tokens=16,
            chunk_overlap=overlap,
            chunk_boundary=boundary,
        )
        table = _passages(out / "a.parquet")
        assert _check_spans(table, source, 16, tokenizer) >= 3
        cuts = [
            source[r["id"]][: r["chunk_end"]].rstrip()[-1:]
            for r in table.to_pylist()
            if r["chunk"] is not None and r["chunk_end"] < len(source[r["id"]])
        ]
        sentence_ends[boundary, overlap] = sum(c in ".!?" for c in cuts) / len(cuts)
    assert sentence_ends["sentence", 0] > 2 * sentence_ends["tokens", 0]


def test_verify_catches_a_span_outside_the_text_and_a_missing_passage(tmp_path, tiny_model):
    from etl import verify_job

    docs = [" ".join(["the cat sat on the mat"] * (1 + i % 5)) for i in range(30)]
    docs[3] = None
    write_shard(tmp_path / "in" / "a.parquet", docs)
    out = tmp_path / "out"
    run_ok(tmp_path / "in", out, tiny_model, chunk_tokens=8)
    assert verify_job(str(out)).ok
    path = out / "a.parquet"
    good = pq.read_table(path)

    def planted(table: pa.Table) -> list[str]:
        pq.write_table(table.replace_schema_metadata(good.schema.metadata), path)
        return [p for s in verify_job(str(out)).shards for p in s.problems]

    ends = good.column("chunk_end").to_pylist()
    ends[5] += 1000
    at = good.schema.get_field_index("chunk_end")
    outside = planted(good.set_column(at, "chunk_end", pa.array(ends, pa.int32())))
    assert any("spans outside" in p for p in outside), outside
    missing = planted(pa.concat_tables([good.slice(0, 7), good.slice(8)]))
    assert any("rows" in p for p in missing), missing
    assert any("chunk" in p or "span" in p or "passages" in p for p in missing), missing
    pq.write_table(good, path)
    assert verify_job(str(out)).ok


def test_recompute_is_refused_in_one_line(tmp_path, tiny_model):
    from click.testing import CliRunner

    from jobs.cli import cli

    write_shard(tmp_path / "in" / "a.parquet", ["the cat sat on the mat"] * 3)
    run_ok(tmp_path / "in", tmp_path / "out", tiny_model, chunk_tokens=4)
    result = CliRunner().invoke(cli, ["verify", "-o", str(tmp_path / "out"), "--recompute", "2"])
    assert result.exit_code == 2 and "--recompute" in result.output
    assert "Traceback" not in result.output


def test_options_that_cannot_go_together_are_refused(tmp_path, tiny_model):
    from etl import ConfigError

    write_shard(tmp_path / "in" / "a.parquet", ["the cat"])
    for kw, words in [
        ({"chunk_tokens": 8, "long_text": "chunk"}, "--long-text chunk"),
        ({"chunk_tokens": 8, "chunk_overlap": 8}, "less than --chunk-tokens"),
        ({"chunk_tokens": 0}, "--chunk-tokens"),
        ({"chunk_tokens": 500}, "--max-length"),
        ({"chunk_overlap": 2}, "--chunk-tokens or --long-text chunk"),
        ({"chunk_boundary": "sentence"}, "--chunk-boundary goes with --chunk-tokens"),
        ({"chunk_tokens": 8, "text_column": "chunk"}, "its own chunk column"),
        ({"chunk_tokens": 60, "prompt": "the cat sat on the mat "}, "--chunk-tokens 60"),
    ]:
        with pytest.raises(ConfigError, match=words):
            run_ok(tmp_path / "in", tmp_path / "out", tiny_model, **kw)


@pytest.mark.slow
@pytest.mark.parametrize("chunking", ["naive", "late"])
def test_sigkill_mid_shard_then_rerun_writes_every_passage_once(tmp_path, tiny_model, chunking):
    shards, rows = 3, 1500
    for i in range(shards):
        write_shard(
            tmp_path / "in" / f"p{i}.parquet",
            tiny_texts(rows, seed=i, longest=40),
            ids=range(i * rows, (i + 1) * rows),
        )
    clean = tmp_path / "clean"
    run_ok(tmp_path / "in", clean, tiny_model, chunk_tokens=8, chunk_overlap=2, chunking=chunking)
    out = tmp_path / "out"
    passages = ("--chunk-tokens", "8", "--chunk-overlap", "2", "--batch-size", "4")
    passages += ("--chunking", chunking)
    args = job_args(tiny_model, tmp_path / "in", out, *passages)
    proc = start_job(args)
    kill_when(proc, lambda: list(out.glob(".*inprogress*")), "a shard in progress")
    rerun = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    assert json.loads(rerun.stdout)["shards_failed"] == 0
    for i in range(shards):
        mine, theirs = pq.read_table(out / f"p{i}.parquet"), pq.read_table(clean / f"p{i}.parquet")
        columns = ["id", "chunk", "chunk_start", "chunk_end"]
        assert mine.select(columns).equals(theirs.select(columns))  # every passage once
        vectors = [np.array(t.column("emb_mean").to_pylist(), np.float32) for t in (mine, theirs)]
        assert np.abs(vectors[0] - vectors[1]).max() < 1e-5  # batches differ: float order


def test_a_huge_text_is_cut_in_pieces_that_still_cover_it(tmp_path, tiny_model, monkeypatch):
    """A text over PIECE_CHARS is cut at whitespace into pieces first (bounded tokenizer
    memory), and blocks a group of characters at a time: the spans still tile every text."""
    import etl.stages.read.passage_rows as passage_rows

    monkeypatch.setattr(passage_rows, "PIECE_CHARS", 50)
    monkeypatch.setattr(passage_rows, "GROUP_CHARS", 120)
    docs = [" ".join(["the cat sat on the mat"] * n) for n in (1, 9, 3, 20)] + [None, ""]
    write_shard(tmp_path / "in" / "a.parquet", docs)
    run_ok(tmp_path / "in", tmp_path / "out", tiny_model, chunk_tokens=6)
    table = _passages(tmp_path / "out" / "a.parquet")
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model))
    assert _check_spans(table, dict(enumerate(docs)), 6, tokenizer) == 3


def test_worker_processes_write_the_passages_one_process_writes(tmp_path, tiny_model):
    for i in range(3):
        write_shard(
            tmp_path / "in" / f"p{i}.parquet",
            tiny_texts(200, seed=i, longest=40),
            ids=range(i * 200, (i + 1) * 200),
        )
    run_ok(tmp_path / "in", tmp_path / "one", tiny_model, chunk_tokens=8, chunk_overlap=2)
    run_ok(
        tmp_path / "in", tmp_path / "two", tiny_model, chunk_tokens=8, chunk_overlap=2, workers=2
    )
    for i in range(3):
        one = pq.read_table(tmp_path / "one" / f"p{i}.parquet")
        two = pq.read_table(tmp_path / "two" / f"p{i}.parquet")
        assert one.num_rows > 200 and one.equals(two)


def test_a_kept_dictionary_text_column_holds_each_passage(tmp_path, tiny_model):
    docs = ["the cat sat on the mat the dog ran far away", None, "the cat"] * 4
    table = pa.table(
        {"id": pa.array(range(len(docs)), pa.int64()), "text": pa.array(docs).dictionary_encode()}
    )
    (tmp_path / "in").mkdir()
    pq.write_table(table, tmp_path / "in" / "a.parquet")
    run_ok(tmp_path / "in", tmp_path / "out", tiny_model, chunk_tokens=4, keep_columns=("text",))
    out = pq.read_table(tmp_path / "out" / "a.parquet")
    for row in out.to_pylist():
        text = docs[row["id"]]
        if text is None:
            assert row["text"] is None and row["chunk"] is None
        else:
            assert row["text"] == text[row["chunk_start"] : row["chunk_end"]]


def test_a_text_over_the_byte_limit_keeps_one_null_row_even_when_kept(tmp_path, tiny_model):
    docs = ["the cat sat on the mat the dog", "the cat " * 40, "a mat"]
    write_shard(tmp_path / "in" / "a.parquet", docs)
    run_ok(
        tmp_path / "in",
        tmp_path / "out",
        tiny_model,
        chunk_tokens=4,
        keep_columns=("text",),
        max_text_bytes=100,
    )
    rows = pq.read_table(tmp_path / "out" / "a.parquet").to_pylist()
    refused = [r for r in rows if r["id"] == 1]
    assert len(refused) == 1 and refused[0]["chunk"] is None and refused[0]["text"] is None
    assert refused[0]["emb_mean"] is None
    assert [r["chunk"] for r in rows if r["id"] == 0] == [0, 1]
