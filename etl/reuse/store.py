"""A vector store: one recipe's vectors, by text hash, in immutable segments on any storage.

    store.json         the recipe: its fingerprint, what it is made of, the record layout
    segments/<id>.seg  the vectors one shard computed (etl.reuse.segment)

store.json is created once (the first job wins, later ones must agree); a segment is uploaded
whole and appears under its name only then, so a killed run leaves none half-written, and a
name that exists is never written again. Any number of workers and jobs add segments at once;
two of them computing the same text only store it twice.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np

from etl.contract import Shard
from etl.reuse.hashing import HASH_BYTES, HASH_DTYPE
from etl.reuse.segment import TAIL_READ, Layout, Segment, SegmentError, parse_tail
from etl.storage.base import Entry, Storage

log = logging.getLogger(__name__)

STORE_FILE = "store.json"
SEGMENTS = "segments"
SUFFIX = ".seg"
COPY_CHUNK = 8 << 20


class VectorStore:
    """The store rooted at ``storage``, holding vectors of one recipe. Picklable."""

    def __init__(self, storage: Storage, layout: Layout, recipe: str) -> None:
        self.storage = storage
        self.layout = layout
        self.recipe = recipe

    def __repr__(self) -> str:
        return f"VectorStore({self.storage.uri()!r})"

    @property
    def uri(self) -> str:
        return self.storage.uri()

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
            "format": 1,
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
        """Delete every segment and store.json (--overwrite of a job's own store)."""
        self.storage.delete_prefix(SEGMENTS)
        self.storage.delete(STORE_FILE)

    def segment_key(self, name: str) -> str:
        return f"{SEGMENTS}/{name}{SUFFIX}"

    def entries(self) -> list[Entry]:
        """The published segments: one listing."""
        return [e for e in self.storage.list(SEGMENTS) if e.key.endswith(SUFFIX)]

    def segment(self, entry: Entry) -> Segment:
        """A segment's trailer, checked against this store (SegmentError otherwise)."""
        tail_start = max(0, entry.size - TAIL_READ)
        (tail,) = self._read(entry.key, [(tail_start, entry.size - tail_start)])
        segment, needed = parse_tail(entry.key, entry.size, tail)
        if needed > len(tail):
            (tail,) = self._read(entry.key, [(entry.size - needed, needed)])
            segment, _ = parse_tail(entry.key, entry.size, tail)
        if segment.recipe != self.recipe or segment.record_bytes != self.layout.record_bytes:
            raise SegmentError(f"{entry.key}: made with recipe {segment.recipe}, not {self.recipe}")
        return segment

    def index(self, segment: Segment, first: int = 0, rows: int | None = None) -> np.ndarray:
        """(rows,) text hashes of a segment's records first.. (all of them by default)."""
        rows = segment.rows - first if rows is None else rows
        offset = segment.index_offset + first * HASH_BYTES
        (data,) = self._read(segment.key, [(offset, rows * HASH_BYTES)])
        if len(data) != rows * HASH_BYTES:
            raise SegmentError(f"{segment.key}: index cut short")
        return np.frombuffer(data, HASH_DTYPE)

    def records(self, segment: Segment, rows: np.ndarray) -> np.ndarray:
        """(k, R) records of a segment's ``rows`` (any order, repeats allowed): nearby records
        are read together, one range per run (see Storage.range_gap)."""
        size = segment.record_bytes
        wanted = np.unique(rows)
        gaps = (wanted[1:] - wanted[:-1] - 1) * size
        groups = np.split(np.arange(len(wanted)), np.flatnonzero(gaps > self.storage.range_gap) + 1)
        ranges = [
            (int(wanted[g[0]]) * size, int(wanted[g[-1]] - wanted[g[0]] + 1) * size) for g in groups
        ]
        found = np.empty((len(wanted), size), np.uint8)
        for group, (_, length), blob in zip(
            groups, ranges, self._read(segment.key, ranges), strict=True
        ):
            if len(blob) != length:
                raise SegmentError(f"{segment.key}: records cut short")
            run = np.frombuffer(blob, np.uint8).reshape(-1, size)  # (rows in the range, R)
            found[group] = run[wanted[group] - wanted[group[0]]]
        return found[np.searchsorted(wanted, rows)]

    def publish(self, name: str, chunks: Iterable[bytes]) -> bool:
        """Upload a segment under ``name`` from its bytes; False if that name exists already.

        The caller holds the claim of the shard the name is made from, and dropped what a
        killed attempt left unfinished when it took the claim (discard_unfinished).
        """
        key = self.segment_key(name)
        if self.storage.exists(key):
            return False
        upload = self.storage.upload(key)
        try:
            target = upload.target
            if isinstance(target, str):
                with open(target, "wb") as handle:
                    _write_all(handle, chunks)
            else:
                _write_all(target, chunks)
            upload.publish()
        except BaseException:
            upload.discard()
            raise
        return True

    def discard_unfinished(self, name: str) -> None:
        """Drop an unfinished upload of this name (call only while holding its shard's claim)."""
        self.storage.discard_stale_uploads(self.segment_key(name))

    def _read(self, key: str, ranges: list[tuple[int, int]]) -> list[bytes]:
        try:
            return self.storage.read_ranges(key, ranges)
        except FileNotFoundError as exc:
            raise SegmentError(f"{key}: gone") from exc


def _write_all(handle: BinaryIO, chunks: Iterable[bytes]) -> None:
    for chunk in chunks:
        handle.write(chunk)


@dataclass(frozen=True)
class StoreTarget:
    """Where a worker adds the vectors it computes: the job's own store, and the run's token."""

    store: VectorStore
    run: str
    output: str  # the job's output location: with the shard, it names the shard's segment

    def segment_name(self, shard: Shard) -> str:
        """The same shard of the same input into the same output gets the same name (a rerun
        after a kill finds the segment there, or its unfinished upload to drop)."""
        made_of = [self.output, shard.rel_name, shard.input_size, shard.input_mtime_ns]
        return hashlib.sha256(json.dumps(made_of).encode()).hexdigest()[:32]
