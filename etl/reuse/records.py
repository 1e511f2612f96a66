"""One stored record: the text's hash, its token count, each column's vector, a checksum.

    hash      16 bytes: the text's key (etl.reuse.hashing)
    n_tokens  int32
    vectors   float32, each of the store's columns in its order
    check     uint32: CRC-32 of every byte before it, seeded with the CRC-32 of the store's
              recipe (its sha256): a record is valid only in a store of the recipe it was made
              with, checked on every read at no extra request
    little-endian, fixed width: R = 24 + 4 x (the columns' dimensions)

A record is its own checksummed block: a lookup fetches single records at random, and a block
of several would make every hit read its neighbours to check them. A record read back is served
only if its checksum holds and its hash is the one looked up, so a flipped bit, a record read
from the wrong place or a short read costs an embedding, never a wrong vector.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from etl.reuse.hashing import HASH_BYTES, HASH_DTYPE

HEAD = HASH_BYTES + 4  # hash, n_tokens
CHECK = 4


@dataclass(frozen=True)
class Layout:
    """The record of a store: its columns, (name, dimensions) in the store's order, and the
    recipe its checksums are seeded with."""

    columns: tuple[tuple[str, int], ...]
    recipe: str = ""

    @property
    def seed(self) -> int:
        return zlib.crc32(self.recipe.encode())

    @property
    def record_bytes(self) -> int:
        return HEAD + 4 * sum(dim for _, dim in self.columns) + CHECK

    def describe(self) -> list[list[Any]]:
        return [[name, dim] for name, dim in self.columns]

    def pack(
        self, hashes: np.ndarray, n_tokens: np.ndarray, vectors: dict[str, np.ndarray]
    ) -> np.ndarray:
        """(k,) hashes, (k,) token counts and name -> (k, dim) vectors -> (k, R) records."""
        records = np.zeros((len(n_tokens), self.record_bytes), np.uint8)
        records[:, :HASH_BYTES] = np.asarray(hashes, HASH_DTYPE).view(np.uint8).reshape(-1, 16)
        words = records.view(np.int32)  # (k, R / 4)
        words[:, HASH_BYTES // 4] = n_tokens
        floats = records.view(np.float32)
        start = HEAD // 4
        for name, dim in self.columns:
            floats[:, start : start + dim] = vectors[name]
            start += dim
        words.view(np.uint32)[:, -1] = checksums(records, self.seed)
        return records

    def unpack(self, records: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """(k, R) records -> (k,) token counts and name -> (k, dim) float32 vectors (copies)."""
        records = self.shaped(records)
        n_tokens = self.n_tokens(records)
        floats = records.view(np.float32)
        vectors, start = {}, HEAD // 4
        for name, dim in self.columns:
            vectors[name] = floats[:, start : start + dim].copy()
            start += dim
        return n_tokens, vectors

    def n_tokens(self, records: np.ndarray) -> np.ndarray:
        """(k,) the token counts the records hold."""
        return self.shaped(records).view(np.int32)[:, HASH_BYTES // 4].copy()

    def hashes(self, records: np.ndarray) -> np.ndarray:
        """(k,) the hashes the records say they hold."""
        return np.ascontiguousarray(self.shaped(records)[:, :HASH_BYTES]).view(HASH_DTYPE)[:, 0]

    def intact(self, records: np.ndarray) -> np.ndarray:
        """(k,) True where the record's checksum holds; only those, and only for the hash they
        hold (``hashes``), may be served."""
        records = self.shaped(records)
        stored = records[:, -CHECK:].copy().view(np.uint32)[:, 0]
        return checksums(records, self.seed) == stored

    def shaped(self, records: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(records, dtype=np.uint8).reshape(-1, self.record_bytes)


def checksums(records: np.ndarray, seed: int = 0) -> np.ndarray:
    """(k,) uint32 CRC-32 of each (k, R) record's bytes before its last four, from ``seed``."""
    if not len(records):
        return np.zeros(0, np.uint32)
    size = records.shape[1]
    body = memoryview(np.ascontiguousarray(records)).cast("B")
    crc = zlib.crc32
    return np.fromiter(
        (crc(body[i : i + size - CHECK], seed) for i in range(0, len(body), size)),
        np.uint32,
        count=len(records),
    )
