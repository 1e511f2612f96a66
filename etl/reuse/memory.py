"""The reader's index of every text its stores hold: 8 bytes a text in memory, and a lookup
per block that reads nothing and costs the same at 10^8 texts as at 10^6.

Hashes are split by their first byte into 256 parts. A part keeps, sorted, the next 32 bits of
each of its hashes, and beside each a 32-bit record number (a file's first number plus the
record's row in it). A block's sorted hashes fall into the parts in order, so a lookup is one
binary search per part over arrays that never grow with the block. Two stored texts share those
40 bits in about n / 2^40 of the lookups (1e-4 at 10^8 texts): a hit is a candidate, and its
record's own hash decides (etl.reuse.records), so a false hit costs a fetch, never a wrong
vector. New files land in a small sorted overflow per part, merged in once it holds an eighth
of its part: adding costs a few copies of each text over the index's life. 10^8 texts take
800 MB; RocksDB's and LevelDB's in-memory indexes and filters make the same trade.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from etl.reuse.hashing import HASH_DTYPE

PARTS = 256
MERGE_AT = 4096  # an overflow smaller than this is never merged
LIMIT = (1 << 32) - 1  # record numbers are 32-bit


@dataclass(frozen=True)
class FileRef:
    """A file the index points into: its store, its segment name, the run that wrote it."""

    store: Any  # etl.reuse.store.VectorStore
    name: str
    rows: int
    run: str


def split_keys(hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(k,) hashes -> (k,) part (their first byte) and (k,) key (the next 32 bits)."""
    raw = np.ascontiguousarray(hashes, HASH_DTYPE).view(np.uint8).reshape(-1, 16)
    part = raw[:, 0].astype(np.intp)
    key = np.ascontiguousarray(raw[:, 1:5]).view(">u4")[:, 0].astype(np.uint32)
    return part, key


class _Part:
    __slots__ = ("filled", "keys", "locs", "more_keys", "more_locs")

    def __init__(self) -> None:
        empty32 = np.zeros(0, np.uint32)
        self.keys, self.locs = empty32, empty32
        self.more_keys, self.more_locs = empty32, empty32
        self.filled: int | None = None  # while loading in bulk: how much of keys is written

    def reserve(self, capacity: int) -> None:
        """Start a bulk load: room for ``capacity`` more keys, written in place, sorted once
        by settle() (one allocation a part: a first load of 10^8 texts needs 8 bytes a text,
        not twice that in pieces)."""
        self.settle()
        have = len(self.keys)
        self.keys = np.concatenate([self.keys, np.empty(capacity, np.uint32)])
        self.locs = np.concatenate([self.locs, np.empty(capacity, np.uint32)])
        self.filled = have

    def add(self, keys: np.ndarray, locs: np.ndarray) -> None:
        """Keys with their record numbers, in the order added, into the overflow (merged when
        it is big); sorted there, stably, so that of equal keys the last added comes last."""
        if self.filled is not None:
            end = self.filled + len(keys)
            if end > len(self.keys):  # more than reserved: grow by half
                more = max(end - len(self.keys), len(self.keys) // 2)
                self.keys = np.concatenate([self.keys, np.empty(more, np.uint32)])
                self.locs = np.concatenate([self.locs, np.empty(more, np.uint32)])
            self.keys[self.filled : end] = keys
            self.locs[self.filled : end] = locs
            self.filled = end
            return
        keys = np.concatenate([self.more_keys, keys])
        locs = np.concatenate([self.more_locs, locs])
        order = np.argsort(keys, kind="stable")
        self.more_keys, self.more_locs = keys[order], locs[order]
        if len(self.more_keys) >= max(MERGE_AT, len(self.keys) // 8):
            keys = np.concatenate([self.keys, self.more_keys])
            locs = np.concatenate([self.locs, self.more_locs])
            order = np.argsort(keys, kind="stable")
            self.keys, self.locs = keys[order], locs[order]
            self.more_keys = self.more_locs = np.zeros(0, np.uint32)

    def settle(self) -> None:
        """End of a bulk load: everything written since, sorted once (stably: of equal keys
        the one written last stays last)."""
        if self.filled is None:
            return
        keys, locs = self.keys[: self.filled], self.locs[: self.filled]
        self.filled = None
        order = np.argsort(keys, kind="stable")
        self.keys, self.locs = keys[order], locs[order]

    def find(self, keys: np.ndarray) -> np.ndarray:
        """(q,) record number of each key (int64), -1 where it is not here; of two records of
        one key, the one added last (a compacted copy over its sources)."""
        found = np.full(len(keys), -1, np.int64)
        for stored, locs in ((self.more_keys, self.more_locs), (self.keys, self.locs)):
            if not len(stored):
                continue
            at = np.searchsorted(stored, keys, side="right") - 1  # the last of equal keys
            hit = (at >= 0) & (stored[np.maximum(at, 0)] == keys) & (found < 0)
            found[hit] = locs[at[hit]]
        return found

    def drop(self, dead: np.ndarray) -> None:
        """Forget every record whose number ``dead(locs)`` says is dead."""
        self.settle()
        keep = ~dead(self.locs)
        self.keys, self.locs = self.keys[keep], self.locs[keep]
        keep = ~dead(self.more_locs)
        self.more_keys, self.more_locs = self.more_keys[keep], self.more_locs[keep]

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.keys, self.locs, self.more_keys, self.more_locs))


class MemoryIndex:
    """Text hash -> (file, row) for every file added, by 40 bits of the hash."""

    def __init__(self) -> None:
        self.parts = [_Part() for _ in range(PARTS)]
        self.files: list[FileRef] = []
        self._bases = np.zeros(16, np.int64)  # first record number of each file (and room)
        self._dead = np.zeros(16, bool)  # files found gone or damaged: never served from again
        self.names: dict[tuple[str, str], int] = {}  # (store uri, name) -> file number
        self.next = 0
        self.texts = 0
        self.dead_records = 0  # records of dead files still in the parts

    def __contains__(self, item: tuple[str, str]) -> bool:
        return item in self.names

    def register(self, ref: FileRef) -> int | None:
        """A file's number, for insert(); None when the index is full (4 billion records):
        then the file stays unknown and its texts are embedded again."""
        if self.next + ref.rows > LIMIT:
            return None
        number = len(self.files)
        if number == len(self._bases):  # room for twice as many files
            self._bases = np.concatenate([self._bases, np.zeros(number, np.int64)])
            self._dead = np.concatenate([self._dead, np.zeros(number, bool)])
        self.files.append(ref)
        self._bases[number] = self.next
        self.names[(ref.store.uri, ref.name)] = number
        self.next += ref.rows
        return number

    def insert(self, items: list[tuple[int, np.ndarray, np.ndarray | None]]) -> None:
        """Index (file number, hashes, their rows in the file or None for 0, 1, ...) items,
        sorted together: several at once cost less than one by one."""
        parts, keys, locs = [], [], []
        for number, hashes, rows in items:
            if rows is None:
                rows = np.arange(len(hashes), dtype=np.int64)
            part, key = split_keys(hashes)
            parts.append(part)
            keys.append(key)
            locs.append((self._bases[number] + rows).astype(np.uint32))
            self.texts += len(hashes)
        if not parts:
            return
        part, key, loc = np.concatenate(parts), np.concatenate(keys), np.concatenate(locs)
        order = np.argsort(part.astype(np.uint8), kind="stable")  # by part only: a radix sort
        part, key, loc = part[order], key[order], loc[order]
        bounds = np.searchsorted(part, np.arange(PARTS + 1))
        for p in np.flatnonzero(np.diff(bounds)):
            a, b = bounds[p], bounds[p + 1]
            # Copies: a slice would keep the whole batch alive until every part is sorted.
            self.parts[p].add(key[a:b].copy(), loc[a:b].copy())

    def find(self, hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(m,) sorted hashes -> (m,) file number (-1: not found) and (m,) row in it."""
        where = np.full(len(hashes), -1, np.int32)
        row = np.zeros(len(hashes), np.int64)
        if not len(hashes) or not self.files:
            return where, row
        part, key = split_keys(hashes)
        bounds = np.searchsorted(part, np.arange(PARTS + 1))
        loc = np.full(len(hashes), -1, np.int64)
        for p in np.flatnonzero(np.diff(bounds)):
            a, b = bounds[p], bounds[p + 1]
            loc[a:b] = self.parts[p].find(key[a:b])
        hit = np.flatnonzero(loc >= 0)
        bases = self._bases[: len(self.files)]
        files = np.searchsorted(bases, loc[hit], side="right") - 1
        alive = ~self._dead[files]
        where[hit[alive]] = files[alive]
        row[hit[alive]] = loc[hit[alive]] - bases[files[alive]]
        return where, row

    @contextlib.contextmanager
    def bulk(self, texts: int = 0) -> Iterator[None]:
        """Load many files at once, about ``texts`` hashes: each part reserves its share (hashes
        are uniform: n / 256 each, give or take a few square roots), what is inserted is sorted
        once at the end, and not findable before (a first load: no overflow merged again and
        again, no copies)."""
        share = texts // PARTS
        for part in self.parts:
            part.reserve(share + 8 * int(share**0.5) + 64 if texts else 0)
        try:
            yield
        finally:
            for part in self.parts:
                part.settle()

    def kill(self, number: int) -> None:
        """Never serve from this file again (gone, replaced, or not what it says). Once dead
        files hold as many records as live ones, their entries are dropped (a pass over the
        index), so that memory follows what is live."""
        if self._dead[number]:
            return
        self._dead[number] = True
        self.dead_records += self.files[number].rows
        if self.dead_records > max(self.next - self.dead_records, 1 << 16):
            bases = self._bases[: len(self.files)]
            dead = self._dead[: len(self.files)]

            def is_dead(locs: np.ndarray) -> np.ndarray:
                return dead[np.searchsorted(bases, locs, side="right") - 1]

            for part in self.parts:
                part.drop(is_dead)
            self.texts = sum(len(p.keys) + len(p.more_keys) for p in self.parts)
            self.dead_records = 0  # dead files hold no entries any more

    def is_dead(self, number: int) -> bool:
        return bool(self._dead[number])

    @property
    def nbytes(self) -> int:
        return sum(p.nbytes for p in self.parts) + self._bases.nbytes
