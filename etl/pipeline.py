"""run_job: the one flow from input shards to embedding files."""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass, field

import pyarrow.parquet as pq

from etl.config import JobConfig, build_output_spec
from etl.contract import (
    Batch,
    JobSummary,
    OutputSpec,
    Shard,
    ShardEnd,
    ShardFailed,
    ShardResult,
    ShardStart,
)
from etl.errors import ConfigError, InputError
from etl.loader import Batching, ShardStream, make_loader
from etl.modelinfo import resolve_model
from etl.shards import discover
from etl.sink import ShardWriter
from etl.source import check_columns

log = logging.getLogger(__name__)


def run_job(cfg: JobConfig) -> JobSummary:
    """Embed every input shard of ``cfg`` into ``cfg.output_dir``; one result per shard."""
    from etl.encoder import Encoder, load_tokenizer, resolve_device, resolve_dtype

    started = time.perf_counter()
    shards = discover(cfg.inputs, cfg.output_dir)
    model = resolve_model(cfg.model)
    device = resolve_device(cfg.device)
    spec = build_output_spec(cfg, model, resolve_dtype(cfg.dtype, device))
    total_rows = preflight(shards, spec)

    tokenizer = load_tokenizer(model)
    encoder = Encoder(spec, cfg, device)
    batching = resolve_batching(cfg, spec, device.type)
    encoder.warm_up(*largest_batch(batching, spec.max_length))

    stream = ShardStream(shards, spec, tokenizer, batching)
    workers = cfg.num_workers if cfg.num_workers is not None else default_workers(device.type)
    loader = make_loader(stream, workers, pin_memory=device.type == "cuda")
    results = _consume(loader, shards, spec, encoder, total_rows, cfg.progress)
    return JobSummary(spec.fingerprint, results, time.perf_counter() - started)


def preflight(shards: list[Shard], spec: OutputSpec) -> int:
    """Read every footer once; refuse a column that no readable shard has. Returns total rows.

    A column missing from only some shards fails just those shards later, with the same message.
    """
    total = 0
    usable = False
    problem: InputError | None = None
    for shard in shards:
        try:
            metadata = pq.read_metadata(shard.input_path)
        except Exception:  # noqa: BLE001 - an unreadable shard fails on its own, later
            continue
        total += metadata.num_rows
        if usable:
            continue
        try:
            check_columns(metadata.schema.to_arrow_schema(), shard.input_path, spec)
            usable = True
        except InputError as exc:
            problem = problem or exc
    if problem is not None and not usable:
        raise ConfigError(str(problem))
    return total


def resolve_batching(cfg: JobConfig, spec: OutputSpec, device_type: str) -> Batching:
    """Token budget: small on CPU (big padded batches lose there), large on GPUs."""
    budget = cfg.batch_tokens or (4096 if device_type == "cpu" else 32768)
    if budget < spec.max_length:
        raise ConfigError(
            f"--batch-tokens {budget}: must be at least --max-length ({spec.max_length}) so "
            "that one full-length row fits"
        )
    return Batching(max_tokens=budget, max_rows=cfg.batch_size, window_rows=cfg.sort_window)


def largest_batch(batching: Batching, max_length: int) -> tuple[int, int]:
    """Rows and length of the most expensive batch (attention grows with length squared)."""
    return max(1, min(batching.max_rows, batching.max_tokens // max_length)), max_length


def default_workers(device_type: str) -> int:
    from etl.encoder import default_threads

    return 1 if device_type == "cpu" else min(4, max(1, default_threads() - 1))


@dataclass
class _Active:
    """A shard being written."""

    index: int
    result: ShardResult
    writer: ShardWriter
    started: float = field(default_factory=time.perf_counter)


def _consume(loader, shards, spec, encoder, total_rows, progress) -> list[ShardResult]:
    from tqdm import tqdm

    tqdm.monitor_interval = 0  # no monitor thread: DataLoader workers fork after this
    bar = tqdm(
        total=total_rows,
        unit="rows",
        file=sys.stderr,
        disable=not progress if progress is not None else None,
        dynamic_ncols=True,
        smoothing=0.05,
    )
    active: dict[int, _Active] = {}
    results: dict[int, ShardResult] = {}
    tokens = 0
    started = time.perf_counter()
    try:
        for item in loader:
            if isinstance(item, Batch):
                shard = active.get(item.shard_index)
                if shard is None:
                    continue  # its shard already failed; drop the rest of it
                try:
                    _add_batch(shard, item, encoder)
                except Exception as exc:
                    log.debug("batch failed", exc_info=True)
                    _fail(active.pop(item.shard_index), f"{type(exc).__name__}: {exc}", results)
                    continue
                bar.update(item.size + (item.window.null_rows if item.window else 0))
                tokens += int(item.attention_mask.sum()) if item.size else 0
                bar.set_postfix_str(f"{tokens / (time.perf_counter() - started):,.0f} tok/s")
            elif isinstance(item, ShardStart):
                result = ShardResult(shards[item.shard_index], "running")
                try:
                    writer = ShardWriter(result.shard, spec, item.schema)
                except Exception as exc:  # noqa: BLE001 - e.g. output directory not writable
                    result.status, result.error = "failed", f"{type(exc).__name__}: {exc}"
                    results[item.shard_index] = result
                    continue
                active[item.shard_index] = _Active(item.shard_index, result, writer)
            elif isinstance(item, ShardEnd):
                shard = active.pop(item.shard_index, None)
                if shard is not None:
                    _finish(shard, item, results)
            elif isinstance(item, ShardFailed):
                log.debug("%s", item.detail)
                shard = active.pop(item.shard_index, None)
                if shard is None:
                    result = ShardResult(shards[item.shard_index], "failed", error=item.message)
                    results.setdefault(item.shard_index, result)
                else:
                    _fail(shard, item.message, results)
    finally:
        for shard in active.values():
            shard.writer.abort()
        bar.close()
    return [results[i] for i in sorted(results)]


def _add_batch(shard: _Active, batch: Batch, encoder) -> None:
    result = shard.result
    if batch.window is not None:
        result.null_rows += batch.window.null_rows
        result.truncated_rows += batch.window.truncated_rows
        result.tokens += batch.window.real_tokens
    vectors = {}
    if batch.size:
        vectors = {name: v.numpy() for name, v in encoder.encode(batch).items()}
        result.padded_tokens += batch.input_ids.numel()
    shard.writer.add(batch.window_index, batch.window, batch.rows.numpy(), vectors)


def _finish(shard: _Active, end: ShardEnd, results: dict[int, ShardResult]) -> None:
    result = shard.result
    try:
        shard.writer.commit(end.num_rows)
    except Exception as exc:  # noqa: BLE001 - the shard fails; the others go on
        shard.writer.abort()
        result.status, result.error = "failed", f"{type(exc).__name__}: {exc}"
        log.error("failed %s: %s", result.shard.rel_name, result.error)
    else:
        result.status, result.rows = "done", end.num_rows
        log.info("done %s: %d rows", result.shard.rel_name, end.num_rows)
    result.seconds = time.perf_counter() - shard.started
    results[shard.index] = result


def _fail(shard: _Active, message: str, results: dict[int, ShardResult]) -> None:
    shard.writer.abort()
    shard.result.status, shard.result.error = "failed", message
    shard.result.seconds = time.perf_counter() - shard.started
    results[shard.index] = shard.result
    log.error("failed %s: %s", shard.result.shard.rel_name, message)
