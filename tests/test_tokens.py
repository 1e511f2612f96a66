"""Tokenizing a window: truncated ids and full counts, the same as tokenizing whole texts."""

from __future__ import annotations

import pytest

from etl.model.locate import resolve_model
from etl.stages.read.tokenizer import layout, load_tokenizer
from etl.stages.read.tokens import PIECE_CHARS, count_tokens, head, tokenize_window


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(resolve_model(None))


def _full(tokenizer, text):
    tokenizer.backend_tokenizer.no_truncation()
    return tokenizer(text, add_special_tokens=True)["input_ids"]


def test_window_ids_and_counts_equal_whole_text_tokenization(tokenizer):
    paragraph = "Attention masks tell the model which positions are real tokens, not padding. "
    texts = ["Hi", "", "   ", paragraph, paragraph * 40, paragraph * 2000, "x" * 10_000 + " tail"]
    tokenized = tokenize_window(tokenizer, texts, 64, layout(tokenizer))
    ids, counts = tokenized.sequences, tokenized.n_tokens
    for i, text in enumerate(texts):
        full = _full(tokenizer, text)
        assert counts[i] == len(full), text[:30]
        got = ids.row(i).tolist()
        assert got == (full if len(full) <= 64 else [*full[:63], full[-1]]), text[:30]


def test_count_of_a_huge_text_is_piecewise_exact(tokenizer):
    text = "Sorting rows by length keeps padding low; ünïcödé wörds too. " * 5000
    assert len(text) > 4 * PIECE_CHARS
    assert count_tokens(tokenizer, text) == len(_full(tokenizer, text))


def test_head_never_cuts_a_word():
    text = "alpha beta gamma delta"
    assert head(text, 7) == "alpha beta"
    assert head(text, 100) == text


def test_a_tokenizer_truncating_on_the_left_keeps_a_huge_texts_last_tokens(tokenizer):
    import copy

    left = copy.deepcopy(tokenizer)
    left.truncation_side = "left"
    paragraph = "Attention masks tell the model which positions are real tokens, not padding. "
    texts = ["short text", paragraph * 400 + "the very last words"]
    tokenized = tokenize_window(left, texts, 64, layout(left))
    for i, text in enumerate(texts):
        full = _full(left, text)
        assert tokenized.n_tokens[i] == len(full)
        expected = full if len(full) <= 64 else [full[0], *full[len(full) - 63 :]]
        assert tokenized.sequences.row(i).tolist() == expected


def test_a_window_tokenized_joined_gives_each_texts_own_ids(tokenizer, corpus):
    """BERT's tokenizer tokenizes a window as a few joined strings (etl.stages.read.joined): the ids
    are those of each text alone, on real paragraphs and on texts made to break it."""
    import pyarrow.parquet as pq

    from etl.stages.read.joined import SEPARATOR, joined_tokenizer
    from etl.stages.read.tokens import _ids

    backend = tokenizer.backend_tokenizer
    joined = joined_tokenizer(tokenizer, True)
    assert joined is not None  # the default model's tokenizer qualifies
    paragraphs = pq.read_table(sorted(corpus.glob("*.parquet"))[0], columns=["text"])
    texts = [t for t in paragraphs.column("text").to_pylist()[:3000] if t is not None]
    texts += ["", " ", "[SEP] [CLS]", "a\u00a0b\u200bc", "Ωmega Ñ ﬁ ligature", "x" * 300]
    got = joined.encode(texts)
    backend.no_truncation()
    backend.no_padding()
    for i, text in enumerate(texts):
        assert got.row(i).tolist() == backend.encode(text).ids, text[:40]
    # A text holding the separator itself: that window goes text by text, the same ids.
    tricky = ["before", f"a{SEPARATOR}b", "after"]
    assert joined.encode(tricky) is None
    ids = _ids(tokenizer, tricky, True)
    assert [ids.row(i).tolist() for i in range(3)] == [backend.encode(t).ids for t in tricky]


def test_a_tokenizer_that_is_not_bert_is_never_joined(tmp_path):
    from etl.stages.read.joined import joined_tokenizer
    from tests.models import CASES, build_tokenizer

    roberta = next(c for c in CASES if c.arch == "roberta")
    tokenizer, _ = build_tokenizer(roberta, tmp_path / "bpe")
    assert joined_tokenizer(tokenizer, True) is None
