"""Tokenize a window of texts: truncated ids for the model and every text's full token count.

Huge texts (a 2 MB string) must not cost memory in proportion to their length: the fast
tokenizer keeps a heavy record per token (offsets, strings, overflow windows), about 1 KB each.
So a long text is tokenized from a head cut at a whitespace, which gives the same first tokens
as the whole text, and its full length is counted piece by piece.
"""

from __future__ import annotations

from typing import Any

import numpy as np

PIECE_CHARS = 1 << 16  # counting a long text: this many characters at a time


def tokenize_window(
    tokenizer: Any,
    texts: list[str],
    max_length: int,
    whole: dict[int, np.ndarray] | None = None,
) -> tuple[list[list[int]], list[int]]:
    """Token ids truncated to max_length, and each text's token count before truncation.

    With ``whole`` (--long-text chunk), the ids of every text longer than max_length, special
    tokens left out, are stored there by position: each long text is tokenized once, for its
    count and its windows alike.
    """
    if not texts:
        return [], []
    head_chars = head_budget(max_length)
    heads = [text if len(text) <= head_chars else head(text, head_chars) for text in texts]
    ids = _encode(tokenizer, heads, max_length)
    for i, text in enumerate(texts):
        # A head too short to fill max_length tokens (a text of very long words): take more.
        chars = head_chars
        while len(ids[i]) < max_length and len(heads[i]) < len(text):
            chars *= 4
            heads[i] = head(text, chars)
            ids[i] = _encode(tokenizer, [heads[i]], max_length)[0]
    n_tokens = [len(x) for x in ids]
    full = [i for i, x in enumerate(ids) if len(x) >= max_length]  # possibly truncated
    if whole is None:
        # Their full counts, in one parallel call for all but huge texts (counted in pieces).
        short = [i for i in full if len(texts[i]) <= PIECE_CHARS]
        if short:
            backend = _backend(tokenizer)
            encode = getattr(backend, "encode_batch_fast", backend.encode_batch)
            counted = encode([texts[i] for i in short], add_special_tokens=True)
            for i, encoding in zip(short, counted, strict=True):
                n_tokens[i] = len(encoding)
        for i in full:
            if len(texts[i]) > PIECE_CHARS:
                n_tokens[i] = count_tokens(tokenizer, texts[i])
        return ids, n_tokens
    for i in full:  # --long-text chunk: keep the ids of each text longer than a window
        content = content_ids(tokenizer, texts[i])
        n_tokens[i] = len(content) + _specials(tokenizer)
        if n_tokens[i] > max_length:
            whole[i] = content
    return ids, n_tokens


def head_budget(max_length: int) -> int:
    """Characters that hold max_length tokens with a wide margin (English is ~4.5 per token)."""
    return max(4096, 16 * max_length)


def head(text: str, chars: int) -> str:
    """The text up to the first whitespace at or after ``chars`` (so no word is cut)."""
    return text[: _cut(text, 0, chars)]


def _cut(text: str, start: int, chars: int) -> int:
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


def count_tokens(tokenizer: Any, text: str) -> int:
    """Tokens of the whole text, special tokens included, in bounded memory."""
    if len(text) <= PIECE_CHARS:
        return len(_backend(tokenizer).encode(text, add_special_tokens=True))
    return _specials(tokenizer) + sum(len(piece) for piece in _pieces(tokenizer, text))


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
        end = _cut(text, start, PIECE_CHARS)
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


def chunk_windows(
    content: np.ndarray,
    max_length: int,
    overlap: int,
    prefix: tuple[int, ...],
    suffix: tuple[int, ...],
    lead: int = 0,
) -> list[np.ndarray]:
    """Windows of at most max_length tokens covering the text: the special tokens before it,
    the content's first ``lead`` tokens (the prompt, repeated in every window), a slice of the
    rest, the special tokens after it.

    Consecutive windows share ``overlap`` text tokens; the last window ends at the text's end.
    The first window is what truncation keeps.
    """
    head, text = content[:lead], content[lead:]
    width = max_length - len(prefix) - len(suffix) - lead  # text tokens per window
    stride = width - overlap
    starts = [0]
    while starts[-1] + width < len(text):
        starts.append(starts[-1] + stride)
    before = np.concatenate([np.asarray(prefix, dtype=content.dtype), head])
    after = np.asarray(suffix, dtype=content.dtype)
    return [np.concatenate([before, text[s : s + width], after]) for s in starts]


def common_prefix(a: np.ndarray, b: np.ndarray) -> int:
    """How many leading tokens two id sequences share (a prompt's tokens inside a text)."""
    n = min(len(a), len(b))
    differ = np.flatnonzero(a[:n] != b[:n])
    return int(differ[0]) if len(differ) else n


def _encode(tokenizer: Any, texts: list[str], max_length: int) -> list[list[int]]:
    return tokenizer(
        texts,
        truncation=True,
        max_length=max_length,
        add_special_tokens=True,
        return_attention_mask=False,
        return_token_type_ids=False,
    )["input_ids"]


def chunk_rows(
    ids: list,
    present: list[int],
    whole: dict[int, np.ndarray],
    num_rows: int,
    spec: Any,
    layout: Any,
    prompt_ids: np.ndarray,
) -> tuple[list, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Replace each long row's truncated ids by windows over its whole text (--long-text chunk).

    Every window repeats the special tokens and the prompt. Returns the sequences, their rows,
    their order within their row, which rows have several windows, and per row the tokens a
    later window repeats (specials, prompt, overlap), for token outputs.
    """
    sequences, seq_rows, parts = [], [], []
    multi = np.zeros(num_rows, dtype=bool)
    drop_head = np.zeros(num_rows, dtype=np.int64)
    for j, row in enumerate(present):
        if j not in whole:
            sequences.append(ids[j])
            seq_rows.append(row)
            parts.append(0)
            continue
        lead = common_prefix(whole[j], prompt_ids) if spec.prompt else 0
        windows = chunk_windows(
            whole[j], spec.max_length, spec.chunk_overlap, layout.prefix, layout.suffix, lead
        )
        sequences += windows
        seq_rows += [row] * len(windows)
        parts += range(len(windows))
        multi[row] = len(windows) > 1
        drop_head[row] = len(layout.prefix) + lead + spec.chunk_overlap
    return (
        sequences,
        np.asarray(seq_rows, dtype=np.int64),
        np.asarray(parts, dtype=np.int64),
        multi,
        drop_head,
    )
