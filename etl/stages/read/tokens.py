"""Tokenize a window of texts: truncated ids for the model and every text's full token count.

Huge texts (a 2 MB string) must not cost memory in proportion to their length: the fast
tokenizer keeps a heavy record per token (offsets, strings, overflow windows), about 1 KB each.
So a long text is tokenized from a head cut at a whitespace, which gives the same first tokens
as the whole text, and its full length is counted piece by piece.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from etl.stages.read.joined import joined_tokenizer
from etl.stages.read.sequences import Sequences
from etl.stages.read.tokenizer import Layout

PIECE_CHARS = 1 << 16  # counting a long text: this many characters at a time
GROUP_CHARS = 1 << 18  # tokenizing with offsets (passages, late chunking): characters a call


@dataclass(frozen=True)
class Tokenized:
    """A window's texts as the model sees them, and what truncation took from them."""

    sequences: Sequences  # one per text, at most max_length tokens, special tokens included
    n_tokens: np.ndarray  # (N,) int64 tokens of each whole text, special tokens included
    whole: dict[int, np.ndarray]  # keep_whole: the ids of each text longer than max_length,
    # special tokens left out, by position


@dataclass
class Encoded:
    """A window's texts through the Rust tokenizer."""

    ids: Sequences  # one per text, of its head, special tokens added, not truncated
    counts: dict[int, int]  # texts cut to a head, long: their full token counts
    whole: dict[int, np.ndarray]  # keep_whole: cut long texts, their ids without specials


def tokenize_window(
    tokenizer: Any,
    texts: list[str],
    max_length: int,
    layout: Layout,
    keep_whole: bool = False,
    special_tokens: bool = True,
) -> Tokenized:
    """Every text tokenized once, in one parallel call, without truncation (the Rust tokenizer
    tokenizes a whole text before it truncates, so the full count costs nothing more), then
    truncated to max_length as the tokenizer would, in numpy: encode_window, then
    finish_window.

    A huge text is tokenized from a head cut at a whitespace (the same first tokens) and
    counted piece by piece. With ``keep_whole`` (--long-text chunk) the ids of every text
    longer than max_length are kept whole, for its windows. Without ``special_tokens`` (a
    static sparse route) the tokenizer adds none, and ``layout`` must say so.
    """
    encoded = encode_window(tokenizer, texts, max_length, keep_whole, special_tokens)
    return finish_window(encoded, max_length, layout, keep_whole, tokenizer)


def encode_window(
    tokenizer: Any,
    texts: list[str],
    max_length: int,
    keep_whole: bool = False,
    special_tokens: bool = True,
) -> Encoded:
    """The part that calls the tokenizer (the GIL released while it runs on every core); the
    only part that may, so that one thread at a time uses it."""
    count = len(texts)
    budget = head_budget(max_length)
    cut = np.flatnonzero(np.fromiter(map(len, texts), np.int64, count) > budget)
    heads = list(texts) if len(cut) else texts
    # Truncating on the left keeps a text's last tokens: tokenize its tail, not its head.
    part = tail if getattr(tokenizer, "truncation_side", "right") == "left" else head
    for i in cut:
        heads[i] = part(texts[i], budget)
    ids = _ids(tokenizer, heads, special_tokens)
    counts: dict[int, int] = {}
    whole: dict[int, np.ndarray] = {}
    grown: dict[int, np.ndarray] = {}
    uncounted: list[int] = []  # counted together below
    specials = _specials(tokenizer) if special_tokens else 0
    for i in cut.tolist():
        # A head too short to fill max_length tokens (a text of very long words): take more.
        chars, length = budget, int(ids.lengths[i])
        while length < max_length and len(heads[i]) < len(texts[i]):
            chars *= 4
            heads[i] = part(texts[i], chars)
            grown[i] = np.asarray(_encodings(tokenizer, [heads[i]], special_tokens)[0].ids)
            length = len(grown[i])
        if len(heads[i]) == len(texts[i]):
            continue  # the head grew into the whole text: its count is exact
        if keep_whole:
            whole[i] = content_ids(tokenizer, texts[i])
            counts[i] = len(whole[i]) + specials
        else:
            uncounted.append(i)
    if uncounted:  # in one parallel call, the GIL released, as far as memory allows
        found = count_many(tokenizer, [texts[i] for i in uncounted], special_tokens)
        counts.update(zip(uncounted, found, strict=True))
    return Encoded(ids.replaced(grown) if grown else ids, counts, whole)


def finish_window(
    encoded: Encoded,
    max_length: int,
    layout: Layout,
    keep_whole: bool = False,
    tokenizer: Any = None,
) -> Tokenized:
    """The ids taken out of the encodings and made sequences, counted and truncated, without
    calling the tokenizer (another thread may be running it on the next window)."""
    full = encoded.ids
    n_tokens = full.lengths.copy()
    for i, counted in encoded.counts.items():
        n_tokens[i] = counted
    whole = dict(encoded.whole)
    before, after = len(layout.prefix), len(layout.suffix)
    if keep_whole:
        for i in np.flatnonzero(n_tokens > max_length).tolist():
            if i not in whole:  # tokenized whole already: its ids between the specials
                ids = full.row(i)
                whole[i] = ids[before : len(ids) - after].copy()
    left = getattr(tokenizer, "truncation_side", "right") == "left"
    keep_head = before if left else max_length - after
    return Tokenized(full.truncated(max_length, keep_head), n_tokens, whole)


def head_budget(max_length: int) -> int:
    """Characters that hold max_length tokens with a wide margin (English is ~4.5 per token)."""
    return max(4096, 16 * max_length)


def head(text: str, chars: int) -> str:
    """The text up to the first whitespace at or after ``chars`` (so no word is cut)."""
    return text[: piece_end(text, 0, chars)]


def tail(text: str, chars: int) -> str:
    """The text's last ``chars`` characters or a few more, from just after a whitespace (so no
    word is cut, within 256 characters), the same last tokens as the whole text."""
    start = len(text) - chars
    if start <= 0:
        return text
    for i in range(start, max(-1, start - 256), -1):
        if text[i].isspace():
            return text[i + 1 :]
    return text[start:]


def piece_end(text: str, start: int, chars: int) -> int:
    """End of a piece starting at ``start``: the first whitespace from start + chars on.

    Without whitespace nearby the piece ends mid-word; that word may tokenize differently, but
    it lies far beyond the first tokens unless words are hundreds of characters long.
    """
    end = start + chars
    if end >= len(text):
        return len(text)
    for i in range(end, min(len(text), end + 256)):
        if text[i].isspace():
            return i
    return end


def count_many(tokenizer: Any, texts: list[str], special_tokens: bool = True) -> list[int]:
    """count_tokens of each text: those up to PIECE_CHARS in one batch call."""
    short = [t for t in texts if len(t) <= PIECE_CHARS]
    encode = _backend(tokenizer).encode_batch_fast
    found = iter([len(e) for e in encode(short, add_special_tokens=special_tokens)])
    return [
        next(found) if len(t) <= PIECE_CHARS else count_tokens(tokenizer, t, special_tokens)
        for t in texts
    ]


def count_tokens(tokenizer: Any, text: str, special_tokens: bool = True) -> int:
    """Tokens of the whole text, special tokens included, in bounded memory."""
    if len(text) <= PIECE_CHARS:
        return len(_backend(tokenizer).encode(text, add_special_tokens=special_tokens))
    specials = _specials(tokenizer) if special_tokens else 0
    return specials + sum(len(piece) for piece in _pieces(tokenizer, text))


def content_ids(tokenizer: Any, text: str) -> np.ndarray:
    """Token ids (int32) of the whole text without special tokens, tokenized piece by piece.

    Pieces end at whitespace, which BERT-style pre-tokenizers split on anyway, so the ids are
    those of the whole text; time and memory grow with one piece, not with the text.
    """
    pieces = [np.asarray(piece.ids, dtype=np.int32) for piece in _pieces(tokenizer, text)]
    return np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int32)


def _pieces(tokenizer: Any, text: str):
    """Encodings (no special tokens) of the text's pieces of about PIECE_CHARS characters.

    Each piece but the first starts at a whitespace, so words keep their boundaries.
    """
    backend = _backend(tokenizer)
    start = 0
    while start < len(text):
        end = piece_end(text, start, PIECE_CHARS)
        yield backend.encode(text[start:end], add_special_tokens=False)
        start = end


def _backend(tokenizer: Any):
    backend = tokenizer.backend_tokenizer
    # A batch call leaves truncation on, and a tokenizer.json may ask for padding (all-MiniLM's
    # pads to 128): counting needs neither. The next batch call sets both again.
    backend.no_truncation()
    backend.no_padding()
    return backend


def _specials(tokenizer: Any) -> int:
    """Special tokens the tokenizer adds to one sequence ([CLS] and [SEP] for BERT)."""
    return len(_backend(tokenizer).encode("", add_special_tokens=True))


def _ids(tokenizer: Any, texts: list[str], special_tokens: bool) -> Sequences:
    """Each text's ids, special tokens added: many texts a call where the tokenizer allows
    (etl.stages.read.joined), else an Encoding a text."""
    joined = joined_tokenizer(tokenizer, special_tokens)
    found = joined.encode(texts) if joined is not None else None
    if found is None:
        found = Sequences.from_lists([e.ids for e in _encodings(tokenizer, texts, special_tokens)])
    return found


def _encodings(tokenizer: Any, texts: list[str], special_tokens: bool = True) -> list:
    """The encoding of each text, special tokens added, neither truncated nor padded: the Rust
    tokenizer's own batch call, parallel on every core (transformers' fast tokenizers wrap
    the same object). The job never reads offsets: encode_batch_fast (tokenizers 0.20+) skips
    them, 1.23x faster on the corpus, the same ids."""
    backend = _backend(tokenizer)
    encode = getattr(backend, "encode_batch_fast", backend.encode_batch)
    return encode(texts, add_special_tokens=special_tokens)
