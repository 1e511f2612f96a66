"""A vector store: one recipe's vectors, by text hash, in immutable segments on any storage.

    store.json         the recipe: its fingerprint, what it is made of, the record layout
    segments/<name>    segments (etl.reuse.segment): one per shard, or compacted from several
    log/, checkpoint.json   the journal of which segments are live (etl.reuse.journal)

store.json is created once (the first job wins, later ones must agree); a segment is uploaded
whole and appears under its name only then, so a killed run leaves none half-written; a name is
never written twice. Any number of workers and jobs add segments at once; two of them computing
the same text only store it twice. A segment the journal does not name (its writer was killed
before it said so) is never read, and gc deletes it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np

from etl.contract import Shard
from etl.model.digests import recipe_digest
from etl.reuse.hashing import HASH_BYTES, HASH_DTYPE
from etl.reuse.journal import HINT, LOG, Journal
from etl.reuse.records import Layout
from etl.reuse.segment import INDEX_BLOCK, Segment, SegmentError, read_trailer
from etl.storage.base import Entry, Storage

log = logging.getLogger(__name__)

STORE_FILE = "store.json"
FORMAT = 3  # 3: the whole recipe digest; record checksums seeded with it
SEGMENTS = "segments"
SUFFIX = ".seg"
SMALL_OBJECT = 8 << 20  # a segment this small is sent in one conditional PUT
INDEX_CHUNK = 64 * INDEX_BLOCK  # hashes read at a time (4 MiB)
MAX_RANGE = 16 << 20  # the longest read of records at once


class VectorStore:
    """The store rooted at ``storage``, holding vectors of one recipe. Picklable."""

    def __init__(self, storage: Storage, layout: Layout, recipe: str) -> None:
        self.storage = storage
        self.layout = dataclasses.replace(layout, recipe=recipe)  # checksums under the recipe
        self.recipe = recipe

    def __repr__(self) -> str:
        return f"VectorStore({self.storage.uri()!r})"

    @property
    def uri(self) -> str:
        return self.storage.uri()

    @property
    def journal(self) -> Journal:
        return Journal(self.storage)

    def description(self) -> dict[str, Any] | None:
        """store.json, or None where there is no store."""
        data = self.storage.read(STORE_FILE)
        if data is None:
            return None
        try:
            found = json.loads(data)
        except ValueError:
            return {}
        return found if isinstance(found, dict) else {}

    def create(self, identity: dict[str, Any]) -> dict[str, Any]:
        """Write store.json unless one exists; return the one that is there now."""
        record = {
            "format": FORMAT,
            "recipe": self.recipe,
            "identity": identity,
            "columns": self.layout.describe(),
            "record_bytes": self.layout.record_bytes,
            "created_at": time.time(),
        }
        if self.storage.create(STORE_FILE, json.dumps(record, indent=1, sort_keys=True).encode()):
            return record
        return self.description() or {}

    def clear(self) -> None:
        """Delete every segment, the journal and store.json (--overwrite of a job's own store)."""
        self.storage.delete_prefix(SEGMENTS)
        self.storage.delete_prefix(LOG)
        self.storage.delete(HINT)
        self.storage.delete(STORE_FILE)

    def segment_key(self, name: str) -> str:
        return f"{SEGMENTS}/{name}{SUFFIX}"

    def listed(self) -> list[Entry]:
        """Every segment object, by listing (maintenance only: gc, check, stats)."""
        return self.storage.list(SEGMENTS)

    def open(self, name: str, size: int) -> Segment:
        """A segment's trailer, checked and of this store (SegmentError otherwise)."""
        key = self.segment_key(name)
        segment, tail = read_trailer(key, size, lambda at, n: self._read(key, [(at, n)])[0])
        if segment.recipe != self.recipe or segment.record_bytes != self.layout.record_bytes:
            raise SegmentError(
                f"{key}: made with recipe {segment.recipe[:16]}, not {self.recipe[:16]}"
            )
        if len(tail) == size:  # a small segment: read whole already, kept for read_all
            segment = dataclasses.replace(segment, data=tail)
        return segment

    def index(self, segment: Segment) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """(first row, hashes, (n,) True where its block's checksum holds) of the segment's
        index, INDEX_CHUNK hashes at a time, in order."""
        for first in range(0, segment.rows, INDEX_CHUNK):
            rows = min(INDEX_CHUNK, segment.rows - first)
            offset = segment.index_offset + first * HASH_BYTES
            if segment.data is not None:
                data = segment.data[offset : offset + rows * HASH_BYTES]
            else:
                (data,) = self._read(segment.key, [(offset, rows * HASH_BYTES)])
            if len(data) != rows * HASH_BYTES:
                raise SegmentError(f"{segment.key}: index cut short")
            hashes = np.frombuffer(data, HASH_DTYPE)
            ok = np.ones(rows, bool)
            step = INDEX_BLOCK * HASH_BYTES
            for b, start in enumerate(range(0, len(data), step)):
                block = first // INDEX_BLOCK + b
                if zlib.crc32(data[start : start + step]) != segment.checks[block]:
                    ok[start // HASH_BYTES : (start + step) // HASH_BYTES] = False
            yield first, hashes, ok

    def ranges(self, rows: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
        """The distinct ``rows`` sorted, and groups of them (indices into those) that are read
        as one range each: rows closer than Storage.range_gap apart."""
        size = self.layout.record_bytes
        wanted = np.unique(rows)
        gaps = (wanted[1:] - wanted[:-1] - 1) * size
        cuts = np.flatnonzero(gaps > self.storage.range_gap) + 1
        groups = []
        for group in np.split(np.arange(len(wanted)), cuts):
            if not len(group):
                continue
            # No range longer than MAX_RANGE: scattered hits would otherwise chain into one
            # read of the whole segment, held in memory at once.
            offsets = (wanted[group] - wanted[group[0]]) * size
            pieces = np.flatnonzero(np.diff(offsets // MAX_RANGE)) + 1
            groups += np.split(group, pieces)
        return wanted, groups

    def read_groups(
        self, segment_key: str, wanted: np.ndarray, groups: list[np.ndarray]
    ) -> np.ndarray:
        """(len(wanted), R) the records of ``groups`` of ``wanted`` rows, one ranged read a
        group; rows of groups not given, or beyond a short read, stay zeros (and so fail their
        checksum). Not checked here: the caller checks them against the hashes it looked up."""
        size = self.layout.record_bytes
        ranges = [
            (int(wanted[g[0]]) * size, int(wanted[g[-1]] - wanted[g[0]] + 1) * size) for g in groups
        ]
        found = np.zeros((len(wanted), size), np.uint8)
        for group, blob in zip(groups, self._read(segment_key, ranges), strict=True):
            run = np.frombuffer(blob[: len(blob) - len(blob) % size], np.uint8).reshape(-1, size)
            within = wanted[group] - wanted[group[0]]  # (rows in the range, R)
            have = within < len(run)
            found[group[have]] = run[within[have]]
        return found

    def records(self, segment_key: str, rows: np.ndarray) -> np.ndarray:
        """(k, R) records at ``rows`` of a segment (any order, repeats allowed): nearby records
        are read together, one range per run (see ranges). Not checked here."""
        wanted, groups = self.ranges(rows)
        found = self.read_groups(segment_key, wanted, groups)
        return found[np.searchsorted(wanted, rows)]

    def read_all(self, segment: Segment, chunk_rows: int) -> Iterator[np.ndarray]:
        """Every record of a segment, chunk_rows at a time, in order (compaction, check)."""
        size = segment.record_bytes
        for first in range(0, segment.rows, chunk_rows):
            rows = min(chunk_rows, segment.rows - first)
            if segment.data is not None:
                data = segment.data[first * size : (first + rows) * size]
            else:
                (data,) = self._read(segment.key, [(first * size, rows * size)])
            if len(data) != rows * size:
                raise SegmentError(f"{segment.key}: records cut short")
            yield np.frombuffer(data, np.uint8).reshape(rows, size)

    def publish(self, name: str, chunks: Iterable[bytes], size_hint: int = 0) -> int:
        """Upload a segment under ``name``; its size. SegmentError if the name is taken."""
        key = self.segment_key(name)
        if size_hint and size_hint <= SMALL_OBJECT:
            data = b"".join(chunks)
            if not self.storage.create(key, data):
                raise SegmentError(f"{key}: exists already")
            return len(data)
        if self.storage.exists(key):
            raise SegmentError(f"{key}: exists already")
        upload = self.storage.upload(key)
        written = 0
        try:
            target = upload.target
            if isinstance(target, str):
                with open(target, "wb") as handle:
                    written = _write_all(handle, chunks)
            else:
                written = _write_all(target, chunks)
            upload.publish()
        except BaseException:
            upload.discard()
            raise
        return written

    def delete(self, name: str) -> None:
        self.storage.delete(self.segment_key(name))

    def _read(self, key: str, ranges: list[tuple[int, int]]) -> list[bytes]:
        try:
            return self.storage.read_ranges(key, ranges)
        except FileNotFoundError as exc:
            raise SegmentError(f"{key}: gone") from exc


def verified_recipe(described: dict[str, Any]) -> bool:
    """Whether a store.json's recipe is the sha256 of the identity it describes."""
    identity = described.get("identity")
    return isinstance(identity, dict) and described.get("recipe") == recipe_digest(identity)


def _write_all(handle: BinaryIO, chunks: Iterable[bytes]) -> int:
    written = 0
    for chunk in chunks:
        handle.write(chunk)
        written += len(chunk)
    return written


@dataclass(frozen=True)
class StoreTarget:
    """Where a worker adds the vectors it computes: the job's own store, the run's token, and
    the worker's own (so that no two attempts at a shard ever name a segment alike)."""

    store: VectorStore
    run: str
    output: str  # the job's output location: with the shard, it names the shard's segment
    writer: str

    def stem(self, shard: Shard) -> str:
        """What every attempt at the shard's segment is named after."""
        made_of = [self.output, shard.rel_name, shard.input_size, shard.input_mtime_ns]
        return hashlib.sha256(json.dumps(made_of).encode()).hexdigest()[:24]

    def segment_name(self, shard: Shard) -> str:
        return f"{self.stem(shard)}-{self.writer}"

    def discard_unfinished(self, shard: Shard) -> None:
        """Drop what killed attempts at this shard's segment left half uploaded (call only
        while holding the shard's claim)."""
        self.store.storage.discard_stale_uploads(f"{SEGMENTS}/{self.stem(shard)}-", prefix=True)
