"""--chunking late: each passage pooled from one forward pass over its whole text.

A window's texts are tokenized once more, with their character offsets (the prompt before
each); a passage's tokens are those whose last character lies inside its span (so byte-level
BPE's "Ġword", which starts at the space before the word, goes with the word). A text whose
tokens, with the special tokens, fit --max-length is one sequence. A longer one is cut into
windows of --max-length tokens, each repeating the special tokens and the prompt, consecutive
windows sharing OVERLAP text tokens: a quarter of a window, and at least --chunk-tokens, so
that every passage lies whole in some window (the job's check keeps a passage under half a
window, so a text costs under twice one pass). Each passage is pooled from the window in which
it sits farthest from a cut edge (the text's own start and end are no cut): Jina AI's "long
late chunking", with each passage in one window rather than its tokens gathered from several.
Windows that no passage needs are not run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from etl.config import CHUNK_COLUMNS
from etl.stages.read.chunks import chunk_windows
from etl.stages.read.sequences import Sequences, starts_of
from etl.stages.read.tokenizer import Layout
from etl.stages.read.tokens import GROUP_CHARS, PIECE_CHARS, piece_end


@dataclass(frozen=True)
class Documents:
    """The whole texts a block's passage rows were cut from (None where null or over the
    limit), and which text each passage row comes from."""

    texts: list[str | None]
    of: np.ndarray  # (P,) int64: index in ``texts`` of each passage row, ascending

    def sliced(self, start: int, end: int) -> Documents:
        return Documents(self.texts, self.of[start:end])

    def texts_of(self, rows: np.ndarray) -> list[str]:
        """The texts of these passage rows, each once, in order."""
        return [self.texts[i] for i in np.unique(self.of[rows]).tolist()]


@dataclass(frozen=True)
class Encoded:
    """Texts (prompt first) through the tokenizer: ids without special tokens and where each
    token ends, in characters of the text (the prompt's tokens end at 0 or before)."""

    ids: list[np.ndarray]  # int32
    ends: list[np.ndarray]  # int64, ascending
    lead: list[int]  # the prompt's tokens at the head of each


@dataclass(frozen=True)
class LateSpans:
    """Where each passage of a window is pooled from: a sequence and its tokens [lo, hi)."""

    rows: np.ndarray  # (Q,) the passage's row in the window
    seq: np.ndarray  # (Q,) its sequence
    lo: np.ndarray  # (Q,) first token, in the sequence (special tokens included)
    hi: np.ndarray  # (Q,) the token after its last

    def batch(self, members: np.ndarray, lengths: np.ndarray, left: bool) -> tuple:
        """The passages of a batch of sequences ``members`` (their ``lengths``), padded on
        the left or right: (rows, (q, 3) int64 [sequence in the batch, lo, hi])."""
        where = np.full(max(int(self.seq.max(initial=-1)), int(members.max())) + 1, -1, np.int64)
        where[members] = np.arange(len(members))
        take = np.flatnonzero(where[self.seq] >= 0)
        place = where[self.seq[take]]
        shift = (lengths.max() - lengths)[place] if left else 0
        spans = np.stack([place, self.lo[take] + shift, self.hi[take] + shift], axis=1)
        return self.rows[take], spans.astype(np.int64)


def encode_documents(tokenizer: Any, texts: list[str], prompt: str) -> Encoded:
    """Each text after the prompt, tokenized without special tokens, with offsets: a text
    longer than PIECE_CHARS in pieces ending at whitespace, GROUP_CHARS characters a call, so
    the tokenizer's records (offsets, ~160 bytes a token) are held for a group at a time."""
    backend = tokenizer.backend_tokenizer
    backend.no_truncation()
    backend.no_padding()
    shift = len(prompt)
    units: list[tuple[int, int, str]] = []  # (text, where the piece starts, the piece)
    for i, text in enumerate(texts):
        whole, start = prompt + text, 0
        while len(whole) - start > PIECE_CHARS:
            end = piece_end(whole, start, PIECE_CHARS)
            units.append((i, start, whole[start:end]))
            start = end
        units.append((i, start, whole[start:] if start else whole))
    ids: list[list[np.ndarray]] = [[] for _ in texts]
    ends: list[list[np.ndarray]] = [[] for _ in texts]
    group: list[tuple[int, int, str]] = []
    size = 0
    for k, unit in enumerate(units):  # the records of GROUP_CHARS characters at a time
        group.append(unit)
        size += len(unit[2])
        if size < GROUP_CHARS and k < len(units) - 1:
            continue
        encodings = backend.encode_batch([u[2] for u in group], add_special_tokens=False)
        for (i, at, _), encoding in zip(group, encodings, strict=True):
            ids[i].append(np.asarray(encoding.ids, np.int32))
            offsets = np.asarray(encoding.offsets, np.int64).reshape(-1, 2)
            ends[i].append(offsets[:, 1] + at - shift)
        group, size = [], 0
        del encodings
    joined_ids = [np.concatenate(parts) for parts in ids]
    joined_ends = [np.maximum.accumulate(np.concatenate(parts)) for parts in ends]
    lead = [int(np.searchsorted(e, 0, side="right")) for e in joined_ends]
    return Encoded(joined_ids, joined_ends, lead)


def late_window(
    encoded: Encoded, window: Any, present: np.ndarray, layout: Layout, spec: Any
) -> tuple[Sequences, LateSpans, np.ndarray, int]:
    """A window of passage rows (etl.stages.read.blocks.Rows; ``present``: those with a text, whose
    texts ``encoded`` holds in order): the sequences to run, where each present passage is
    pooled from, its tokens, and how many texts ran in several windows."""
    _, doc = np.unique(window.documents.of[present], return_inverse=True)
    start, end = (
        window.batch.column(name).fill_null(0).to_numpy()[present].astype(np.int64)
        for name in CHUNK_COLUMNS[1:]
    )
    sequences, seq, lo, hi, windowed = late_plan(
        encoded, doc, (start, end), layout, spec.max_length, spec.chunk_tokens
    )
    return sequences, LateSpans(present, seq, lo, hi), hi - lo, windowed


def late_plan(
    encoded: Encoded,
    doc: np.ndarray,
    chars: tuple[np.ndarray, np.ndarray],
    layout: Layout,
    max_length: int,
    chunk_tokens: int,
) -> tuple[Sequences, np.ndarray, np.ndarray, np.ndarray, int]:
    """The sequences to run and, per passage (``doc``: its text in ``encoded``; ``chars``: its
    span), its sequence and tokens [lo, hi) there; and how many texts ran in several
    windows. A passage with no token of its own (a blank text) is pooled over its sequence."""
    before, after = len(layout.prefix), len(layout.suffix)
    prefix, suffix = np.asarray(layout.prefix, np.int32), np.asarray(layout.suffix, np.int32)
    sequences: list[np.ndarray] = []
    seq = np.zeros(len(doc), np.int64)
    lo = np.zeros(len(doc), np.int64)
    hi = np.zeros(len(doc), np.int64)
    first = np.searchsorted(doc, np.arange(len(encoded.ids) + 1))  # each text's passages
    windowed = 0
    texts = zip(encoded.ids, encoded.ends, encoded.lead, strict=True)
    for d, (ids, ends, lead) in enumerate(texts):
        mine = slice(first[d], first[d + 1])
        a = np.searchsorted(ends, chars[0][mine], side="right")  # tokens ending in the span
        b = np.searchsorted(ends, chars[1][mine], side="right")
        if len(ids) + before + after <= max_length:
            seq[mine] = len(sequences)
            sequences.append(np.concatenate([prefix, ids, suffix]))
            blank = a == b  # no token of its own (a blank text): its whole sequence, prompt too
            lo[mine] = np.where(blank, 0, a + before)
            hi[mine] = np.where(blank, before + len(ids) + after, b + before)
            continue
        windowed += 1
        width = max_length - before - after - lead  # text tokens a window holds
        overlap = min(max(chunk_tokens, width // 4), width // 2)
        windows = chunk_windows(ids, max_length, overlap, layout.prefix, layout.suffix, lead)
        text = len(ids) - lead
        stride = width - overlap
        pick = _deepest(a - lead, b - lead, stride, width, text, len(windows))
        begins = np.arange(len(windows)) * stride  # text tokens before each window
        used, number = np.unique(pick, return_inverse=True)
        seq[mine] = len(sequences) + number
        sequences += [windows[k] for k in used.tolist()]
        # Token t of ``ids`` (past the prompt) is at before + t - begins[k] in window k.
        shift = before - begins[pick]
        top = before + lead + np.minimum(width, text - begins[pick])  # the window's text end
        lo[mine] = np.clip(a + shift, before + lead, top - 1)
        hi[mine] = np.clip(b + shift, lo[mine] + 1, top)
    lengths = np.fromiter(map(len, sequences), np.int64, len(sequences))
    ids = np.concatenate(sequences) if sequences else np.zeros(0, np.int32)
    return Sequences(ids.astype(np.int32), starts_of(lengths), lengths), seq, lo, hi, windowed


def _deepest(a: np.ndarray, b: np.ndarray, stride: int, width: int, text: int, count: int):
    """For each passage of text tokens [a, b): the window (of ``count``, the k-th starting at
    k * stride) that holds it whole with the most context on its shorter side (the text's start
    and end count as unlimited context), the first of equals; where none holds it whole, the
    one holding most of it. Only the few windows that can hold a passage's first token are
    weighed: memory follows the passages, not passages x windows."""
    reach = -(-width // stride)  # windows that hold any one token
    last = np.minimum(a // stride, count - 1)  # the last window starting at or before a
    k = last[:, None] - reach + 1 + np.arange(reach)[None, :]  # (P, reach), ascending
    valid = k >= 0
    k = np.maximum(k, 0)
    begins = k * stride
    ends = np.minimum(begins + width, text)
    left = np.where(begins > 0, a[:, None] - begins, np.inf)
    right = np.where(ends < text, ends - b[:, None], np.inf)
    whole = valid & (begins <= a[:, None]) & (b[:, None] <= ends)
    score = np.where(whole, np.minimum(left, right), -np.inf)
    held = np.where(valid, np.minimum(b[:, None], ends) - np.maximum(a[:, None], begins), -np.inf)
    pick = np.where(whole.any(axis=1), score.argmax(axis=1), held.argmax(axis=1))
    return k[np.arange(len(a)), pick]
