"""The store's file format: a segment holds the vectors one shard computed, written once.

    records   rows x R bytes: n_tokens (int32), then each column's vector (float32), in the
              order of the store's columns; little-endian
    index     rows x 16 bytes: the text hash of each record, in the same order
    trailer   JSON: rows, record bytes, columns, recipe fingerprint, the run that wrote it
    tail      8 bytes: the trailer's length (uint64), 8 bytes: b"EMBSEG01"

Why not Parquet or Arrow: a lookup needs single records at random, and both read whole pages
or record batches; fixed-width records are read at a computed offset, a few bytes per vector,
from a local file or with one ranged GET per run of nearby records. Records are in the order
they were computed: a lookup reads a segment's whole index (16 bytes a text) anyway.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

from etl.reuse.hashing import HASH_BYTES

MAGIC = b"EMBSEG01"
TAIL = struct.Struct("<Q8s")
FORMAT = 1
TAIL_READ = 1 << 16  # bytes read from a segment's end: the trailer and small indexes at once


class SegmentError(ValueError):
    """A segment that is not whole or not of this store: skipped, its texts embedded again."""


@dataclass(frozen=True)
class Layout:
    """One record: the text's token count, then each pooled column's float32 vector."""

    columns: tuple[tuple[str, int], ...]  # (column name, dimensions), in the store's order

    @property
    def record_bytes(self) -> int:
        return 4 + 4 * sum(dim for _, dim in self.columns)

    def describe(self) -> list[list[Any]]:
        return [[name, dim] for name, dim in self.columns]

    def pack(self, n_tokens: np.ndarray, vectors: dict[str, np.ndarray]) -> np.ndarray:
        """(k,) token counts and name -> (k, dim) vectors -> (k, R) bytes."""
        records = np.empty((len(n_tokens), self.record_bytes), np.uint8)
        words = records.view(np.int32)  # (k, R / 4)
        words[:, 0] = n_tokens
        floats = records.view(np.float32)
        start = 1
        for name, dim in self.columns:
            floats[:, start : start + dim] = vectors[name]
            start += dim
        return records

    def unpack(self, records: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """(k, R) bytes -> (k,) token counts and name -> (k, dim) float32 vectors (copies)."""
        records = np.ascontiguousarray(records, dtype=np.uint8).reshape(-1, self.record_bytes)
        n_tokens = records.view(np.int32)[:, 0].copy()
        floats = records.view(np.float32)
        vectors, start = {}, 1
        for name, dim in self.columns:
            vectors[name] = floats[:, start : start + dim].copy()
            start += dim
        return n_tokens, vectors


@dataclass(frozen=True)
class Segment:
    """A published segment as its trailer describes it."""

    key: str
    size: int
    rows: int
    record_bytes: int
    recipe: str  # the recipe fingerprint its vectors were made with
    run: str  # the run (all workers of one `embed-etl run`) that wrote it

    @property
    def index_offset(self) -> int:
        return self.rows * self.record_bytes


def trailer(rows: int, layout: Layout, recipe: str, run: str, **about: Any) -> bytes:
    """The bytes that follow the index: the trailer's JSON and the tail."""
    meta = {
        "format": FORMAT,
        "rows": rows,
        "record_bytes": layout.record_bytes,
        "columns": layout.describe(),
        "hash": f"blake2b-{8 * HASH_BYTES}",
        "recipe": recipe,
        "run": run,
        **about,
    }
    body = json.dumps(meta, sort_keys=True).encode()
    return body + TAIL.pack(len(body), MAGIC)


def parse_tail(key: str, size: int, tail: bytes) -> tuple[Segment, int]:
    """The segment described by the last bytes of its object, and how many trailer bytes it
    needs in all (more than ``tail`` holds: read them and call again)."""
    if size < TAIL.size or len(tail) < TAIL.size:
        raise SegmentError(f"{key}: {size} bytes, too short for a segment")
    length, magic = TAIL.unpack(tail[-TAIL.size :])
    if magic != MAGIC:
        raise SegmentError(f"{key}: not a segment (no {MAGIC!r} at its end)")
    needed = length + TAIL.size
    if needed > size:
        raise SegmentError(f"{key}: trailer of {length} bytes in {size}")
    if needed > len(tail):
        return Segment(key, size, 0, 0, "", ""), needed
    try:
        meta = json.loads(tail[-needed : -TAIL.size])
        segment = Segment(
            key, size, int(meta["rows"]), int(meta["record_bytes"]), meta["recipe"], meta["run"]
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise SegmentError(f"{key}: unreadable trailer: {exc}") from exc
    if segment.rows * (segment.record_bytes + HASH_BYTES) + needed != size:
        raise SegmentError(f"{key}: {size} bytes, not the {segment.rows} records it says")
    return segment, needed
