"""--chunk-tokens: a block of input rows becomes a block of passage rows, one a passage.

Each text is cut into passages of at most --chunk-tokens tokens (etl.stages.read.passages: spans
that cover the text, at word starts, with --chunk-overlap); each passage row carries its input
row's id and kept columns, its number in the row (`chunk`) and its span (`chunk_start`,
`chunk_end`: ``text[chunk_start:chunk_end]`` is the passage, in characters), and the passage
as its text. From here on the job runs on passages as it runs on rows: each is embedded as the
string it is, with the model's special tokens and prompt (what a user's own chunk-then-embed
does), through the vector store like any other text, and written one row each, in order; or,
with --chunking late, pooled from a pass over the whole text (etl.stages.read.late), which the rows
carry. A null text (or one over --max-text-bytes) keeps one row, with null number, span and
vectors. --chunk-layout nested folds the passage rows back into their input row as they are
written (etl.stages.write.nested).
"""

from __future__ import annotations

import copy
import weakref
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import pyarrow as pa

from etl.config import CHUNK_COLUMNS, WHOLE_TEXT
from etl.spec import OutputSpec
from etl.stages.read.blocks import Rows
from etl.stages.read.late import Documents
from etl.stages.read.passages import cut_passages
from etl.stages.read.source import plain_text, text_sizes, without
from etl.stages.read.tokens import GROUP_CHARS, PIECE_CHARS, piece_end

_copies: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def passages_of(blocks: Iterable[Rows], tokenizer: Any, spec: OutputSpec) -> Iterator[Rows]:
    """Each block of a shard as passage rows, cut with a copy of the reader's ``tokenizer``
    (which its tokenizing thread uses), made once, before that thread first runs."""
    cutter = _copies.get(tokenizer)
    if cutter is None:
        cutter = _copies[tokenizer] = copy.deepcopy(tokenizer)
    for block in blocks:
        yield passage_rows(block, cutter, spec)


def passage_rows(block: Rows, tokenizer: Any, spec: OutputSpec) -> Rows:
    """The block with a row per passage of each row's text (see the module's docstring).
    ``tokenizer`` is the reader's own copy (the tokenizing thread uses the other)."""
    batch = block.batch
    position = batch.schema.get_field_index(spec.text_column)
    # A text over --max-text-bytes is None here, kept or not: one row, null throughout.
    texts = without(plain_text(batch.column(position)), block.over).to_pylist()
    rows, starts, ends, _ = cut_bounded(tokenizer, texts, spec)
    null = starts < 0
    passages = [
        None if texts[r] is None else texts[r][s:e]
        for r, s, e in zip(rows.tolist(), starts.tolist(), ends.tolist(), strict=True)
    ]
    # Every column but the text, a row a passage: a text is never repeated for its passages.
    field = batch.schema.field(position)  # string, large_string or a dictionary of them
    taken = batch.drop_columns([spec.text_column]).take(pa.array(rows))
    plain = field.type.value_type if pa.types.is_dictionary(field.type) else field.type
    text = pa.array(passages, pa.large_string() if pa.types.is_large_string(plain) else pa.string())
    if not text.type.equals(field.type):  # a kept text column is written as the input types it
        text = text.cast(field.type)
    taken = taken.add_column(position, field, text)
    first = np.searchsorted(rows, rows, side="left")  # each passage's row's first passage
    number = (np.arange(len(rows)) - first).astype(np.int32)
    for name, values in zip(CHUNK_COLUMNS, (number, starts, ends), strict=True):
        taken = taken.append_column(name, pa.array(values.astype(np.int32), mask=null))
    if WHOLE_TEXT in spec.carried:  # nested, text kept: each row's text, on its first passage
        whole = batch.column(position).take(pa.array(rows, mask=number != 0))
        taken = taken.append_column(pa.field(WHOLE_TEXT, field.type), whole)
    over = block.over[rows]
    sizes = np.where(over, block.sizes[rows], text_sizes(text))
    documents = Documents(texts, rows) if spec.chunking == "late" else None
    return Rows(taken, over, sizes, documents)


def cut_bounded(
    tokenizer: Any, texts: list[str | None], spec: OutputSpec
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """cut_passages over the block in groups of about GROUP_CHARS characters, a text longer
    than PIECE_CHARS in pieces ending at whitespace (a piece's end is a passage's end): the
    tokenizer's record of each token (offsets included, some hundreds of bytes) is held for a
    group at a time, not for a block or a huge text. Returns each passage's row, span and
    tokens (alone, without special tokens)."""
    units: list[tuple[int, int, str | None]] = []  # (row, where the piece starts, the piece)
    for row, text in enumerate(texts):
        start = 0
        while text is not None and len(text) - start > PIECE_CHARS:
            end = piece_end(text, start, PIECE_CHARS)
            units.append((row, start, text[start:end]))
            start = end
        units.append((row, start, text if start == 0 else text[start:]))
    found: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
    group: list[tuple[int, int, str | None]] = []
    size = 0
    for i, unit in enumerate(units):
        group.append(unit)
        size += len(unit[2] or "")
        if size >= GROUP_CHARS or i == len(units) - 1:
            cut = cut_passages(
                tokenizer,
                [piece for _, _, piece in group],
                spec.chunk_tokens,
                spec.chunk_overlap,
                spec.chunk_boundary,
            )
            rows = np.array([row for row, _, _ in group], np.int64)[cut.rows]
            offset = np.array([at for _, at, _ in group], np.int64)[cut.rows]
            null = cut.starts < 0
            found.append(
                (
                    rows,
                    np.where(null, -1, cut.starts + offset),
                    np.where(null, -1, cut.ends + offset),
                    cut.tokens.astype(np.int64),
                )
            )
            group, size = [], 0
    if not found:
        none = np.zeros(0, np.int64)
        return none, none, none, none
    return tuple(np.concatenate(part) for part in zip(*found, strict=True))  # type: ignore[return-value]
