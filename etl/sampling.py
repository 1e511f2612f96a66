"""A sample of a job's rows, counted as the job counts them, for estimates of its cost.

draw_sample reads row groups of the pending shards (up to SAMPLE_SHARDS shards spread over the
list, up to GROUPS_A_SHARD random row groups in each, a random subset of each group's rows,
seeded) and puts the rows through the job's own tokenizing path: the prompt, --max-length
truncation or --long-text chunk's windows, special tokens. etl.estimate turns it into the job's
tokens, the share the stores hold and time; run_job into the progress bar's total.
"""

from __future__ import annotations

import logging
import math
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from etl.contract import Shard
from etl.plan import column_bytes
from etl.spec import OutputSpec
from etl.stages.read.chunks import chunk_rows
from etl.stages.read.source import model_texts, plain_text, present_rows, text_sizes
from etl.stages.read.tokens import content_ids, encode_window, finish_window
from etl.storage import files, is_uri

if TYPE_CHECKING:
    from etl.plan import JobPlan

log = logging.getLogger(__name__)

SAMPLE_SHARDS = 64  # the sample reads row groups of at most this many shards
GROUPS_A_SHARD = 4  # ... and at most this many row groups of each
GROUP_READ = 65536  # rows of a group drawn from (its first: a huge group is not read whole)
READ_ROWS = 16  # ... read so many at a time, until they hold the sample's share of bytes
SAMPLE_BYTES = 256 << 20  # text read for a sample, at most (by the footers' sizes)
SEED = 0
BAR_ROWS, BAR_SHARDS = 2048, 16  # the progress bar's sample: well under a second


@dataclass
class Sample:
    """Rows drawn from row groups of the job's pending shards, with the model's tokens.

    Each sampled group's tokens are its rows times its sampled rows' mean. The job's tokens
    are then the sampled groups' tokens over their text bytes (uncompressed, from the footers)
    times the text bytes of every pending shard: a ratio to bytes varies far less from group to
    group than tokens a row do (a corpus stored in document order has groups of short and of
    long rows). Without byte counts, tokens a row times rows."""

    table: pa.Table  # the sampled rows' text column, as read
    group_rows: np.ndarray  # (g,) rows of each sampled row group
    group_bytes: np.ndarray  # (g,) its text column's uncompressed bytes
    group_tokens: np.ndarray  # (g,) its tokens, estimated from its sampled rows
    row_tokens: np.ndarray  # (n,) model tokens of each sampled row; 0 null or refused
    long_rows: int  # sampled rows over --max-length (cut, or embedded in windows)

    def tokens(self, rows: int, text_bytes: int) -> int:
        """The tokens of ``rows`` rows holding ``text_bytes`` bytes of text."""
        if not self.group_rows.sum():
            return 0
        if text_bytes and self.group_bytes.all():
            return round(text_bytes * self.group_tokens.sum() / self.group_bytes.sum())
        return round(rows * self.group_tokens.sum() / self.group_rows.sum())


def bar_tokens(plan: JobPlan) -> int | None:
    """The job's tokens for the progress bar, from a small sample (BAR_ROWS rows of at most
    BAR_SHARDS shards); None where no bar is shown, or the sample cannot be drawn."""
    shown = plan.cfg.progress if plan.cfg.progress is not None else sys.stderr.isatty()
    if not shown or not plan.pending or not plan.total_rows:
        return None
    try:
        tokenizer, layout = tokenizer_of(plan.spec, plan.cfg.trust_remote_code)
        sample = draw_sample(plan.pending, plan.spec, tokenizer, layout, BAR_ROWS, BAR_SHARDS)
    except Exception as exc:  # noqa: BLE001 - the bar then counts rows
        log.debug("no token estimate for the progress bar: %s", exc)
        return None
    return sample.tokens(plan.total_rows, plan.text_bytes) or None


def draw_sample(
    shards: tuple[Shard, ...],
    spec: OutputSpec,
    tokenizer: Any,
    layout: Any,
    rows: int,
    most_shards: int = SAMPLE_SHARDS,
) -> Sample:
    """About ``rows`` rows from up to ``most_shards`` shards spread over ``shards``, up to
    GROUPS_A_SHARD random row groups in each, a random subset of each group's first rows
    (_groups_of), counted as the job would count them."""
    rng = np.random.default_rng(SEED)
    picks = np.unique(np.linspace(0, len(shards) - 1, min(most_shards, len(shards))).round())
    per_group = max(1, math.ceil(rows / (len(picks) * GROUPS_A_SHARD)))
    budget = SAMPLE_BYTES // (len(picks) * GROUPS_A_SHARD)  # text read a row group
    tables, sizes, row_tokens, long_rows = [], [], [], 0
    held = 0  # text bytes kept in the sample: it stops at SAMPLE_BYTES
    for i in picks.astype(int):
        if held >= SAMPLE_BYTES:
            log.info("estimate: the sample holds %d MiB of text; no more shards read", held >> 20)
            break
        path = shards[i].input_path
        try:
            groups = list(_groups_of(path, spec, per_group, budget, rng))
        except Exception as exc:  # noqa: BLE001 - a bad shard fails on its own, in the job
            log.warning("estimate: skipping %s: %s", path, exc)
            continue
        for group_rows, group_bytes, table in groups:
            counted, long = model_tokens(table.column(0), spec, tokenizer, layout)
            long_rows += long
            tables.append(table)
            held += int(text_sizes(table.column(0).combine_chunks()).sum())
            row_tokens.append(counted)
            mean = counted.mean() if len(counted) else 0.0
            sizes.append((group_rows, group_bytes, group_rows * mean))
    sizes_array = np.array(sizes, dtype=np.float64).reshape(-1, 3)
    empty = pa.table({spec.text_column: pa.array([], pa.string())})
    return Sample(
        pa.concat_tables(tables) if tables else empty,
        sizes_array[:, 0],
        sizes_array[:, 1],
        sizes_array[:, 2],
        np.concatenate(row_tokens) if row_tokens else np.zeros(0, np.int64),
        long_rows,
    )


def model_tokens(
    column: Any, spec: OutputSpec, tokenizer: Any, layout: Any
) -> tuple[np.ndarray, int]:
    """(n,) tokens the job sends the model for each row of a text column, by its loader's path
    (prompt, truncation or --long-text chunk's windows, special tokens; 0 for a null text or
    one over --max-text-bytes), and how many rows are over --max-length."""
    column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    counted = np.zeros(len(column), dtype=np.int64)
    present = present_rows(column, text_sizes(column) > spec.max_text_bytes)
    if not len(present):
        return counted, 0
    if spec.chunk_tokens is not None:  # passages: each with the special tokens and prompt
        return _passage_tokens(column, present, spec, tokenizer, layout, counted)
    keep_whole = spec.long_text == "chunk"
    texts = model_texts(column, present, spec.prompt)
    encoded = encode_window(tokenizer, texts, spec.max_length, keep_whole, spec.special_tokens)
    tokenized = finish_window(encoded, spec.max_length, layout, keep_whole, tokenizer)
    sequences, seq_rows = tokenized.sequences, present
    if tokenized.whole:
        prompt_ids = content_ids(tokenizer, spec.prompt)
        sequences, seq_rows, *_ = chunk_rows(
            sequences, present, tokenized.whole, len(column), spec, layout, prompt_ids
        )
    np.add.at(counted, seq_rows, np.asarray(sequences.lengths, dtype=np.int64))
    return counted, int((tokenized.n_tokens > spec.max_length).sum())


def _passage_tokens(
    column: Any, present: np.ndarray, spec: OutputSpec, tokenizer: Any, layout: Any, counted
) -> tuple[np.ndarray, int]:
    """--chunk-tokens: each row's passages' tokens (--chunking late: its pass's, or its
    windows'), and the rows cut into more than one."""
    from etl.stages.read.passage_rows import cut_bounded

    texts = model_texts(column, present, "")
    rows, starts, ends, tokens = cut_bounded(tokenizer, texts, spec)  # the job's own cutting
    passages = int((np.bincount(rows, minlength=len(texts)) > 1).sum())
    if spec.chunking == "late":  # the whole texts, or their windows, once each
        from etl.stages.read.late import encode_documents, late_plan

        encoded = encode_documents(tokenizer, texts, spec.prompt)
        chars = (starts, ends)
        sequences, seq, *_ = late_plan(
            encoded, rows, chars, layout, spec.max_length, spec.chunk_tokens
        )
        runs, first = np.unique(seq, return_index=True)
        np.add.at(counted, present[rows[first]], sequences.lengths[runs])
        return counted, passages
    extra = layout.specials + len(content_ids(tokenizer, spec.prompt))
    np.add.at(counted, present[rows], tokens + extra)
    return counted, passages


def held_share(plan: JobPlan, sample: Sample, tokenizer: Any) -> dict[str, float] | None:
    """The share of the sample's rows (passages, with --chunk-tokens), and of their tokens,
    whose text a store the job consults already holds; None without stores."""
    if plan.reuse is None or not sample.table.num_rows:
        return None
    from etl.reuse.hashing import text_hashes
    from etl.reuse.lookup import Lookup

    column = sample.table.column(0).combine_chunks()
    present = np.flatnonzero(sample.row_tokens > 0)
    texts = model_texts(column, present, "")
    tokens = sample.row_tokens[present]
    if plan.spec.chunk_tokens is not None:  # the store holds passages
        from etl.stages.read.passage_rows import cut_bounded

        rows, starts, ends, tokens = cut_bounded(tokenizer, texts, plan.spec)
        texts = [texts[r][s:e] for r, s, e in zip(rows, starts, ends, strict=True)]
    hashes = text_hashes(texts, plan.spec.prompt)
    distinct, back = np.unique(hashes, return_inverse=True)
    found = Lookup(plan.reuse.stores, plan.reuse.run).find(distinct).where >= 0
    held = found[back.reshape(-1)]
    return {
        "rows": round(float(held.mean()) if len(held) else 0.0, 4),
        "tokens": round(float(tokens[held].sum() / max(1, tokens.sum())), 4),
    }


def _groups_of(
    path: str, spec: OutputSpec, rows: int, budget: int, rng: np.random.Generator
) -> Iterator[tuple[int, int, pa.Table]]:
    """(rows, text bytes, sampled rows) of up to GROUPS_A_SHARD random row groups of a
    shard: up to ``rows`` random rows of each group's first rows, read READ_ROWS at a time
    until they hold ``budget`` bytes of text (or GROUP_READ rows), so that a corpus of huge
    texts gives fewer rows, not a larger sample."""
    parquet = _sample_file(path)
    meta = parquet.metadata
    groups = [g for g in range(meta.num_row_groups) if meta.row_group(g).num_rows]
    chosen = rng.choice(groups, min(GROUPS_A_SHARD, len(groups)), replace=False) if groups else []
    for group in sorted(int(g) for g in chosen):
        batches, held, count = [], 0, 0
        for batch in parquet.iter_batches(
            batch_size=READ_ROWS, row_groups=[group], columns=[spec.text_column]
        ):
            batches.append(batch)
            held += int(text_sizes(batch.column(0)).sum())
            count += batch.num_rows
            if held >= budget or count >= GROUP_READ:
                break
        if not count:
            continue
        keep = np.sort(rng.choice(count, min(rows, count), replace=False))
        text = pa.concat_arrays([plain_text(b.column(0)) for b in batches]).take(pa.array(keep))
        # One type for every shard's sample (string, large_string or a dictionary of them).
        table = pa.table({spec.text_column: text.cast(pa.large_string())})
        yield meta.row_group(group).num_rows, column_bytes(meta, spec.text_column, group), table


def _sample_file(path: str) -> pq.ParquetFile:
    """A shard opened for the sample's few small reads: nothing fetched ahead (a remote row
    group is not pre-buffered whole for a few rows of it)."""
    source = files.open_input(path) if is_uri(path) else path
    return pq.ParquetFile(source, buffer_size=1 << 20, pre_buffer=False)


def tokenizer_of(spec: OutputSpec, trust_remote_code: bool) -> tuple[Any, Any]:
    """The job's tokenizer, as its workers load it, and its layout; ConfigError where a
    sequence has no room for what the job asks, as a worker would refuse it."""
    from etl.stages.read.tokenizer import layout, load_tokenizer
    from etl.worker.shard_worker import check_room

    tokenizer = load_tokenizer(spec.model, spec.backend, trust_remote_code)
    specials = layout(tokenizer)
    check_room(spec, specials, tokenizer)
    return tokenizer, specials
