"""`verify` of a --chunk-tokens output: every input row's passages, in order, covering its text.

Reads the input's ids and text lengths (characters; no text is held) and the output's ids,
passage numbers, spans and which vectors are null, and checks, position by position: each input
row starts a run of passages numbered 0, 1, ... with its id; a null text (or one over
--max-text-bytes) has one row with null number, span and vectors; the spans of a text are inside
it, start at 0, end at its length, and leave no gap (each starts where the one before ends, or
before, by the overlap) while moving forward. A --chunk-layout nested output is unnested into
those same rows first (a row per passage; positions in messages count passages), and each of its
list columns must hold as many entries as its row's chunk_spans.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from etl.config import CHUNK_COLUMNS, CHUNK_SPANS

LISTS = ("n_tokens", "truncated")  # the nested layout's lists beside the vectors


def check_passages(
    input_path: str,
    output: str,
    identity: dict,
    columns: list[str],
    scan: Callable[[str], Any],
) -> list[str]:
    """What is wrong with the passages of one output file (nothing: an empty list)."""
    import polars as pl

    id_col, text_col = identity["id_column"], identity["text_column"]
    text = pl.col(text_col).cast(pl.String)
    no_text = text.is_null()
    limit = identity.get("max_text_bytes")
    if limit is not None:
        no_text = no_text | (text.str.len_bytes() > limit).fill_null(False)
    source = (
        scan(input_path)
        .select(
            pl.col(id_col).alias("id"),
            text.str.len_chars().fill_null(0).alias("length"),
            no_text.alias("none"),
        )
        .collect(engine="streaming")
    )
    number, start, end = CHUNK_COLUMNS
    problems = []
    if nested(identity):
        out, problems = _unnested(scan(output), id_col, columns)
    else:
        vectors = [pl.col(name).is_null().alias(f"null:{name}") for name in columns]
        out = (
            scan(output)
            .select(pl.col(id_col).alias("id"), *map(pl.col, CHUNK_COLUMNS), *vectors)
            .collect(engine="streaming")
        )
    chunk = out[number].to_numpy().astype(np.float64)  # NaN where null
    first = np.isnan(chunk) | (chunk == 0)  # a row's first passage (or its only, null, row)
    if int(first.sum()) != source.height:
        return [
            *problems,
            f"passages: {int(first.sum())} rows start an input row's passages, the input "
            f"has {source.height} rows",
        ]
    row = np.cumsum(first) - 1  # the input row of each output row
    ids_out = out["id"]
    ids_in = source["id"].gather(row)
    moved = np.flatnonzero(~ids_out.eq_missing(ids_in).to_numpy())
    if len(moved):
        problems.append(
            f"ids out of place: {len(moved)} passages carry another row's id, the "
            f"first at output row {moved[0]}"
        )
    none = source["none"].to_numpy()[row]
    gaps = ~first & (chunk != np.roll(chunk, 1) + 1)
    if gaps.any():
        problems.append(
            f"{number}: not numbered 0, 1, ... within a row, at output row "
            f"{np.flatnonzero(gaps)[0]}"
        )
    problems += _nulls(out, columns, none, np.isnan(chunk))
    problems += _spans(out[start].to_numpy(), out[end].to_numpy(), row, first, none, source)
    return problems


def nested(identity: dict) -> bool:
    """Whether the job's identity says --chunk-layout nested: a row per input row, lists."""
    return (identity.get("passages") or {}).get("layout") == "nested"


def unnested(name: str, identity: dict) -> Any:
    """The column as a polars expression with a row per passage (a nested list exploded)."""
    import polars as pl

    return pl.col(name).explode() if nested(identity) else pl.col(name)


def _unnested(scan: Any, id_col: str, columns: list[str]) -> tuple[Any, list[str]]:
    """A nested output as the rows layout's columns, a row per passage (one, null, for a null
    list), and its list columns' entries that are not one a passage."""
    import polars as pl

    spans = pl.col(CHUNK_SPANS)
    count = spans.list.len()
    number, start, end = CHUNK_COLUMNS
    lists = [*columns, *LISTS]
    frame = scan.select(
        pl.col(id_col).alias("id"),
        pl.int_ranges(0, count, dtype=pl.Int32).alias(number),
        spans.list.eval(pl.element().struct.field("start")).alias(start),
        spans.list.eval(pl.element().struct.field("end")).alias(end),
        *[
            (pl.col(c).is_null() | pl.col(c).list.eval(pl.element().is_null()).list.any())
            .fill_null(True)
            .alias(f"null:{c}")
            for c in columns
        ],
        *[pl.col(c).list.len().ne_missing(count).alias(f"count:{c}") for c in lists],
    ).collect(engine="streaming")
    problems = []
    for name in lists:
        wrong = np.flatnonzero(frame[f"count:{name}"].to_numpy())
        if len(wrong):
            problems.append(
                f"{name}: {len(wrong)} rows whose list is not one entry a passage of "
                f"{CHUNK_SPANS}, the first at output row {wrong[0]}"
            )
    return frame.explode([number, start, end]), problems


def _nulls(out: Any, columns: list[str], none: np.ndarray, unnumbered: np.ndarray) -> list[str]:
    problems = []
    if (none != unnumbered).any():
        problems.append(
            f"{CHUNK_COLUMNS[0]}: null where the text is not, or not null where it "
            f"is, at output row {np.flatnonzero(none != unnumbered)[0]}"
        )
    for name in columns:
        wrong = out[f"null:{name}"].to_numpy() != none
        if wrong.any():
            problems.append(
                f"{name}: {int(wrong.sum())} passages null where the text is not, "
                "or not null where it is"
            )
    return problems


def _spans(
    starts: Any, ends: Any, row: np.ndarray, first: np.ndarray, none: np.ndarray, source: Any
) -> list[str]:
    """Spans inside their text, from 0 to its length, in order, without gaps."""
    keep = ~none
    starts = np.asarray(starts, dtype=np.float64)[keep]
    ends = np.asarray(ends, dtype=np.float64)[keep]
    row, first = row[keep], first[keep]
    length = source["length"].to_numpy()[row]
    last = np.append(row[1:] != row[:-1], True)  # a row's last passage
    bad = (
        np.isnan(starts)
        | np.isnan(ends)
        | (starts < 0)
        | (ends < starts)
        | (ends > length)
        | (first & (starts != 0))
        | (last & (ends != length))
    )
    follows = ~first
    previous_start, previous_end = np.roll(starts, 1), np.roll(ends, 1)
    bad |= follows & ((starts > previous_end) | (starts <= previous_start))
    if not bad.any():
        return []
    at = int(np.flatnonzero(keep)[np.flatnonzero(bad)[0]])
    return [
        f"{CHUNK_COLUMNS[1]}, {CHUNK_COLUMNS[2]}: {int(bad.sum())} spans outside their text, "
        f"out of order or leaving part of it uncovered, the first at output row {at}"
    ]
