"""The reader's side, per shard: which rows go to the model, which copy a vector, from where.

The reader hashes the texts of a block of rows as it reads the block, before its windows, and
classifies each distinct text once:

    shard    embedded earlier in this shard: copy its vector
    job      found in a store entry this run wrote (another shard, another worker)
    earlier  found in a store entry written before this run (a rerun, --reuse)
    embed    new: its first row goes to the model; every later row of it copies the vector

Rows are numbered into the shard's spill (etl.reuse.spill) in the order their text is first
embedded, window by window and row by row within a window, the order the writer appends them;
a copying row names the spill number of its text. Before a shard's first lookup the reader
waits until the writer has finished the shards it read before (etl.reuse.ledger), so that what
they embedded is in the store. Memory per reader: one block's hashes, and the hashes of up to
SEEN_CAP texts of the shard's earlier blocks (a text past that is embedded again), and the hashes
of the texts it sent to the model (16 bytes each), which become its segment's: up to
ENTRY_HASHES of them (a larger segment is told without its hashes; the reader's lookup reads
its index from the store like any other's).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from etl.errors import InputError
from etl.reuse.hashing import HASH_DTYPE, text_hashes
from etl.reuse.journal import ENTRY_HASHES
from etl.reuse.lookup import Found, Lookup

NULL, EMBED, SHARD, JOB, EARLIER = -1, 0, 1, 2, 3
SOURCES = {SHARD: "shard", JOB: "job", EARLIER: "earlier"}
BLOCK_ROWS = 1 << 16  # rows hashed and looked up together (a multiple of the window)
SEEN_CAP = 1 << 20  # texts of a shard's earlier blocks remembered (28 MB at most)


@dataclass
class Known:
    """Texts a shard embedded: sorted hashes, their spill numbers and token counts."""

    hashes: np.ndarray = field(default_factory=lambda: np.zeros(0, HASH_DTYPE))
    numbers: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    tokens: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))

    def find(self, queries: np.ndarray) -> np.ndarray:
        """(m,) position in this of each query, -1 where it is not here."""
        if not len(self.hashes) or not len(queries):
            return np.full(len(queries), -1, np.int64)
        at = np.minimum(np.searchsorted(self.hashes, queries), len(self.hashes) - 1)
        return np.where(self.hashes[at] == queries, at, -1)

    def add(self, hashes: np.ndarray, numbers: np.ndarray, tokens: np.ndarray) -> None:
        """Insert sorted hashes none of which is here yet, up to SEEN_CAP in all."""
        room = max(0, SEEN_CAP - len(self.hashes))
        hashes, numbers, tokens = hashes[:room], numbers[:room], tokens[:room]
        at = np.searchsorted(self.hashes, hashes)
        self.hashes = np.insert(self.hashes, at, hashes)
        self.numbers = np.insert(self.numbers, at, numbers)
        self.tokens = np.insert(self.tokens, at, tokens)


@dataclass
class WindowReuse:
    """What the writer needs for a window's rows that do not go through the model."""

    kind: np.ndarray  # (rows,) int8: NULL, EMBED, SHARD, JOB or EARLIER
    ref: np.ndarray  # (rows,) int64: the spill number of the row's text (EMBED and SHARD rows)
    first_spill: int  # spill number of this window's first EMBED row
    embed_hashes: np.ndarray  # (e,) hashes of the EMBED rows, in row order
    stored_rows: np.ndarray  # (s,) rows whose vector the reader fetched from a store
    stored: np.ndarray  # (s, R) uint8: their records
    not_fetched: int = 0  # texts found in a store but embedded: a fetch would have cost more

    def count(self, kind: int) -> int:
        return int((self.kind == kind).sum())


@dataclass
class _Block:
    start: int  # first row of the block in the shard
    text: np.ndarray  # (rows,) int64: distinct text number of each row, -1 for a null text
    hashes: np.ndarray  # (m,) sorted distinct hashes
    seen: np.ndarray  # (m,) spill number where an earlier block embedded it, else -1
    found: Found  # where each of the others was found in the stores
    spill: np.ndarray  # (m,) spill number once embedded in this block, else -1
    tokens: np.ndarray  # (m,) its token count once known


class ShardReuse:
    """The reader's bookkeeping for one shard: blocks of hashes, and the spill numbers given."""

    def __init__(
        self,
        lookup: Lookup,
        prompt: str,
        blocks: Iterator[list[str | None]],
    ) -> None:
        self.lookup = lookup
        self.prompt = prompt
        self.blocks = blocks  # the shard's texts, a block at a time, from its first row
        self.end = 0  # rows of the shard hashed so far
        self.block: _Block | None = None
        self.next_spill = 0
        self.seen = Known()  # texts of this shard's earlier blocks
        self.embedded: list[np.ndarray] | None = []  # hashes sent to the model, in spill order

    def starts_block(self, start: int) -> bool:
        """Whether the window at row ``start`` begins a block: the windows before it must have
        recorded their token counts first (record_tokens), since its block replaces theirs."""
        return start >= self.end

    def window(self, start: int, rows: int) -> WindowReuse:
        """Classify rows start..start+rows-1 (one window: never across blocks) and fetch what
        the stores hold for them."""
        while start >= self.end:
            texts = next(self.blocks, None)
            if texts is None:
                raise InputError(f"row {start}: no texts were read for its block")
            self._add_block(self.end, texts)
            self.end += len(texts)
        block = self.block
        offset = start - block.start
        text = block.text[offset : offset + rows]  # (rows,)
        if not len(block.hashes):  # every text of the block is null
            empty = np.zeros(0, np.int64)
            nothing = np.zeros((0, self.lookup.stores[0].layout.record_bytes), np.uint8)
            kind, ref = np.full(rows, NULL, np.int8), np.full(rows, -1, np.int64)
            return WindowReuse(kind, ref, self.next_spill, block.hashes, empty, nothing)
        present = text >= 0
        t = np.maximum(text, 0)  # any index for null rows: they are masked out
        kind = np.full(rows, NULL, np.int8)
        ref = np.full(rows, -1, np.int64)
        kind[present & (block.seen[t] >= 0)] = SHARD
        stored_rows, stored, not_fetched = self._fetch(
            block, text, present & (kind == NULL) & (block.found.where[t] >= 0)
        )
        kind[stored_rows] = np.where(
            block.found.earlier(self.lookup.run)[text[stored_rows]], EARLIER, JOB
        )
        # A text's first row left in this window goes to the model (also when a store's copy
        # of it could not be read); its other rows copy it.
        open_rows = np.flatnonzero(present & (kind == NULL))
        open_rows = open_rows[block.spill[text[open_rows]] < 0]
        _, firsts = np.unique(text[open_rows], return_index=True)
        embed_rows = np.sort(open_rows[firsts])
        first_spill = self.next_spill
        block.spill[text[embed_rows]] = first_spill + np.arange(len(embed_rows))
        self.next_spill += len(embed_rows)
        if self.embedded is not None and self.next_spill <= ENTRY_HASHES:
            self.embedded.append(block.hashes[text[embed_rows]])
        else:
            self.embedded = None  # too many to keep: the store will tell them
        kind[embed_rows] = EMBED
        kind[present & (kind == NULL)] = SHARD  # a repeat of a text first embedded above
        copies = np.flatnonzero(kind == SHARD)
        from_block = block.spill[text[copies]]
        ref[copies] = np.where(from_block >= 0, from_block, block.seen[text[copies]])
        ref[embed_rows] = block.spill[text[embed_rows]]
        return WindowReuse(
            kind,
            ref,
            first_spill,
            block.hashes[text[embed_rows]],
            stored_rows,
            stored,
            not_fetched,
        )

    def spilled(self) -> np.ndarray:
        """(n,) the hashes of every text this shard sent to the model, in spill order: the
        records of its segment, once its writer publishes it."""
        return np.concatenate(self.embedded) if self.embedded else np.zeros(0, HASH_DTYPE)

    def record_tokens(self, start: int, reuse: WindowReuse, n_tokens: np.ndarray) -> None:
        """Take the token counts of the window's EMBED rows (set in ``n_tokens``, (rows,)) and
        fill in those of its copying rows."""
        block = self.block
        text = block.text[start - block.start : start - block.start + len(reuse.kind)]
        embed = np.flatnonzero(reuse.kind == EMBED)
        block.tokens[text[embed]] = n_tokens[embed]
        copying = np.flatnonzero(reuse.kind == SHARD)
        n_tokens[copying] = block.tokens[text[copying]]
        if len(reuse.stored_rows):
            n_tokens[reuse.stored_rows] = self.lookup.layout.n_tokens(reuse.stored)

    def _add_block(self, start: int, texts: list[str | None]) -> None:
        """Hash a block's texts and find them: in earlier blocks, then in the stores."""
        if self.block is not None:
            self._remember(self.block)
        present = np.array([t is not None for t in texts], dtype=bool)
        hashes = text_hashes([t for t in texts if t is not None], self.prompt)
        distinct, inverse = np.unique(hashes, return_inverse=True)
        text = np.full(len(texts), -1, np.int64)
        text[present] = inverse
        at = self.seen.find(distinct)
        known = np.flatnonzero(at >= 0)
        seen = np.full(len(distinct), -1, np.int64)
        tokens = np.zeros(len(distinct), np.int32)
        seen[known] = self.seen.numbers[at[known]]
        tokens[known] = self.seen.tokens[at[known]]
        unknown = np.flatnonzero(seen < 0)
        in_stores = self.lookup.find(distinct[unknown])
        found = Found(
            np.full(len(distinct), -1, np.int32), np.zeros(len(distinct), np.int64), in_stores.index
        )
        found.where[unknown], found.row[unknown] = in_stores.where, in_stores.row
        spill = np.full(len(distinct), -1, np.int64)
        self.block = _Block(start, text, distinct, seen, found, spill, tokens)

    def _fetch(
        self, block: _Block, text: np.ndarray, wanted: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, int]:
        """Rows found in a store whose records were read, those records, and how many texts
        were found but not fetched (cheaper to embed)."""
        rows = np.flatnonzero(wanted)
        if not len(rows):
            return rows, np.zeros((0, self.lookup.layout.record_bytes), np.uint8), 0
        picks, back = np.unique(text[rows], return_inverse=True)
        records, ok, skipped = self.lookup.fetch(block.found, picks, block.hashes[picks])
        block.found.where[picks[~ok]] = -1  # unread: embedded instead, now and later
        keep = ok[back]
        return rows[keep], records[back[keep]], int(skipped.sum())

    def _remember(self, block: _Block) -> None:
        """Keep the texts this block embedded for the blocks after it."""
        embedded = np.flatnonzero(block.spill >= 0)  # sorted hashes, none seen before
        self.seen.add(block.hashes[embedded], block.spill[embedded], block.tokens[embedded])
