"""Tokenizing a window: truncated ids and full counts, the same as tokenizing whole texts."""

from __future__ import annotations

import pytest

from etl.model.locate import resolve_model
from etl.stages.tokenizer import layout, load_tokenizer
from etl.stages.tokens import PIECE_CHARS, count_tokens, head, tokenize_window


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
