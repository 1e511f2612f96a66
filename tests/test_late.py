"""--chunking late: each passage pooled from one pass over its whole text.

The reference is computed here, independently of the job: the whole text through transformers'
AutoModel (special tokens and prompt as the tokenizer adds them), each passage's tokens (those
whose last character lies inside its span) through the sentence-transformers model's own modules
after its Transformer (Pooling, Dense, Normalize)."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

from etl import ConfigError
from tests.conftest import job_config, run_ok, write_shard
from tests.models import CASES, save_sentence_transformer, texts

ENGLISH = [
    "Parquet is a columnar file format. Each row group holds a slice of the rows, and each "
    "column chunk is compressed on its own. Readers can skip what they do not need!",
    "An embedding maps a text to a vector; similar texts get close vectors. Search then "
    "compares a query's vector with every passage's, or with an index of them.",
    None,
    "",
    "short",
    "Tokenizers cut text into pieces: words, sub-words, punctuation. A long word such as "
    "internationalization becomes several pieces, and so do numbers like 3.14159 or 2026. "
    "Late chunking runs the model once over the whole text and pools each passage from it.",
]


class Reference:
    """A sentence-transformers folder's model, run as the test's own reference."""

    def __init__(self, path) -> None:
        import torch
        from sentence_transformers import SentenceTransformer
        from transformers import AutoModel, AutoTokenizer

        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(str(path))
        self.model = AutoModel.from_pretrained(str(path)).float().eval()
        self.after = list(SentenceTransformer(str(path), device="cpu"))[1:]  # Pooling on

    def states(self, text: str) -> tuple:
        """The text's token states, each token's character offsets and whether it is special."""
        found = self.tokenizer(
            text, return_offsets_mapping=True, return_special_tokens_mask=True, return_tensors="pt"
        )
        with self.torch.no_grad():
            out = self.model(input_ids=found["input_ids"], attention_mask=found["attention_mask"])
        offsets = found["offset_mapping"][0].tolist()
        return out.last_hidden_state[0], offsets, found["special_tokens_mask"][0].tolist()

    def pooled(self, hidden, chosen: list[int]) -> np.ndarray:
        """The chosen tokens' states through Pooling, Dense and Normalize."""
        features = {
            "token_embeddings": hidden[chosen][None],
            "attention_mask": self.torch.ones(1, len(chosen), dtype=self.torch.long),
        }
        with self.torch.no_grad():
            for module in self.after:
                features = module(features)
        return features["sentence_embedding"][0].numpy()

    def late(self, text: str, spans: list[tuple[int, int]], prompt: str = "") -> list[np.ndarray]:
        """Each span of ``text`` pooled from one forward pass over the prompt and text."""
        hidden, offsets, special = self.states(prompt + text)
        vectors = []
        for start, end in spans:
            chosen = [
                i
                for i, ((a, b), s) in enumerate(zip(offsets, special, strict=True))
                if not s and b > a and start < b - len(prompt) <= end
            ]
            vectors.append(self.pooled(hidden, chosen or list(range(len(offsets)))))
        return vectors


def _late_output(path) -> dict:
    """id -> [(start, end, vector)] of every passage with a vector."""
    table = pq.read_table(path)
    vector = next(c for c in table.column_names if c.startswith("emb_"))
    found: dict = {}
    for row in table.to_pylist():
        if row[vector] is not None:
            entry = (row["chunk_start"], row["chunk_end"], np.asarray(row[vector]))
            found.setdefault(row["id"], []).append(entry)
    return found


def _compare(reference: Reference, texts_: list, output, prompt: str = "") -> int:
    """Every passage of the output against the reference; returns how many were compared."""
    compared = 0
    for row_id, passages in _late_output(output).items():
        text = texts_[row_id]
        expected = reference.late(text, [(s, e) for s, e, _ in passages], prompt)
        for (start, end, got), want in zip(passages, expected, strict=True):
            assert np.abs(got - want).max() < 1e-5, (row_id, start, end, np.abs(got - want).max())
            compared += 1
    return compared


def test_late_equals_pooling_of_the_whole_text_pass(tmp_path, real_model):
    """The default model (mean, Normalize): each passage's vector is the mean of its tokens'
    states from the pass over its whole text, within 1e-5; unlike the naive passage's."""
    write_shard(tmp_path / "in" / "a.parquet", ENGLISH)
    run_ok(tmp_path / "in", tmp_path / "late", chunk_tokens=16, chunk_overlap=4, chunking="late")
    run_ok(tmp_path / "in", tmp_path / "naive", chunk_tokens=16, chunk_overlap=4)
    late = tmp_path / "late" / "a.parquet"
    assert _compare(Reference(real_model), ENGLISH, late) >= 13
    naive = _late_output(tmp_path / "naive" / "a.parquet")
    for row_id, passages in _late_output(late).items():  # same spans, other vectors
        assert [p[:2] for p in passages] == [p[:2] for p in naive[row_id]]
    cosines = [
        float(a[2] @ b[2])
        for i in naive
        for a, b in zip(naive[i], _late_output(late)[i], strict=True)
        if ENGLISH[i] and len(naive[i]) > 1
    ]
    assert max(cosines) < 0.999  # context moved them


@pytest.mark.parametrize("family", [c.arch for c in CASES])
def test_late_families(tmp_path, family):
    """Every family: cls with a Dense layer and a prompt (bert), last token with left padding
    (a decoder), weighted mean, max, mean_sqrt_len_tokens, cls+mean, a default prompt
    (xlm-roberta): the model's pooling over each passage's tokens, then its Dense and
    Normalize, as the reference computes it; batches of mixed lengths."""
    case = next(c for c in CASES if c.arch == family)
    model = save_sentence_transformer(case, tmp_path / "m")
    words = " ".join(texts(60, seed=5)).split()
    docs: list = [" ".join(words[i : i + 1 + i % 40]) for i in range(0, 600, 30)]  # one pass
    docs[3] = None
    write_shard(tmp_path / "in" / "a.parquet", docs)
    prompt = "query: " if family == "bert" else ""
    default = case.prompts.get(case.default_prompt or "", "")  # the job uses it unasked
    run_ok(
        tmp_path / "in",
        tmp_path / "out",
        model,
        chunk_tokens=8,
        chunk_overlap=2,
        chunking="late",
        batch_size=3,
        prompt=prompt or None,
    )
    found = _compare(Reference(model), docs, tmp_path / "out" / "a.parquet", prompt or default)
    assert found > 30


def test_late_modernbert_at_4096_tokens(tmp_path):
    """A long-context family: a tiny ModernBERT (local and global attention) over a text of
    about 4,000 tokens in one pass of --max-length 4096."""
    case = next(c for c in CASES if c.arch == "modernbert")
    model = save_sentence_transformer(case, tmp_path / "m", layers=2, positions=8192)
    words = " ".join(texts(900, seed=9)).split()
    reference = Reference(model)
    n = len(reference.tokenizer(" ".join(words))["input_ids"])
    long = " ".join(words[: len(words) * 4000 // n])
    n = len(reference.tokenizer(long)["input_ids"])
    assert 3500 < n <= 4096, n
    docs = [long, "a short one"]
    write_shard(tmp_path / "in" / "a.parquet", docs)
    run_ok(
        tmp_path / "in", tmp_path / "out", model, chunk_tokens=64, chunking="late", max_length=4096
    )
    found = _late_output(tmp_path / "out" / "a.parquet")
    assert len(found[0]) > 50
    assert _compare(reference, docs, tmp_path / "out" / "a.parquet") == len(found[0]) + 1


def test_long_late_chunking_windows(tmp_path):
    """A text longer than --max-length: windows of --max-length tokens overlapping by a quarter
    of a window (at least --chunk-tokens); each passage pooled from the window that holds it
    whole with the most context on its shorter side, computed here window by window."""
    case = next(c for c in CASES if c.arch == "roberta")
    model = save_sentence_transformer(case, tmp_path / "m")
    reference = Reference(model)
    long = " ".join(texts(80, seed=11))
    docs = [long, "the cat sat"]
    write_shard(tmp_path / "in" / "a.parquet", docs)
    max_length, tokens = 64, 8
    run_ok(
        tmp_path / "in",
        tmp_path / "out",
        model,
        chunk_tokens=tokens,
        chunking="late",
        max_length=max_length,
    )
    tokenizer = reference.tokenizer
    whole = tokenizer(long, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = whole["input_ids"], whole["offset_mapping"]
    assert len(ids) > 3 * max_length
    width = max_length - 2
    overlap = min(max(tokens, width // 4), width // 2)
    begins = list(range(0, len(ids) - width + (width - overlap), width - overlap))
    states = []
    for begin in begins:
        window = [tokenizer.cls_token_id, *ids[begin : begin + width], tokenizer.sep_token_id]
        with reference.torch.no_grad():
            out = reference.model(input_ids=reference.torch.tensor([window]))
        states.append(out.last_hidden_state[0])
    checked = 0
    for start, end, got in _late_output(tmp_path / "out" / "a.parquet")[0]:
        mine = [i for i, (a, b) in enumerate(offsets) if b > a and start < b <= end]
        first, last = mine[0], mine[-1] + 1
        best, best_score = None, -1.0
        for k, begin in enumerate(begins):
            stop = min(begin + width, len(ids))
            if begin <= first and last <= stop:
                left = first - begin if begin > 0 else np.inf
                right = stop - last if stop < len(ids) else np.inf
                if min(left, right) > best_score:
                    best, best_score = k, min(left, right)
        assert best is not None
        chosen = [1 + i - begins[best] for i in range(first, last)]
        want = reference.pooled(states[best], chosen)
        assert np.abs(got - want).max() < 1e-5, (start, end)
        checked += 1
    assert checked > 30


def test_late_workers_and_spans(tmp_path, tiny_model):
    """Two worker processes write the same bytes as one; verify passes; late spans are
    naive's spans."""
    from etl import verify_job

    docs = [" ".join(texts(40, seed=2)[i : i + 6]) for i in range(0, 40, 2)]
    for i in range(3):
        write_shard(tmp_path / "in" / f"{i}.parquet", docs[i::3])
    options = dict(chunk_tokens=8, chunk_overlap=2, chunking="late")
    run_ok(tmp_path / "in", tmp_path / "one", tiny_model, **options)
    assert verify_job(str(tmp_path / "one")).ok
    run_ok(tmp_path / "in", tmp_path / "two", tiny_model, workers=2, **options)
    for i in range(3):
        one = pq.read_table(tmp_path / "one" / f"{i}.parquet")
        two = pq.read_table(tmp_path / "two" / f"{i}.parquet")
        assert one.equals(two)
    run_ok(tmp_path / "in", tmp_path / "naive", tiny_model, chunk_tokens=8, chunk_overlap=2)
    naive = pq.read_table(tmp_path / "naive" / "0.parquet")
    late = pq.read_table(tmp_path / "one" / "0.parquet")
    columns = ["id", "chunk", "chunk_start", "chunk_end"]
    assert naive.select(columns).equals(late.select(columns))


@pytest.mark.parametrize(
    "options, message",
    [
        ({"chunking": "late"}, "--chunking late goes with --chunk-tokens"),
        ({"chunking": "later", "chunk_tokens": 8}, "--chunking later"),
        ({"chunking": "late", "chunk_tokens": 40}, "half a pass"),
        ({"chunking": "late", "chunk_tokens": 8, "poolings": ("tokens",)}, "--pooling tokens"),
        ({"chunking": "late", "chunk_tokens": 8, "store": "STORE"}, "late chunks"),
        # The prompt's tokens leave a window too little room for a passage and its overlap.
        (
            {"chunking": "late", "chunk_tokens": 30, "prompt": "the cat sat on the mat "},
            "a passage and an overlap",
        ),
    ],
)
def test_late_refused(tmp_path, tiny_model, options, message):
    """Late chunking's limits are refused at the start, in one line naming the option."""
    from etl import run_job

    write_shard(tmp_path / "in" / "a.parquet", ["the cat sat"])
    if options.get("store") == "STORE":
        options = {**options, "store": str(tmp_path / "store")}
    with pytest.raises(ConfigError, match=message):
        run_job(job_config(tmp_path / "in", tmp_path / "out", tiny_model, **options))
    assert not list((tmp_path / "out").glob("*.parquet")) if (tmp_path / "out").exists() else True


def test_a_huge_text_is_tokenized_in_pieces_with_the_same_vectors(
    tmp_path, tiny_model, monkeypatch
):
    """A text over PIECE_CHARS is tokenized in whitespace-aligned pieces, GROUP_CHARS
    characters a call (bounded tokenizer memory): the same passages and vectors as whole."""
    import etl.stages.read.late as late

    docs = [" ".join(texts(30, seed=4))[:1500], "the cat sat on the mat"]
    write_shard(tmp_path / "in" / "a.parquet", docs)
    options = dict(chunk_tokens=8, chunking="late", max_length=64)
    run_ok(tmp_path / "in", tmp_path / "whole", tiny_model, **options)
    monkeypatch.setattr(late, "PIECE_CHARS", 100)
    monkeypatch.setattr(late, "GROUP_CHARS", 300)  # several calls to the tokenizer
    run_ok(tmp_path / "in", tmp_path / "pieces", tiny_model, **options)
    whole = pq.read_table(tmp_path / "whole" / "a.parquet")
    pieces = pq.read_table(tmp_path / "pieces" / "a.parquet")
    assert whole.num_rows > 20 and whole.equals(pieces)


def test_late_int8_is_calibrated_on_late_passages(tmp_path, tiny_model):
    """int8's ranges come from the sample run through the job's own path: here the sample is
    every text, so the ranges are the min and max of the late passages' float32 vectors."""
    import json

    docs = [" ".join(texts(40, seed=6)[i : i + 4]) for i in range(0, 40, 2)]
    write_shard(tmp_path / "in" / "a.parquet", docs)
    options = dict(chunk_tokens=8, chunking="late")
    run_ok(tmp_path / "in", tmp_path / "f32", tiny_model, **options)
    run_ok(tmp_path / "in", tmp_path / "i8", tiny_model, output_dtype="int8", **options)
    exact = pq.read_table(tmp_path / "f32" / "a.parquet")
    name = next(c for c in exact.column_names if c.startswith("emb_"))
    meta = pq.read_schema(tmp_path / "i8" / "a.parquet").metadata
    ranges = json.loads(meta[b"embed_etl.int8_ranges"])[name]
    want = np.asarray(exact.column(name).to_pylist(), np.float32)
    assert np.abs(np.asarray(ranges["min"]) - want.min(axis=0)).max() < 1e-5
    assert np.abs(np.asarray(ranges["max"]) - want.max(axis=0)).max() < 1e-5


def test_late_nested_is_late_rows_regrouped(tmp_path, tiny_model):
    """--chunk-layout nested with --chunking late: a row per input row whose lists are the
    late passages of the rows layout, in order (the windows keep a text's passages together)."""
    docs: list = [" ".join(texts(60, seed=8)[i : i + 5]) for i in range(0, 60, 3)]
    docs[4] = None
    write_shard(tmp_path / "in" / "a.parquet", docs)
    options = dict(chunk_tokens=8, chunking="late", batch_size=2, sort_window=16)
    run_ok(tmp_path / "in", tmp_path / "rows", tiny_model, **options)
    run_ok(tmp_path / "in", tmp_path / "nested", tiny_model, chunk_layout="nested", **options)
    rows = pq.read_table(tmp_path / "rows" / "a.parquet").to_pylist()
    nested = pq.read_table(tmp_path / "nested" / "a.parquet").to_pylist()
    assert [r["id"] for r in nested] == list(range(len(docs)))
    name = next(c for c in pq.read_schema(tmp_path / "rows" / "a.parquet").names if "emb_" in c)
    for row in nested:
        mine = [r for r in rows if r["id"] == row["id"]]
        if row["id"] == 4:
            assert row[name] is None and row["chunk_spans"] is None
            continue
        assert [(s["start"], s["end"]) for s in row["chunk_spans"]] == [
            (r["chunk_start"], r["chunk_end"]) for r in mine
        ]
        assert row[name] == [r[name] for r in mine]
