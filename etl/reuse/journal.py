"""What a store holds, written down as it changes: a journal of entries, never a listing.

    log/<seq>         one entry each, numbered from 0, created once (create-if-absent) and never
                      changed: "add" (segments a worker published, with their hashes; the
                      hashes it served from earlier runs) or "checkpoint" (every live segment)
    checkpoint.json   a hint: the number of the latest checkpoint (it may lag; readers go on
                      from it to the newest entry)

A reader reads the latest checkpoint and the entries after it once, then asks for the next
number now and then: one request, which finds nothing while nothing landed. A worker adds one
entry for all the segments it published in the last FLUSH_SECONDS (and when it stops), so
entries, and the requests to read them, grow with time, not with shards. Compaction and gc
replace segments by appending a checkpoint; two that race both see the entry number taken, and
the later one gives up its work. Entries carry a CRC-32: a damaged one is skipped (its segments
are not known, their texts embedded again), never believed.

Iceberg and Delta Lake keep their tables this way (a manifest chain written with conditional
puts); the entries here carry the hashes themselves, so that a reader never opens a segment to
learn what it holds.
"""

from __future__ import annotations

import json
import struct
import time
import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from etl.reuse.hashing import HASH_DTYPE
from etl.storage.base import Storage

LOG = "log"
HINT = "checkpoint.json"
MAGIC = b"EMBLOG01"
HEAD = struct.Struct("<8sI")
FLUSH_SECONDS = 10.0  # a worker's segments wait at most this long to be told to the journal
# A segment of more records is told without its hashes (16 MiB): readers read its own index.
ENTRY_HASHES = 1 << 20


class JournalError(ValueError):
    """An entry that is damaged or not of this version: skipped."""


@dataclass(frozen=True)
class StoredFile:
    """One live segment as the journal knows it."""

    name: str
    rows: int
    size: int
    run: str  # the run that wrote it ("" for a compacted segment of several)
    created: float
    sources: tuple[str, ...] = ()  # what compaction or gc made it from
    hashes: np.ndarray | None = field(default=None, compare=False)  # from an add entry

    def describe(self) -> list[Any]:
        return [self.name, self.rows, self.size, self.run, self.created, list(self.sources)]

    def bare(self) -> StoredFile:
        """The same file without the hashes an add entry carried."""
        if self.hashes is None:
            return self
        return StoredFile(self.name, self.rows, self.size, self.run, self.created, self.sources)

    @classmethod
    def parse(cls, item: list[Any]) -> StoredFile:
        name, rows, size, run, created, sources = item
        return cls(str(name), int(rows), int(size), str(run), float(created), tuple(sources))


@dataclass
class Entry:
    """One journal entry: what it says, and the hashes it carries."""

    header: dict[str, Any]
    payload: bytes = b""

    @property
    def kind(self) -> str:
        return str(self.header.get("kind", ""))

    def encode(self) -> bytes:
        header = json.dumps(self.header, sort_keys=True).encode()
        body = HEAD.pack(MAGIC, len(header)) + header + self.payload
        return body + struct.pack("<I", zlib.crc32(body))

    @classmethod
    def decode(cls, key: str, data: bytes) -> Entry:
        if len(data) < HEAD.size + 4 or data[:8] != MAGIC:
            raise JournalError(f"{key}: not a journal entry of this version")
        (check,) = struct.unpack("<I", data[-4:])
        if zlib.crc32(data[:-4]) != check:
            raise JournalError(f"{key}: fails its checksum")
        _, length = HEAD.unpack(data[: HEAD.size])
        try:
            entry = cls(
                json.loads(data[HEAD.size : HEAD.size + length]), data[HEAD.size + length : -4]
            )
            if entry.kind not in ("add", "checkpoint"):
                raise ValueError(f"an entry of kind {entry.kind!r}")
            entry.files(), entry.used()  # whole, or refused now rather than half read later
        except (ValueError, KeyError, TypeError) as exc:
            raise JournalError(f"{key}: unreadable entry: {exc}") from exc
        return entry

    def files(self) -> list[StoredFile]:
        """The segments an add entry tells of, each with its hashes; a checkpoint's, without."""
        if self.kind == "checkpoint":
            return [StoredFile.parse(item) for item in self.header["files"]]
        hashes = np.frombuffer(self.payload, HASH_DTYPE)
        found, start = [], 0
        for item in self.header["segments"]:
            name, rows, size, created, *indexed = item  # [..., 0]: told without its hashes
            carried = None
            if not indexed or indexed[0]:
                carried, start = hashes[start : start + rows], start + rows
            found.append(StoredFile(name, rows, size, self.header["run"], created, (), carried))
        return found

    def used(self) -> np.ndarray:
        """An add entry's hashes served from earlier runs (sorted)."""
        count = int(self.header.get("used", 0))
        hashes = np.frombuffer(self.payload, HASH_DTYPE)
        segments = self.header.get("segments", ())
        stored = sum(int(item[1]) for item in segments if len(item) == 4 or item[4])
        if stored + count != len(hashes):
            raise ValueError(f"{len(hashes)} hashes for {stored} stored and {count} served")
        return hashes[len(hashes) - count :] if count else hashes[:0]

    @property
    def time(self) -> float:
        return float(self.header.get("time", 0.0))


def add_entry(run: str, writer: str, files: list[StoredFile], used: np.ndarray) -> Entry:
    segments = [
        [f.name, f.rows, f.size, f.created, *([] if f.hashes is not None else [0])] for f in files
    ]
    payload = b"".join(
        np.ascontiguousarray(f.hashes, HASH_DTYPE).tobytes() for f in files if f.hashes is not None
    )
    used = np.unique(np.asarray(used, HASH_DTYPE))
    header = {
        "kind": "add",
        "run": run,
        "writer": writer,
        "time": time.time(),
        "segments": segments,
        "used": len(used),
    }
    return Entry(header, payload + used.tobytes())


def checkpoint_entry(files: list[StoredFile], retired: list[list[Any]], previous: int) -> Entry:
    header = {
        "kind": "checkpoint",
        "time": time.time(),
        "files": [f.describe() for f in files],
        "retired": retired,  # [name, when]: replaced, deleted once older than the grace
        "previous": previous,
    }
    return Entry(header)


class Journal:
    """The journal of the store rooted at ``storage``."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage

    @staticmethod
    def key(seq: int) -> str:
        return f"{LOG}/{seq:012d}"

    def read(self, seq: int) -> Entry | None:
        """Entry ``seq``, None if there is none yet; JournalError if it is damaged."""
        data = self.storage.read(self.key(seq))
        return None if data is None else Entry.decode(self.storage.uri(self.key(seq)), data)

    def exists(self, seq: int) -> bool:
        return self.storage.exists(self.key(seq))

    def hint(self) -> int:
        """Where readers start: the latest checkpoint's number as last written, or 0."""
        data = self.storage.read(HINT)
        try:
            return max(0, int(json.loads(data)["checkpoint"])) if data else 0
        except (ValueError, KeyError, TypeError):
            return 0

    def set_hint(self, seq: int) -> None:
        self.storage.put(HINT, json.dumps({"checkpoint": seq}).encode())

    def end(self, start: int) -> int:
        """The first free number at or after ``start``: doubling steps, then halving ones,
        one existence check each (entries are numbered without gaps)."""
        if not self.exists(start):
            return start
        low, step = start, 1  # low exists
        while self.exists(low + step):
            low, step = low + step, step * 2
        high = low + step  # free
        while high - low > 1:
            middle = (low + high) // 2
            if self.exists(middle):
                low = middle
            else:
                high = middle
        return high

    def append(self, entry: Entry, start: int) -> int:
        """Write ``entry`` at the first free number at or after ``start`` (tried first: a
        writer's guess is usually right); that number."""
        data = entry.encode()
        seq = start
        while not self.storage.create(self.key(seq), data):
            seq = self.end(seq + 1)  # another writer took it
        return seq

    def listed(self) -> list[int]:
        """Every entry's number, by listing (maintenance, and a reader whose hint is gone)."""
        found = []
        for item in self.storage.list(LOG):
            tail = item.key.rsplit("/", 1)[-1]
            if tail.isdigit():
                found.append(int(tail))
        return sorted(found)

    def start(self) -> int:
        """Where a reader starts: the hinted checkpoint; if that entry is gone (gc deleted the
        entries before a newer one, or the hint was never written), the newest checkpoint
        found by listing, else the first entry there is."""
        hint = self.hint()
        if self.exists(hint):
            return hint
        numbers = self.listed()
        for seq in reversed(numbers):
            try:
                entry = self.read(seq)
            except JournalError:
                continue
            if entry is not None and entry.kind == "checkpoint":
                return seq
        return numbers[0] if numbers else 0
