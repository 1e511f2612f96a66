"""A window's texts tokenized as a few long strings, for tokenizers where that gives the same
ids: the Python cost of tokenizing falls from three objects a text to a few a window.

The Rust tokenizer is fast, but each text's Encoding is a Python object, and making it, taking
its ids out as a list and freeing it cost the job ~30 us a row holding the GIL (py-spy), which
capped the cores one process could keep tokenizing. Here the texts are joined with a separator
that the tokenizer knows as a special token: special tokens are split out of the input before
anything else runs, so every text between two separators is normalized, pre-tokenized and
cut into word pieces on its own, exactly as if it were encoded alone. The special tokens a text
gets ([CLS] and [SEP]) are added in numpy. Only for tokenizers whose every step works within a
text (BERT's normalizer and pre-tokenizer, WordPiece, a template post-processor), checked
against per-text encoding on tricky samples when first used; a window holding the separator
itself is tokenized text by text.
"""

from __future__ import annotations

import itertools
import os
import weakref
from typing import Any

import numpy as np

from etl.stages.read.sequences import Sequences, positions, starts_of
from etl.stages.read.tokenizer import layout

SEPARATOR = "\x00[embed-etl:next-text]\x00"
GROUPS_PER_CORE = 4  # joined strings per core: the Rust tokenizer's threads stay balanced
_SAFE = {
    "normalizer": ("BertNormalizer", "NoneType"),
    "pre_tokenizer": ("BertPreTokenizer",),
    "model": ("WordPiece",),
    "post_processor": ("TemplateProcessing", "BertProcessing", "NoneType"),
}
_SAMPLES = [
    "",
    "the cat sat on the mat.",
    "  Leading and trailing spaces  ",
    "Ünïcödé, ÇAPS and accents: café naïve",
    "中文字符 and 日本語 mixed with English",
    "tabs\tand\nnew\nlines\r\n",
    "punctuation!!! (brackets) [CLS] [SEP] [MASK] <s> </s>",
    "supercalifragilisticexpialidocious " * 3 + "x" * 150,
    "numbers 1,234.56 and e-mail someone@example.com",
    "\x00 control \x01 chars \x7f",
]
_known: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class JoinedTokenizer:
    """Tokenizes many texts at once through a copy of ``tokenizer``'s Rust tokenizer that
    knows SEPARATOR."""

    def __init__(self, tokenizer: Any, special_tokens: bool) -> None:
        from tokenizers import AddedToken, Tokenizer

        specials = layout(tokenizer)  # also turns the tokenizer's truncation and padding off
        self.tokenizer = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
        self.tokenizer.add_special_tokens([AddedToken(SEPARATOR, special=True, normalized=False)])
        self.separator = self.tokenizer.token_to_id(SEPARATOR)
        self.prefix = np.asarray(specials.prefix if special_tokens else (), np.int32)
        self.suffix = np.asarray(specials.suffix if special_tokens else (), np.int32)
        affinity = getattr(os, "sched_getaffinity", None)  # Linux; elsewhere every core
        cores = len(affinity(0)) if affinity is not None else os.cpu_count() or 1
        self.groups = GROUPS_PER_CORE * max(1, cores)

    def encode(self, texts: list[str]) -> Sequences | None:
        """Each text's ids, special tokens added; None if a text holds the separator."""
        count = len(texts)
        if not count:
            return Sequences.empty()
        bounds = np.linspace(0, count, min(self.groups, count) + 1).astype(np.int64)
        joined = [SEPARATOR.join(texts[a:b]) for a, b in itertools.pairwise(bounds)]
        encodings = self.tokenizer.encode_batch_fast(joined, add_special_tokens=False)
        ids = np.concatenate([np.asarray(e.ids, np.int32) for e in encodings])
        cuts = np.flatnonzero(ids == self.separator)
        begins, ends, offset = [], [], 0
        for encoding in encodings:  # a group's texts: from its start, or after a separator
            end = offset + len(encoding)
            inside = cuts[(cuts >= offset) & (cuts < end)]
            begins += [np.asarray([offset]), inside + 1]
            ends += [inside, np.asarray([end])]
            offset = end
        begins, ends = np.concatenate(begins), np.concatenate(ends)
        if len(begins) != count:
            return None  # a text holds the separator: it came out as several
        lengths = ends - begins
        return _with_specials(ids, begins, lengths, self.prefix, self.suffix)


def joined_tokenizer(tokenizer: Any, special_tokens: bool) -> JoinedTokenizer | None:
    """The JoinedTokenizer for ``tokenizer``, made and checked once; None where joining could
    give other ids than encoding each text alone."""
    found = _known.setdefault(tokenizer, {})
    if special_tokens not in found:
        found[special_tokens] = _checked(tokenizer, special_tokens)
    return found[special_tokens]


def _checked(tokenizer: Any, special_tokens: bool) -> JoinedTokenizer | None:
    backend = tokenizer.backend_tokenizer
    steps = {name: type(getattr(backend, name)).__name__ for name in _SAFE}
    if any(steps[name] not in allowed for name, allowed in _SAFE.items()):
        return None
    joined = JoinedTokenizer(tokenizer, special_tokens)
    alone = [backend.encode(t, add_special_tokens=special_tokens).ids for t in _SAMPLES]
    together = joined.encode(_SAMPLES)
    if together is None or [together.row(i).tolist() for i in range(len(_SAMPLES))] != alone:
        return None
    return joined


def _with_specials(
    ids: np.ndarray, begins: np.ndarray, lengths: np.ndarray, prefix: np.ndarray, suffix: np.ndarray
) -> Sequences:
    """Sequences of ``ids[begins[i] : begins[i] + lengths[i]]``, each between prefix and suffix."""
    before, after = len(prefix), len(suffix)
    full = lengths + before + after
    starts = starts_of(full)
    out = np.empty(int(full.sum()), np.int32)
    content = np.repeat(starts + before, lengths) + positions(lengths)
    out[content] = ids[np.repeat(begins, lengths) + positions(lengths)]
    if before:
        out[(starts[:, None] + np.arange(before)).ravel()] = np.tile(prefix, len(lengths))
    if after:
        tail = starts + before + lengths
        out[(tail[:, None] + np.arange(after)).ravel()] = np.tile(suffix, len(lengths))
    return Sequences(out, starts, full)
