"""The store's file format: a segment holds records, written once, never changed.

    records   rows x R bytes (etl.reuse.records), in the order they were computed
    index     rows x 16 bytes: the records' hashes, in the same order
    checks    one uint32 per block of INDEX_BLOCK hashes: the CRC-32 of that block
    trailer   JSON: rows, record bytes, columns, recipe fingerprint, the run that wrote it
    tail      uint64 the trailer's length, uint32 its CRC-32, 8 bytes b"EMBSEG02"

A shard's new vectors make one segment; compaction concatenates small ones, in the order they
were written, into larger ones of the same format (etl.reuse.compact). Every part is checked
when it is read: a record by its own checksum and hash, the index block by block, the trailer
as a whole; what fails is skipped and its texts embedded again.

Why a format of our own and not Parquet or Lance: a lookup fetches single records at random,
and both read (and check) whole pages; fixed-width records are read at a computed offset, a few
bytes a vector, with one ranged GET per run of nearby records, each record checked on its own.
Records stay in the order a job wrote them, so a re-export, whose shards hold yesterday's texts
in yesterday's order, reads them back in long runs (benchmarks/RESULTS.md, "The vector store at
scale", measures both against this format).
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from etl.reuse.hashing import HASH_BYTES, HASH_DTYPE
from etl.reuse.records import Layout

MAGIC = b"EMBSEG02"
TAIL = struct.Struct("<QI8s")
FORMAT = 3  # 3: the recipe is its whole sha256, and seeds the records' checksums
INDEX_BLOCK = 4096  # hashes under one checksum: 64 KiB
TAIL_READ = 1 << 16  # bytes read from a segment's end: the trailer, checks and small indexes


class SegmentError(ValueError):
    """A segment that is not whole, damaged or not of this store: skipped, its texts embedded
    again."""


@dataclass(frozen=True)
class Segment:
    """A published segment as its trailer describes it."""

    key: str
    size: int
    rows: int
    record_bytes: int
    recipe: str  # the recipe fingerprint its vectors were made with
    run: str  # the run (all workers of one `embed-etl run`) that wrote it
    created: float = 0.0  # seconds since the epoch
    checks: tuple[int, ...] = ()  # the index blocks' CRC-32s
    data: bytes | None = field(default=None, repr=False, compare=False)  # the whole, if read

    @property
    def index_offset(self) -> int:
        return self.rows * self.record_bytes

    @property
    def blocks(self) -> int:
        return -(-self.rows // INDEX_BLOCK)


def index_checks(hashes: np.ndarray) -> list[int]:
    """The CRC-32 of each block of INDEX_BLOCK hashes."""
    data = memoryview(np.ascontiguousarray(hashes, HASH_DTYPE)).cast("B")
    step = INDEX_BLOCK * HASH_BYTES
    return [zlib.crc32(data[i : i + step]) for i in range(0, len(data), step)]


def trailer(
    rows: int,
    layout: Layout,
    recipe: str,
    run: str,
    hashes: np.ndarray,
    created: float,
    **about: Any,
) -> bytes:
    """The bytes that follow the records: the index, its checks, the trailer and the tail."""
    if len(hashes) != rows:
        raise ValueError(f"{rows} records but {len(hashes)} hashes")
    index = np.ascontiguousarray(hashes, HASH_DTYPE).tobytes()
    return index + closing(rows, layout, recipe, run, index_checks(hashes), created, **about)


def closing(
    rows: int,
    layout: Layout,
    recipe: str,
    run: str,
    checks: list[int],
    created: float,
    **about: Any,
) -> bytes:
    """The bytes that follow the index: its checks, the trailer and the tail."""
    meta = {
        "format": FORMAT,
        "rows": rows,
        "record_bytes": layout.record_bytes,
        "columns": layout.describe(),
        "hash": f"blake2b-{8 * HASH_BYTES}",
        "checksum": "crc32",
        "index_block": INDEX_BLOCK,
        "recipe": recipe,
        "run": run,
        "created": created,
        **about,
    }
    body = json.dumps(meta, sort_keys=True).encode()
    sums = np.asarray(checks, "<u4").tobytes()
    return sums + body + TAIL.pack(len(body), zlib.crc32(body), MAGIC)


def segment_bytes(
    records: Iterable[bytes],
    rows: int,
    layout: Layout,
    recipe: str,
    run: str,
    hashes: np.ndarray | Iterable[np.ndarray],
    created: float,
    **about: Any,
) -> Iterator[bytes]:
    """A whole segment: the records' bytes as given, then what follows them. ``hashes`` may
    come in chunks (each a whole number of INDEX_BLOCKs but the last): the index is streamed,
    never held whole."""
    yield from records
    if isinstance(hashes, np.ndarray):
        yield trailer(rows, layout, recipe, run, hashes, created, **about)
        return
    checks, seen = [], 0
    for chunk in hashes:
        if seen % INDEX_BLOCK:
            raise ValueError("index chunks must hold whole blocks")
        checks += index_checks(chunk)
        seen += len(chunk)
        yield np.ascontiguousarray(chunk, HASH_DTYPE).tobytes()
    if seen != rows:
        raise ValueError(f"{rows} records but {seen} hashes")
    yield closing(rows, layout, recipe, run, checks, created, **about)


def read_trailer(key: str, size: int, read: Callable[[int, int], bytes]) -> tuple[Segment, bytes]:
    """The segment of ``size`` bytes at ``key`` from its trailer, and the bytes read from its
    end: TAIL_READ of them (the whole of a small segment), more when its trailer needs more.
    ``read(offset, length)`` reads a range of it."""
    start = max(0, size - TAIL_READ)
    tail = read(start, size - start)
    segment, needed = parse_tail(key, size, tail)
    if needed > len(tail):
        tail = read(size - needed, needed)
        segment, _ = parse_tail(key, size, tail)
    return segment, tail


def parse_tail(key: str, size: int, tail: bytes) -> tuple[Segment, int]:
    """The segment described by the last bytes of its object, and how many bytes from its end
    it needs (more than ``tail`` holds: read them and call again)."""
    if size < TAIL.size or len(tail) < TAIL.size:
        raise SegmentError(f"{key}: {size} bytes, too short for a segment")
    length, check, magic = TAIL.unpack(tail[-TAIL.size :])
    if magic != MAGIC:
        raise SegmentError(f"{key}: not a segment of this version (no {MAGIC!r} at its end)")
    needed = length + TAIL.size
    if needed > size:
        raise SegmentError(f"{key}: trailer of {length} bytes in {size}")
    if needed > len(tail):
        return Segment(key, size, 0, 0, "", ""), needed
    body = tail[-needed : -TAIL.size]
    if zlib.crc32(body) != check:
        raise SegmentError(f"{key}: its trailer fails its checksum")
    try:
        meta = json.loads(body)
        if meta.get("format") != FORMAT:
            raise ValueError(f"format {meta.get('format')}; this version reads format {FORMAT}")
        rows, record_bytes = int(meta["rows"]), int(meta["record_bytes"])
        blocks = -(-rows // INDEX_BLOCK)
        if int(meta.get("index_block", 0)) != INDEX_BLOCK or rows < 0 or record_bytes <= 0:
            raise ValueError("an index block or size this version does not read")
        needed += 4 * blocks
        expected = rows * (record_bytes + HASH_BYTES) + needed
        if expected != size:
            raise SegmentError(f"{key}: {size} bytes, not the {rows} records it says")
        checks: tuple[int, ...] = ()
        if needed <= len(tail):
            start = len(tail) - needed
            checks = tuple(np.frombuffer(tail[start : start + 4 * blocks], "<u4").tolist())
        segment = Segment(
            key,
            size,
            rows,
            record_bytes,
            str(meta["recipe"]),
            str(meta["run"]),
            float(meta.get("created", 0.0)),
            checks,
        )
    except (ValueError, KeyError, TypeError) as exc:
        if isinstance(exc, SegmentError):
            raise
        raise SegmentError(f"{key}: unreadable trailer: {exc}") from exc
    return segment, needed
