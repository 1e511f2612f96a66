"""One reader's stream: each shard it is fed, read, tokenized and cut into batches, in order.

Where the stream runs (a thread, or DataLoader processes) is etl.stages.read.read_ahead's
concern. Each reader asks the feed for a whole shard (one its worker has claimed already, so that
concurrent processes never share one), reads it window by window, tokenizes a window in one
call, cuts it into length-sorted batches on a padded-token budget and pads each batch to its
own longest row. Everything the main process needs travels in the yielded items.
"""

from __future__ import annotations

import traceback
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch.utils.data import IterableDataset

from etl.contract import (
    REFUSED_SHOWN,
    Batch,
    Shard,
    ShardEnd,
    ShardFailed,
    ShardFeed,
    ShardStart,
    WindowInfo,
)
from etl.errors import EmbedEtlError, reason
from etl.inputs import input_identity
from etl.reuse.ledger import Ledger
from etl.reuse.lookup import Lookup
from etl.reuse.shard import BLOCK_ROWS, EMBED, SOURCES, ShardReuse
from etl.reuse.store import StoreTarget
from etl.spec import OutputSpec
from etl.stages.read.batching import Batching, plan_batches
from etl.stages.read.blocks import Feed, Rows, read_blocks
from etl.stages.read.chunks import chunk_rows
from etl.stages.read.late import encode_documents, late_window
from etl.stages.read.passage_rows import passages_of
from etl.stages.read.settled import Settled, window_batches
from etl.stages.read.source import model_texts, open_shard, present_rows, refusals, without
from etl.stages.read.token_mask import TokenMask
from etl.stages.read.tokenizer import Layout
from etl.stages.read.tokens import content_ids, encode_window, finish_window
from etl.threads import helper_pool

Item = ShardStart | Batch | ShardEnd | ShardFailed


@dataclass
class _Begun:
    """A window read, its tokens being computed."""

    index: int  # shard
    number: int  # window within the shard
    window: Rows
    first_row: int
    plan: Any  # etl.reuse.shard.WindowReuse, or None
    present: np.ndarray  # (n,) rows whose text goes to the model
    tokens: Future  # Encoded: the present rows through the tokenizer


class ShardStream(IterableDataset):
    """Yields, per shard: ShardStart, the batches of every window, then ShardEnd or ShardFailed."""

    def __init__(
        self,
        shards: Sequence[Shard],
        spec: OutputSpec,
        tokenizer: Any,
        layout: Layout,
        batching: Batching,
        feed: ShardFeed,
        lookup: Lookup | None = None,
        ledger: Ledger | None = None,
        store: StoreTarget | None = None,
    ) -> None:
        self.shards = list(shards)
        self.spec = spec
        self.tokenizer = tokenizer
        self.layout = layout
        self.batching = batching
        self.feed = feed  # which shard to read next: one the worker holds
        self.lookup = lookup  # the vector stores: None embeds every row
        self.ledger = ledger  # which shards the writer has finished
        self.store = store  # where the writer publishes their segments
        self._read: list[int] = []  # shards this reader started and has not seen finished
        self._spilled: dict[int, np.ndarray] = {}  # their texts sent to the model, by shard
        self._prompt_ids: np.ndarray | None = None
        self.token_mask = TokenMask.of(spec, tokenizer)  # a multi-vector model's output tokens
        self._tokenizing: ThreadPoolExecutor | None = None

    def __iter__(self) -> Iterator[Item]:
        self._tokenizing = None  # a thread of this reader, started with its first window
        # The tokenizer is used by that thread alone once it runs: what else needs it, now.
        self._prompt_ids = content_ids(self.tokenizer, self.spec.prompt)
        try:
            while (index := self.feed.next()) is not None:
                yield from self._shard(index, self.shards[index])
        finally:
            if self._tokenizing is not None:
                self._tokenizing.shutdown(wait=True, cancel_futures=True)

    def _shard(self, index: int, shard: Shard) -> Iterator[Item]:
        spec = self.spec
        try:
            parquet = open_shard(shard.input_path, spec)
            identity = input_identity(shard.input_path)
            yield ShardStart(index, parquet.schema_arrow, parquet.metadata.num_rows, identity)
            columns = list(dict.fromkeys([spec.text_column, spec.id_column, *spec.keep_columns]))
            passthrough = spec.carried  # what the sink writes rows from
            rows = windows = 0
            texts = Feed()  # each block's texts, for the store's lookup
            reuse = self._reuse(texts)
            self._read.append(index)
            window_rows = self.batching.window_rows
            # A block holds whole windows: the lookup hashes and finds a block's texts at once.
            block_rows = window_rows
            if reuse is not None:
                block_rows *= max(1, BLOCK_ROWS // window_rows)
            # Each window's tokens are computed (in the tokenizer thread, the GIL released)
            # while the ids of the one before are taken out and it is batched, padded and
            # sent: the cores never wait for either.
            begun: _Begun | None = None
            release = spec.text_column not in passthrough  # a kept text is written back whole
            blocks = read_blocks(
                parquet, shard.input_path, columns, spec.text_column, block_rows, spec, release
            )
            if spec.chunk_tokens is not None:  # passages are the rows from here on
                blocks = passages_of(blocks, self.tokenizer, spec)
            for block in blocks:
                if reuse is not None:
                    column = block.batch.column(spec.text_column)
                    texts.put(without(column, block.over).to_pylist())  # sizes known already
                for window in block.windows(window_rows):
                    if begun is not None and reuse is not None and reuse.starts_block(rows):
                        yield from self._emit(begun, shard, passthrough, reuse)
                        begun = None  # its block's counts are in before the next block comes
                    started = self._begin(index, windows, window, rows, reuse)
                    if begun is not None:
                        yield from self._emit(begun, shard, passthrough, reuse)
                    begun = started
                    rows += window.batch.num_rows
                    windows += 1
            if begun is not None:
                yield from self._emit(begun, shard, passthrough, reuse)
            if reuse is not None:
                self._spilled[index] = reuse.spilled()
            yield ShardEnd(index, rows, windows)
        except EmbedEtlError as exc:
            yield ShardFailed(index, str(exc))
        except Exception as exc:  # noqa: BLE001 - one bad shard must not stop the others
            yield ShardFailed(index, f"{shard.input_path}: {reason(exc)}", traceback.format_exc())

    def _reuse(self, texts: Feed) -> ShardReuse | None:
        """With stores: the shard's ShardReuse, fed each block's ``texts`` as the block is read
        (before its windows); once the shards read before are finished, so that their vectors
        are in the store."""
        if self.lookup is None:
            return None
        if self.ledger is not None:
            if not self.ledger.wait(self._read):
                return None  # the worker is stopping
            for done in self._read:  # finished: never asked about again
                spilled = self._spilled.pop(done, None)
                if spilled is not None and len(spilled) and self.ledger.stored(done):
                    name = self.store.segment_name(self.shards[done])
                    self.lookup.add_own(self.store.store, name, spilled)
            self._read.clear()
            self.lookup.cost_per_text = self.ledger.cost_per_text
        return ShardReuse(self.lookup, self.spec.prompt, texts)

    def _begin(
        self, index: int, number: int, window: Rows, first_row: int, reuse: ShardReuse | None
    ) -> _Begun:
        """A window's texts, which of them the model sees, and their tokens under way. Texts
        over --max-text-bytes were made null as they were read: no vector, counted apart."""
        spec, record_batch = self.spec, window.batch
        column = record_batch.column(spec.text_column)
        plan = reuse.window(first_row, len(column)) if reuse is not None else None
        # With reuse, only each new text's first row goes to the model.
        over = window.over
        present = present_rows(column, over) if plan is None else np.flatnonzero(plan.kind == EMBED)
        if self._tokenizing is None:
            self._tokenizing = helper_pool("embed-etl-tokenizer")
        if window.documents is not None:  # --chunking late: the passages' whole texts
            texts = window.documents.texts_of(present)
            tokens = self._tokenizing.submit(encode_documents, self.tokenizer, texts, spec.prompt)
            return _Begun(index, number, window, first_row, plan, present, tokens)
        texts = model_texts(column, present, spec.prompt)  # what the model sees
        tokens = self._tokenizing.submit(
            encode_window,
            self.tokenizer,
            texts,
            spec.max_length,
            spec.long_text == "chunk",
            spec.special_tokens,
        )
        return _Begun(index, number, window, first_row, plan, present, tokens)

    def _settle(
        self, begun: _Begun, shard: Shard, passthrough: list[str], reuse: ShardReuse | None
    ) -> Settled:
        """A window whose tokens are in: its sequences, its batches and its WindowInfo."""
        spec, record_batch, present = self.spec, begun.window.batch, begun.present
        first_row, plan = begun.first_row, begun.plan
        spans, windowed = None, 0
        if begun.window.documents is not None:  # --chunking late
            sequences, spans, n_tokens, windowed = late_window(
                begun.tokens.result(), begun.window, present, self.layout, spec
            )
            seq_rows, parts, multi, drop_head = present[:0], None, None, None
        else:
            keep_whole = spec.long_text == "chunk"
            tokenized = finish_window(
                begun.tokens.result(), spec.max_length, self.layout, keep_whole, self.tokenizer
            )
            n_tokens = tokenized.n_tokens  # (present,)
            long = np.flatnonzero(n_tokens > spec.max_length)  # positions in present
            if len(long) and spec.long_text == "error":
                j = int(long[0])
                row_id = record_batch.column(spec.id_column)[int(present[j])].as_py()
                raise EmbedEtlError(
                    f"{shard.input_path}: row {first_row + int(present[j])} (id {row_id!r}) has "
                    f"{n_tokens[j]} tokens, more than --max-length {spec.max_length} "
                    "(--long-text error; use truncate or chunk to embed it)"
                )
            sequences = tokenized.sequences  # one per present row, or several for a chunked row
            seq_rows = present  # row in the window of each sequence
            multi = parts = drop_head = None
            if tokenized.whole:
                sequences, seq_rows, parts, multi, drop_head = chunk_rows(
                    sequences,
                    present,
                    tokenized.whole,
                    record_batch.num_rows,
                    spec,
                    self.layout,
                    self._prompt_ids,
                )
        lengths = np.full(record_batch.num_rows, -1, dtype=np.int64)  # -1: null text
        lengths[present] = n_tokens
        if plan is not None:
            reuse.record_tokens(first_row, plan, lengths)  # the copied rows' counts too
        refused = np.flatnonzero(begun.window.over)
        lengths[refused] = -2  # no tokens: a null vector, counted apart from null texts
        null_rows = int((lengths == -1).sum())
        over = int((lengths > spec.max_length).sum())  # of every row, embedded or copied
        reused = {name: plan.count(kind) for kind, name in SOURCES.items()} if plan else {}
        batches = plan_batches(sequences.lengths, self.batching.max_tokens, self.batching.max_rows)
        info = WindowInfo(
            index=begun.number,
            num_rows=record_batch.num_rows,
            num_batches=max(1, len(batches)),
            passthrough=record_batch.select(passthrough),
            null_rows=null_rows,
            refused_rows=len(refused),
            refused=refusals(begun.window, first_row, refused[:REFUSED_SHOWN], spec),
            real_tokens=sequences.tokens,
            truncated_rows=0 if spec.long_text == "chunk" else over,
            chunked_rows=over if spec.long_text == "chunk" else windowed,
            n_tokens=lengths,
            multi=multi,
            drop_head=drop_head,
            drop_tail=len(self.layout.suffix),
            texts_embedded=len(present),
            rows_reused=reused or None,
            texts_not_fetched=plan.not_fetched if plan is not None else 0,
            reuse=plan,
        )
        return Settled(begun.index, begun.number, info, sequences, seq_rows, parts, batches, spans)

    def _emit(
        self, begun: _Begun, shard: Shard, passthrough: list[str], reuse: ShardReuse | None
    ) -> Iterator[Batch]:
        """A window whose tokens are in, as its batches."""
        settled = self._settle(begun, shard, passthrough, reuse)
        return window_batches(self.layout, self.token_mask, settled)
