"""The reader's index of every text its stores hold: 9 bytes a text in memory, and a lookup
per block that reads nothing and costs about the same at 10^8 texts as at 10^6.

Hashes are split by their first byte into 256 parts. A part keeps, sorted, the next 32 bits of
each of its hashes (the key), beside each a 32-bit record number (a file's first number plus
the record's row in it) and one more byte of the hash (the tag). A block's sorted hashes fall
into the parts in order, so a lookup is one binary search per part over arrays that never grow
with the block. Two texts share those 48 bits in about n / 2^48 of the lookups (4e-7 at 10^8
texts): a hit is a candidate, and its record's own hash decides (etl.reuse.records), so a false
hit costs a fetch, never a wrong vector; stored texts that share 40 bits (the key) are told
apart by the tag. New files land in a small sorted overflow per part, merged in once it holds
an eighth of its part: adding costs a few copies of each text over the index's life. 10^8 texts
take 900 MB; RocksDB's and LevelDB's in-memory indexes and filters make the same trade.
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


def split_keys(hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(k,) hashes -> (k,) part (their first byte), key (the next 32 bits), tag (the byte
    after)."""
    raw = np.ascontiguousarray(hashes, HASH_DTYPE).view(np.uint8).reshape(-1, 16)
    part = raw[:, 0].astype(np.intp)
    key = np.ascontiguousarray(raw[:, 1:5]).view(">u4")[:, 0].astype(np.uint32)
    return part, key, raw[:, 5].copy()


Columns = tuple[np.ndarray, np.ndarray, np.ndarray]  # keys (uint32), locs (uint32), tags (uint8)
EMPTY: Columns = (np.zeros(0, np.uint32), np.zeros(0, np.uint32), np.zeros(0, np.uint8))
RUN = 4  # entries of one key looked at, newest first (two are already rare: n^2 / 2^41)


def _join(*columns: Columns) -> Columns:
    return tuple(np.concatenate([c[i] for c in columns]) for i in range(3))  # type: ignore[return-value]


def _sorted(columns: Columns) -> Columns:
    order = np.argsort(columns[0], kind="stable")  # of equal keys, the last added stays last
    return tuple(c[order] for c in columns)  # type: ignore[return-value]


class _Part:
    __slots__ = ("filled", "main", "more")

    def __init__(self) -> None:
        self.main: Columns = EMPTY
        self.more: Columns = EMPTY  # the overflow
        self.filled: int | None = None  # while loading in bulk: how much of main is written

    def reserve(self, capacity: int) -> None:
        """Start a bulk load: room for ``capacity`` more entries, written in place, sorted
        once by settle() (one allocation a part: a first load of 10^8 texts needs 9 bytes a
        text, not twice that in pieces)."""
        self.settle()
        have = len(self.main[0])
        self.main = _join(self.main, _room(capacity))
        self.filled = have

    def add(self, columns: Columns) -> None:
        """Entries in the order added, into the overflow (merged when it is big); sorted
        there, stably, so that of equal keys the last added comes last."""
        if self.filled is not None:
            end = self.filled + len(columns[0])
            if end > len(self.main[0]):  # more than reserved: grow by half
                more = max(end - len(self.main[0]), len(self.main[0]) // 2)
                self.main = _join(self.main, _room(more))
            for target, values in zip(self.main, columns, strict=True):
                target[self.filled : end] = values
            self.filled = end
            return
        self.more = _sorted(_join(self.more, columns))
        if len(self.more[0]) >= max(MERGE_AT, len(self.main[0]) // 8):
            self.main, self.more = _sorted(_join(self.main, self.more)), EMPTY

    def settle(self) -> None:
        """End of a bulk load: everything written since, sorted once."""
        if self.filled is None:
            return
        filled, self.filled = self.filled, None
        self.main = _sorted(tuple(c[:filled] for c in self.main))  # type: ignore[arg-type]

    def find(self, keys: np.ndarray, tags: np.ndarray) -> np.ndarray:
        """(q,) record number of each (key, tag) (int64), -1 where it is not here; of two
        records of one, the one added last (a compacted copy over its sources)."""
        found = np.full(len(keys), -1, np.int64)
        for stored, locs, stored_tags in (self.more, self.main):
            if not len(stored):
                continue
            at = np.searchsorted(stored, keys, side="right") - 1  # the last of equal keys
            open_ = np.flatnonzero((found < 0) & (at >= 0))
            for back in range(RUN):  # a second round only for keys stored twice
                pos = at[open_] - back
                same = (pos >= 0) & (stored[np.maximum(pos, 0)] == keys[open_])
                open_, pos = open_[same], pos[same]
                hit = stored_tags[pos] == tags[open_]
                found[open_[hit]] = locs[pos[hit]]
                open_ = open_[~hit]  # an entry of the same key but another tag: look further
                if not len(open_):
                    break
        return found

    def drop(self, dead: Any) -> None:
        """Forget every entry whose record number ``dead(locs)`` says is dead."""
        self.settle()
        self.main = tuple(c[~dead(self.main[1])] for c in self.main)  # type: ignore[assignment]
        self.more = tuple(c[~dead(self.more[1])] for c in self.more)  # type: ignore[assignment]

    @property
    def count(self) -> int:
        return len(self.main[0]) + len(self.more[0])

    @property
    def nbytes(self) -> int:
        return sum(c.nbytes for c in (*self.main, *self.more))


def _room(size: int) -> Columns:
    return (np.empty(size, np.uint32), np.empty(size, np.uint32), np.empty(size, np.uint8))


class MemoryIndex:
    """Text hash -> (file, row) for every file added, by 48 bits of the hash."""

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
        parts, keys, locs, tags = [], [], [], []
        for number, hashes, rows in items:
            if rows is None:
                rows = np.arange(len(hashes), dtype=np.int64)
            part, key, tag = split_keys(hashes)
            parts.append(part)
            keys.append(key)
            tags.append(tag)
            locs.append((self._bases[number] + rows).astype(np.uint32))
            self.texts += len(hashes)
        if not parts:
            return
        part = np.concatenate(parts)
        order = np.argsort(part.astype(np.uint8), kind="stable")  # by part only: a radix sort
        part = part[order]
        columns = [np.concatenate(c)[order] for c in (keys, locs, tags)]
        bounds = np.searchsorted(part, np.arange(PARTS + 1))
        for p in np.flatnonzero(np.diff(bounds)):
            a, b = bounds[p], bounds[p + 1]
            # Copies: a slice would keep the whole batch alive until every part is sorted.
            self.parts[p].add(tuple(c[a:b].copy() for c in columns))

    def find(self, hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(m,) sorted hashes -> (m,) file number (-1: not found) and (m,) row in it."""
        where = np.full(len(hashes), -1, np.int32)
        row = np.zeros(len(hashes), np.int64)
        if not len(hashes) or not self.files:
            return where, row
        part, key, tag = split_keys(hashes)
        bounds = np.searchsorted(part, np.arange(PARTS + 1))
        loc = np.full(len(hashes), -1, np.int64)
        for p in np.flatnonzero(np.diff(bounds)):
            a, b = bounds[p], bounds[p + 1]
            loc[a:b] = self.parts[p].find(key[a:b], tag[a:b])
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
            self.texts = sum(p.count for p in self.parts)
            self.dead_records = 0  # dead files hold no entries any more

    def is_dead(self, number: int) -> bool:
        return bool(self._dead[number])

    @property
    def nbytes(self) -> int:
        return sum(p.nbytes for p in self.parts) + self._bases.nbytes
