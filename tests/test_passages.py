"""Passages of at most N tokens ("chunks as output"): spans that cover every text, cut at word
starts, each re-tokenizing alone to at most N tokens, for WordPiece, byte-level BPE and Unigram
tokenizers and the packaged model's own."""

from __future__ import annotations

import random
import re
from types import SimpleNamespace

import numpy as np
import pytest

from etl.stages.read.passages import Passages, cut_passages
from tests.models import CASES, WORDS, build_tokenizer, texts

SPECIAL = [
    "é", "naïve", "Straße", "中文字符", "😀", "don't", "e.g.", "x" * 30, "(see", "it)", "3.14",
    "supercalifragilisticexpialidocious", "...", "—", "snake_case_name", "http://a.b/c?d=e",
]  # fmt: skip
SEPARATORS = [" ", " ", " ", " ", "  ", "\n", "\n\n", "\t", ". ", "! ", "? ", ", ", ".\n", " \n "]


def random_texts(n: int, seed: int) -> list[str | None]:
    """Texts of 0 to 400 words: the models' words, unicode, long words, punctuation, runs of
    spaces, newlines and blank lines; some None."""
    rng = random.Random(seed)
    out: list[str | None] = []
    for _ in range(n):
        if rng.random() < 0.05:
            out.append(None)
            continue
        parts = []
        for _ in range(rng.choice([0, 1, 3, 12, 40, 120, 400])):
            parts.append(rng.choice(WORDS) if rng.random() < 0.8 else rng.choice(SPECIAL))
            parts.append(rng.choice(SEPARATORS))
        text = "".join(parts)
        out.append(text.strip() if rng.random() < 0.5 else text)
    return out


def _unigram():
    """An XLM-R style Unigram tokenizer (Metaspace, ``▁``), trained here."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    trainer = trainers.UnigramTrainer(
        vocab_size=200, special_tokens=["<pad>", "<unk>"], unk_token="<unk>", show_progress=False
    )
    tok.train_from_iterator(texts(400, seed=99), trainer)
    return SimpleNamespace(backend_tokenizer=tok)


@pytest.fixture(scope="session")
def tokenizers(tmp_path_factory) -> dict:
    """WordPiece (tiny, and the packaged model's bert-base-uncased vocabulary), byte-level BPE
    (RoBERTa and a Qwen-style decoder), Unigram."""
    from etl.model.locate import resolve_model
    from etl.stages.read.tokenizer import load_tokenizer

    built = {"minilm": load_tokenizer(resolve_model(None, None, None)), "unigram": _unigram()}
    for case in CASES:
        if case.arch in ("bert", "roberta", "qwen3"):
            built[case.arch] = build_tokenizer(case, tmp_path_factory.mktemp(case.arch))[0]
    return built


WORDPIECE = ("bert", "minilm")
ALL = ("bert", "minilm", "roberta", "qwen3", "unigram")


def _count(tokenizer, strings: list[str]) -> list[int]:
    backend = tokenizer.backend_tokenizer
    backend.no_padding()
    backend.no_truncation()
    return [len(e.ids) for e in backend.encode_batch(strings, add_special_tokens=False)]


def _spans(found: Passages, row: int) -> list[tuple[int, int, int]]:
    at = found.rows == row
    return list(
        zip(
            found.starts[at].tolist(),
            found.ends[at].tolist(),
            found.tokens[at].tolist(),
            strict=True,
        )
    )


def _check(tokenizer, items: list[str | None], found: Passages, n: int, overlap: int, slack: int):
    """Order, coverage, word-start cuts, and every passage at most n tokens alone."""
    assert found.rows.dtype == np.int64 and found.tokens.dtype == np.int32
    assert found.starts.dtype == np.int32 and found.ends.dtype == np.int32
    assert np.all(np.diff(found.rows) >= 0)
    assert set(found.rows.tolist()) == set(range(len(items)))
    strings = [
        items[r][s:e]
        for r, s, e in zip(found.rows, found.starts, found.ends, strict=True)
        if s >= 0
    ]
    counts = [k for k, s in zip(found.tokens.tolist(), found.starts, strict=True) if s >= 0]
    assert _count(tokenizer, strings) == counts
    assert max(counts) <= n
    whole = _count(tokenizer, [t or "" for t in items])
    shared = pairs = fitting = 0
    for row, text in enumerate(items):
        spans = _spans(found, row)
        if text is None:
            assert spans == [(-1, -1, 0)]
            continue
        starts, ends = [s for s, _, _ in spans], [e for _, e, _ in spans]
        assert starts[0] == 0 and ends[-1] == len(text)
        assert all(s < e for s, e in zip(starts, ends, strict=True)) or spans == [(0, 0, 0)]
        assert starts == sorted(set(starts)) and ends == sorted(set(ends))
        if overlap == 0:
            assert starts[1:] == ends[:-1]
        else:  # about `overlap` tokens shared, none where the next word would not fit
            shared += sum(s < e for s, e in zip(starts[1:], ends[:-1], strict=True))
            pairs += len(spans) - 1
        if whole[row] > n:
            assert len(spans) > 1
        words = re.findall(r"\S+", text)
        if words and max(_count(tokenizer, words)) <= n - slack:  # then cut at word starts only
            assert all(text[cut - 1].isspace() for cut in starts[1:] + ends[:-1]), text
            fitting += 1
    assert fitting >= 3
    assert shared >= 0.8 * pairs


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("n,overlap", [(5, 0), (8, 0), (8, 3), (32, 0), (32, 12), (32, 31)])
def test_passages_cover_each_text_in_order_and_fit(tokenizers, name, n, overlap):
    items = random_texts(40, seed=n * 100 + overlap)
    found = cut_passages(tokenizers[name], items, n, overlap)
    _check(tokenizers[name], items, found, n, overlap, 0 if name in WORDPIECE else 3)
    assert len(found.rows) > len(items)  # some texts were cut


@pytest.mark.parametrize("name", ALL)
def test_sentence_mode_keeps_the_same_guarantees(tokenizers, name):
    items = random_texts(40, seed=7)
    for n, overlap in [(6, 0), (16, 5), (64, 0)]:
        found = cut_passages(tokenizers[name], items, n, overlap, boundary="sentence")
        _check(tokenizers[name], items, found, n, overlap, 0 if name in WORDPIECE else 3)


@pytest.mark.parametrize("name", WORDPIECE)
@pytest.mark.parametrize("n", [1, 5, 30])
def test_wordpiece_passages_are_the_texts_tokens_in_order(tokenizers, name, n):
    """At word starts WordPiece gives a slice the pieces it had inside the text: the passages'
    tokens are the whole text's, each passage as full as the budget allows."""
    tokenizer = tokenizers[name]
    items = [t for t in random_texts(60, seed=n) if t is not None]
    found = cut_passages(tokenizer, items, n)
    backend = tokenizer.backend_tokenizer
    compared = 0
    for row, text in enumerate(items):
        spans = _spans(found, row)
        if any(not text[s - 1].isspace() for s, _, _ in spans[1:]):
            continue  # a word over n tokens, cut between its pieces
        compared += 1
        parts = backend.encode_batch([text[s:e] for s, e, _ in spans], add_special_tokens=False)
        assert [i for p in parts for i in p.ids] == backend.encode(
            text, add_special_tokens=False
        ).ids
        for s, e, _ in spans[:-1]:  # the next word did not fit
            word_end = re.compile(r"\s*\S+").match(text, e).end()
            assert len(backend.encode(text[s:word_end], add_special_tokens=False).ids) > n
    assert compared >= 5


def test_overlap_shares_that_many_tokens(tokenizers):
    """One token a word: consecutive passages share exactly ``overlap`` words."""
    rng = random.Random(3)
    text = " ".join(rng.choice(WORDS) for _ in range(100))
    for n, overlap in [(8, 3), (8, 1), (8, 7), (20, 10)]:
        spans = _spans(cut_passages(tokenizers["bert"], [text], n, overlap), 0)
        assert all(k == n for _, _, k in spans[:-1])
        shared = [text[s:e] for (s, _, _), (_, e, _) in zip(spans[1:], spans[:-1], strict=True)]
        assert _count(tokenizers["bert"], shared) == [overlap] * len(shared)


def test_sentence_mode_packs_whole_sentences(tokenizers):
    tokenizer = tokenizers["minilm"]
    rng = random.Random(5)
    sentences = []
    for _ in range(80):
        words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 9)))
        sentences.append(words.capitalize() + rng.choice(".!?") + rng.choice([" ", "\n", "\n\n"]))
    text = "".join(sentences)
    ends = {m.end() for m in re.finditer(r"[.!?]\s+", text)}
    found = cut_passages(tokenizer, [text], 24, boundary="sentence")
    spans = _spans(found, 0)
    assert len(spans) > 5
    for s, e, _ in spans[:-1]:
        assert e in ends  # at a sentence end
        following = min(x for x in ends if x > e)
        assert _count(tokenizer, [text[s:following]])[0] > 24  # the next sentence did not fit
    by_tokens = _spans(cut_passages(tokenizer, [text], 24), 0)
    assert any(e not in ends for _, e, _ in by_tokens[:-1])


def test_sentence_ends_newlines_and_blank_lines(tokenizers):
    """A sentence ends at . ! ? before whitespace (a closing bracket or quote may come
    between), at a newline, at a blank line; one longer than n is cut at word starts."""
    text = "One two three. Four five six\nseven eight (nine ten.) Eleven\n\ntwelve thirteen x"

    def cut(n: int) -> list[str]:
        found = cut_passages(tokenizers["minilm"], [text], n, boundary="sentence")
        return [text[s:e] for s, e, _ in _spans(found, 0)]

    assert cut(7) == [
        "One two three. Four five six\n",
        "seven eight (nine ten.) ",
        "Eleven\n\ntwelve thirteen x",
    ]
    assert cut(8)[1:] == ["seven eight (nine ten.) Eleven\n\n", "twelve thirteen x"]
    assert cut(5) == [
        "One two three. ",
        "Four five six\n",
        "seven eight (nine ",
        "ten.) Eleven\n\n",
        "twelve thirteen x",
    ]


def test_a_sentence_longer_than_n_is_cut_at_word_starts(tokenizers):
    text = "Short one. " + " ".join(["word"] * 50) + ". Tail here."
    found = cut_passages(tokenizers["minilm"], [text], 8, boundary="sentence")
    spans = _spans(found, 0)
    assert spans[0][:2] == (0, len("Short one. "))
    assert all(text[s - 1] == " " for s, _, _ in spans[1:]) and max(found.tokens) <= 8


@pytest.mark.parametrize("name", ("minilm", "roberta", "qwen3", "unigram"))  # tiny: [UNK]
def test_a_word_longer_than_n_is_cut_between_its_tokens(tokenizers, name):
    text = "a " + "qzxv" * 20 + " b"
    found = cut_passages(tokenizers[name], [text], 6)
    spans = _spans(found, 0)
    assert len(spans) > 3 and max(k for _, _, k in spans) <= 6
    assert any(not text[s - 1].isspace() for s, _, _ in spans[1:])


@pytest.mark.parametrize("name", ("roberta", "qwen3", "unigram"))
def test_byte_level_and_unigram_slices_that_grow_are_cut_again(tokenizers, name):
    """Inside the text ``Ġcat`` is one token; a passage ending ``cat `` spends one more on the
    space: such a passage is cut again, shorter."""
    text = "the cat sat on the mat  and\n\nthe dog ran far away " * 6
    for n in (2, 3, 5):
        found = cut_passages(tokenizers[name], [text], n)
        assert max(found.tokens) <= n
        assert _count(tokenizers[name], [text[s:e] for s, e, _ in _spans(found, 0)]) == list(
            found.tokens
        )


@pytest.mark.parametrize("name", ALL)
def test_none_empty_and_blank_texts(tokenizers, name):
    items = [None, "", "   \n\t ", "the cat", None]
    found = cut_passages(tokenizers[name], items, 4)
    assert found.rows.tolist() == [0, 1, 2, 3, 4]
    assert found.starts.tolist() == [-1, 0, 0, 0, -1]
    assert found.ends.tolist() == [-1, 0, 6, 7, -1]
    assert found.tokens[[0, 1, 4]].tolist() == [0, 0, 0]
    assert found.tokens[3] == _count(tokenizers[name], ["the cat"])[0]
    assert found.tokens[2] == _count(tokenizers[name], ["   \n\t "])[0]
    nothing = cut_passages(tokenizers[name], [], 4)
    assert len(nothing.rows) == len(nothing.starts) == len(nothing.tokens) == 0


def test_bad_arguments_are_refused(tokenizers):
    tokenizer = tokenizers["bert"]
    for tokens, overlap in [(0, 0), (4, -1), (4, 4), (4, 9), (True, 0), (4.0, 0)]:
        with pytest.raises(ValueError, match=r"tokens|overlap"):
            cut_passages(tokenizer, ["the cat"], tokens, overlap)
    with pytest.raises(ValueError, match="tokens, sentence") as raised:
        cut_passages(tokenizer, ["the cat"], 4, boundary="paragraph")
    assert "paragraph" in str(raised.value)
