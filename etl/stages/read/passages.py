"""Texts cut into passages of at most N tokens ("chunks as output"): character spans that cover
each text, cut where a word starts, each embedded later as the string text[start:end].

The text is tokenized once; cuts are chosen on its tokens' character offsets (a cut goes
before a word's first visible character, so the whitespace between words ends the earlier
passage). A word longer than N tokens is cut between its tokens. Then every passage string is
tokenized again, in one call, because a slice need not tokenize as it did inside the text:
WordPiece gives the same pieces, but byte-level BPE (``Ġ``) and Unigram (``▁``) may spend a
token or two on a passage's trailing whitespace or on its first word without the space before
it. A text with a passage over N is cut again from that passage on with a smaller budget
(smaller by the excess), until every passage fits.

Kept here rather than taken from a text splitter (langchain's, semantic-text-splitter): the
job needs spans on its own tokenizer object's offsets, sized by one batch call for the texts
and one for the passages, not by calls per candidate chunk, and no new dependency.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from dataclasses import dataclass
from typing import Any

import numpy as np

BOUNDARIES = ("tokens", "sentence")
Span = tuple[int, int, int, int]  # a passage: its first token, the token after, start, end

_TABLE = 0x3001  # every character str.isspace() accepts is below U+3001
_SPACE = np.array([chr(c).isspace() for c in range(_TABLE)])
_NEWLINE = np.zeros(_TABLE, dtype=bool)  # where str.splitlines() breaks a line
_NEWLINE[[ord(c) for c in "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"]] = True
_END = np.zeros(_TABLE, dtype=bool)  # sentence ends: . ! ?
_END[[ord(c) for c in ".!?"]] = True
_CLOSER = np.zeros(_TABLE, dtype=bool)  # may follow a sentence end: ." .) .'
_CLOSER[[ord(c) for c in "\"')]\u2019\u201d\u00bb"]] = True


@dataclass(frozen=True)
class Passages:
    """Every text's passages, in text order."""

    rows: np.ndarray  # (P,) int64: the index in ``texts`` of each passage; ascending
    starts: np.ndarray  # (P,) int32: character offsets (Python str indices) into that text
    ends: np.ndarray  # (P,) int32
    tokens: np.ndarray  # (P,) int32: tokens of text[start:end] alone, no special tokens


@dataclass(frozen=True)
class _Text:
    """Where one text may be cut, by token position: before token k, at character chars[k]."""

    text: str
    n: int  # its tokens
    chars: np.ndarray  # (n,) the first visible character of each token
    inner: list[int]  # token positions at a new character: a cut inside a long word
    words: list[int]  # token positions where a word starts (whitespace before it)
    sentences: list[int]  # word starts after a sentence end, a newline or a blank line


def cut_passages(
    tokenizer: Any,
    texts: list[str | None],
    tokens: int,
    overlap: int = 0,
    boundary: str = "tokens",
) -> Passages:
    """Each text cut into passages of at most ``tokens`` tokens (special tokens not counted),
    consecutive ones sharing about ``overlap`` tokens; with ``boundary="sentence"`` passages
    end after whole sentences where one fits. A None text gets one passage (-1, -1), an empty
    or whitespace-only one a single passage over the whole text.

    A passage holds at least one character and the whitespace after it, so where that alone
    takes more than ``tokens`` tokens (byte-level BPE: an emoji's 4 bytes and a space, with
    tokens < 5) the passage stays over.
    """
    if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 1:
        raise ValueError(f"tokens must be a positive int, got {tokens!r}")
    if isinstance(overlap, bool) or not isinstance(overlap, int) or not 0 <= overlap < tokens:
        raise ValueError(f"overlap must be an int with 0 <= overlap < tokens, got {overlap!r}")
    if boundary not in BOUNDARIES:
        raise ValueError(f"boundary must be one of {', '.join(BOUNDARIES)}; got {boundary!r}")
    backend = tokenizer.backend_tokenizer
    backend.no_truncation()  # a tokenizer.json may truncate or pad every encoding
    backend.no_padding()
    live = [i for i, t in enumerate(texts) if t and not t.isspace()]
    encodings = backend.encode_batch([texts[i] for i in live], add_special_tokens=False)
    docs = {
        i: _text(texts[i], e.offsets, boundary == "sentence")
        for i, e in zip(live, encodings, strict=True)
    }
    del encodings
    cuts = {i: _cut(doc, 0, 0, tokens, overlap) for i, doc in docs.items()}
    budgets = dict.fromkeys(docs, tokens)
    for i, text in enumerate(texts):  # blank: one passage, its whitespace perhaps tokens
        if text is not None and i not in docs:
            cuts[i], budgets[i] = [(0, 0, 0, len(text))], 1
    counts = _recount(backend, texts, cuts)
    while over := _over(counts, tokens, budgets):
        redo = {}
        for i, first in over.items():  # keep the passages before the first one over
            spans = zip(cuts[i], counts[i], strict=True)  # each over one, less its excess:
            fits = [c - a - k + tokens for (a, c, _, _), k in spans if k > tokens]
            budgets[i] = max(1, min(budgets[i] - 1, *fits))
            start, floor = cuts[i][first][0], cuts[i][first - 1][1] if first else 0
            cuts[i], counts[i] = cuts[i][:first], counts[i][:first]
            redo[i] = _cut(docs[i], start, floor, budgets[i], min(overlap, budgets[i] - 1))
        again = _recount(backend, texts, redo)
        for i, more in redo.items():
            cuts[i] += more
            counts[i] += again[i]
    return _assemble(texts, cuts, counts)


def _text(text: str, offsets: list[tuple[int, int]], sentence: bool) -> _Text:
    """A text's cut positions, from its tokens' character offsets, in numpy."""
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    small = np.minimum(codes, _TABLE - 1)
    space = (codes < _TABLE) & _SPACE[small]
    solid = np.flatnonzero(~space)  # non-whitespace characters; at least one (not blank)
    spans = np.asarray(offsets, dtype=np.int64).reshape(-1, 2)
    begin, end = spans[:, 0], spans[:, 1]
    # A token's first visible character: after the space a byte-level or Metaspace token
    # carries; a token of whitespace alone keeps its start.
    at = np.searchsorted(solid, begin)
    seen = solid[np.minimum(at, len(solid) - 1)]
    visible = (at < len(solid)) & (seen < end)
    chars = np.where(visible, seen, begin)
    new = np.zeros(len(chars), dtype=bool)  # a character no earlier token reached
    new[1:] = chars[1:] > np.maximum.accumulate(chars)[:-1]
    word = new & visible & space[np.maximum(chars - 1, 0)] & (chars > 0)
    words = np.flatnonzero(word)
    sentences = np.zeros(0, dtype=np.int64)
    if sentence and len(words):
        first = chars[words]
        before = np.searchsorted(solid, first) - 1  # the visible character before, if any
        last = solid[np.maximum(before, 0)]
        ends = (before < 0) | (_END[small[last]] & (codes[last] < _TABLE))
        prior = np.maximum(last - 1, 0)
        closed = _CLOSER[small[last]] & (last > 0)
        ends |= closed & _END[small[prior]] & (codes[prior] < _TABLE)
        lines = np.cumsum((codes < _TABLE) & _NEWLINE[small])
        ends |= lines[first - 1] > lines[last]  # a newline in the whitespace between
        sentences = words[ends]
    return _Text(
        text=text,
        n=len(chars),
        chars=chars,
        inner=np.flatnonzero(new).tolist(),
        words=words.tolist(),
        sentences=sentences.tolist(),
    )


def _cut(doc: _Text, start: int, floor: int, budget: int, overlap: int) -> list[Span]:
    """The passages from token ``start`` to the text's end, each ending past the one before
    (the first past ``floor``): at the last sentence start (sentence mode), else word start,
    else new character within ``budget`` tokens. The next starts about ``overlap`` tokens
    back, at a word start, but not so far back that the next word start is out of reach."""
    out = []
    a = start
    while True:
        if doc.n <= a + budget:
            out.append((a, doc.n, 0 if a == 0 else int(doc.chars[a]), len(doc.text)))
            return out
        lo, hi = max(a, floor), a + budget
        c = _end(doc, lo, hi)
        if (
            c is None
            and a < floor
            and (doc.n <= floor + budget or _end(doc, floor, floor + budget))
        ):
            a = floor  # the overlap left no room for the next word: none this time
            continue
        if c is None:  # a word longer than the budget: cut between its tokens
            c = _last(doc.inner, lo, hi)
        if c is None and a < floor:
            a = floor
            continue
        if c is None and (c := _first_after(doc.inner, a)) is None:  # one character left
            out.append((a, doc.n, 0 if a == 0 else int(doc.chars[a]), len(doc.text)))
            return out
        out.append((a, c, 0 if a == 0 else int(doc.chars[a]), int(doc.chars[c])))
        floor = c
        if overlap:
            after = _first_after(doc.words, c) or doc.n  # the next passage's first end
            lo = a if after - c > budget else max(a, after - budget - 1)
            back = _near(doc.words, lo, c, c - overlap)
            if back is None and _last(doc.words, c - 1, c) is None:  # c inside a long word
                back = _near(doc.inner, lo, c, c - overlap)
            a = back or c
        else:
            a = c


def _end(doc: _Text, lo: int, hi: int) -> int | None:
    """The last sentence start (sentence mode), else word start, in (lo, hi]."""
    return _last(doc.sentences, lo, hi) or _last(doc.words, lo, hi)


def _last(positions: list[int], lo: int, hi: int) -> int | None:
    """The largest position p with lo < p <= hi, or None."""
    at = bisect_right(positions, hi) - 1
    return positions[at] if at >= 0 and positions[at] > lo else None


def _first_after(positions: list[int], lo: int) -> int | None:
    at = bisect_right(positions, lo)
    return positions[at] if at < len(positions) else None


def _near(positions: list[int], lo: int, hi: int, target: int) -> int | None:
    """The position p with lo < p < hi nearest to target (the earlier one on a tie), or None."""
    first, stop = bisect_right(positions, lo), bisect_left(positions, hi)
    at = bisect_left(positions, target, first, stop)
    found = positions[max(at - 1, first) : min(at + 1, stop)]
    return min(found, key=lambda p: (abs(p - target), p)) if found else None


def _recount(
    backend: Any, texts: list[str | None], cuts: dict[int, list[Span]]
) -> dict[int, list[int]]:
    """Tokens of each passage string alone, every passage of ``cuts`` in one call."""
    strings = [texts[i][s:e] for i, spans in cuts.items() for _, _, s, e in spans]
    encode = getattr(backend, "encode_batch_fast", backend.encode_batch)
    found = iter([len(e.ids) for e in encode(strings, add_special_tokens=False)])
    return {i: [next(found) for _ in spans] for i, spans in cuts.items()}


def _over(counts: dict[int, list[int]], tokens: int, budgets: dict[int, int]) -> dict[int, int]:
    """Texts that may be cut shorter and have a passage over ``tokens``: the first such."""
    over = {}
    for i, found in counts.items():
        if budgets[i] > 1 and max(found) > tokens:
            over[i] = int(np.argmax(np.asarray(found) > tokens))
    return over


def _assemble(
    texts: list[str | None],
    cuts: dict[int, list[Span]],
    counts: dict[int, list[int]],
) -> Passages:
    """One row a passage, in text order; a None text one passage (-1, -1) of no tokens."""
    if not texts:
        none = np.zeros(0, dtype=np.int32)
        return Passages(np.zeros(0, dtype=np.int64), none, none.copy(), none.copy())
    spans = [cuts.get(i, [(0, 0, -1, -1)]) for i in range(len(texts))]
    sizes = [counts.get(i, [0]) for i in range(len(texts))]
    flat = np.array([span for found in spans for span in found], dtype=np.int64)
    return Passages(
        rows=np.repeat(np.arange(len(texts), dtype=np.int64), [len(f) for f in spans]),
        starts=flat[:, 2].astype(np.int32),
        ends=flat[:, 3].astype(np.int32),
        tokens=np.concatenate([np.asarray(f, dtype=np.int32) for f in sizes]),
    )
