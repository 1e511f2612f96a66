"""ShardWorker: a tokenizer and a model loaded once, and the loop that turns shards into files.

One process runs one worker: the plain `run`, each process of `--workers N`, each Ray actor.
Workers coordinate only through the output directory (claims and manifest), so any number of
them, started in any way, can share a job.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from etl import __version__
from etl.claims import HEARTBEAT_SECONDS, ClaimBook
from etl.config import JobConfig
from etl.contract import (
    Batch,
    OutputSpec,
    Shard,
    ShardEnd,
    ShardFailed,
    ShardResult,
    ShardStart,
)
from etl.errors import ConfigError
from etl.manifest import ManifestStore
from etl.sink import ShardWriter

log = logging.getLogger(__name__)

ResultCallback = Callable[[ShardResult], None]


class ShardWorker:
    """Loads the tokenizer and the model on ``device``, checks them with the largest batch."""

    def __init__(self, cfg: JobConfig, spec: OutputSpec, device: str | None = None) -> None:
        from etl.encoder import Encoder, load_tokenizer, resolve_device

        self.cfg = cfg
        self.spec = spec
        self.device = resolve_device(device or cfg.device)
        self.tokenizer = load_tokenizer(spec.model)
        self.encoder = Encoder(spec, cfg, self.device)
        self.batching = resolve_batching(cfg, spec, self.device.type)
        self.encoder.warm_up(*largest_batch(self.batching, spec.max_length))

    def process(
        self,
        shards: Sequence[Shard],
        total_rows: int = 0,
        progress: bool | None = False,
        on_result: ResultCallback | None = None,
        spec: OutputSpec | None = None,
        output_dir: str | None = None,
    ) -> list[ShardResult]:
        """Claim and embed every shard nobody else holds; one result per shard claimed.

        ``spec`` and ``output_dir`` replace the job's (same model and columns), for the int8
        calibration sample, which runs through this same path into a scratch directory.
        """
        from etl.loader import ShardStream, make_loader

        spec = spec or self.spec
        store = ManifestStore(output_dir or self.cfg.output_dir)
        claims = ClaimBook(store.claims_dir, store, spec.fingerprint)
        stream = ShardStream(shards, spec, self.tokenizer, self.batching, claims)
        workers = self.cfg.num_workers
        if workers is None:
            workers = default_workers(self.device.type)
        loader = make_loader(stream, workers, pin_memory=self.device.type == "cuda")
        runner = _Runner(list(shards), spec, self.encoder, store, claims, on_result)
        return runner.consume(loader, total_rows, progress)


def _rows_done(batch: Batch, multi) -> int:
    """Rows a batch completes, for the progress bar: one per sequence, except that a row
    split into windows counts once, with its window's first batch (null rows too)."""
    rows = batch.size
    if rows and multi is not None:
        rows = int((~multi[batch.rows.numpy()]).sum())
    if batch.window is not None:
        rows += batch.window.null_rows + batch.window.chunked_rows
    return rows


def resolve_batching(cfg: JobConfig, spec: OutputSpec, device_type: str):
    """Token budget: small on CPU (big padded batches lose there), large on GPUs."""
    from etl.loader import Batching

    budget = cfg.batch_tokens or (2048 if device_type == "cpu" else 32768)
    if budget < spec.max_length:
        raise ConfigError(
            f"--batch-tokens {budget}: must be at least --max-length ({spec.max_length}) so "
            "that one full-length row fits"
        )
    return Batching(max_tokens=budget, max_rows=cfg.batch_size, window_rows=cfg.sort_window)


def largest_batch(batching, max_length: int) -> tuple[int, int]:
    """Rows and length of the most expensive batch (attention grows with length squared)."""
    return max(1, min(batching.max_rows, batching.max_tokens // max_length)), max_length


def default_workers(device_type: str) -> int:
    """Tokenizing processes: one is plenty beside a CPU model, a GPU wants more."""
    from etl.encoder import default_threads

    return 1 if device_type == "cpu" else min(4, max(1, default_threads() - 1))


@dataclass
class _Active:
    """A shard being written."""

    index: int
    result: ShardResult
    writer: ShardWriter
    identity: dict[str, int]
    started: float = field(default_factory=time.perf_counter)
    started_at: float = field(default_factory=time.time)


class _Runner:
    """The main loop: batches through the model into the shard writers; records and releases."""

    def __init__(
        self,
        shards: list[Shard],
        spec: OutputSpec,
        encoder,
        store: ManifestStore,
        claims: ClaimBook,
        on_result: ResultCallback | None = None,
    ) -> None:
        self.shards = shards
        self.spec = spec
        self.encoder = encoder
        self.store = store
        self.claims = claims
        self.on_result = on_result
        self.active: dict[int, _Active] = {}
        self.results: dict[int, ShardResult] = {}
        self.seen: set[int] = set()  # shards this process claimed
        self.committing: list[tuple[_Active, int, Future]] = []
        self.io: Executor | None = None
        self.tokens = 0
        self.multi: dict[int, Any] = {}  # shard -> its current window's chunked rows

    def consume(self, loader, total_rows: int, progress: bool | None) -> list[ShardResult]:
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
        stop = threading.Event()
        # Joined on the way out: a daemon thread still waking at interpreter exit can abort
        # the process ("terminate called without an active exception").
        heartbeat = threading.Thread(target=self._heartbeat, args=(stop,), name="claims-heartbeat")
        started = time.perf_counter()
        try:
            items = iter(loader)  # workers start (fork) here, before any thread of ours
            heartbeat.start()
            # One thread turns finished windows into Parquet while the model runs.
            self.io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embed-etl-io")
            for item in items:
                if isinstance(item, Batch):
                    rows = self._batch(item)
                    if rows is not None:
                        bar.update(rows)
                        rate = self.tokens / max(time.perf_counter() - started, 1e-9)
                        bar.set_postfix_str(f"{rate:,.0f} tok/s", refresh=False)
                elif isinstance(item, ShardStart):
                    self._start(item)
                elif isinstance(item, ShardEnd):
                    self._end(item)
                elif isinstance(item, ShardFailed):
                    self._failed(item)
                self._settle(wait=False)
        finally:
            stop.set()
            if heartbeat.is_alive():
                heartbeat.join()
            for active in self.active.values():
                active.writer.abort()
            self._settle(wait=True)  # shards whose rename is under way still get recorded
            if self.io is not None:
                self.io.shutdown(wait=True)
            self.claims.release_all()
            bar.close()
        # Shards this worker never claimed: another process or worker had them.
        for index, shard in enumerate(self.shards):
            if index not in self.seen:
                self.results[index] = ShardResult(shard, "claimed_elsewhere")
        return [self.results[i] for i in sorted(self.results)]

    def _finished(self, index: int, result: ShardResult) -> None:
        self.results[index] = result
        if self.on_result is not None:
            self.on_result(result)

    def _heartbeat(self, stop: threading.Event) -> None:
        while not stop.wait(HEARTBEAT_SECONDS):
            self.claims.heartbeat()

    def _start(self, item: ShardStart) -> None:
        self.seen.add(item.shard_index)
        shard = self.shards[item.shard_index]
        result = ShardResult(shard, "running")
        try:
            writer = ShardWriter(shard, self.spec, item.schema, io=self.io)
        except Exception as exc:  # noqa: BLE001 - e.g. output directory not writable
            self._record_failure(item.shard_index, result, f"{type(exc).__name__}: {exc}", {})
            return
        self.active[item.shard_index] = _Active(
            item.shard_index, result, writer, item.input_identity
        )

    def _batch(self, batch: Batch) -> int | None:
        """Embed one batch into its shard's writer; the rows it completes, None if it failed."""
        active = self.active.get(batch.shard_index)
        if active is None:
            return None  # its shard already failed: drop the rest of it
        result = active.result
        try:
            if batch.window is not None:
                result.null_rows += batch.window.null_rows
                result.truncated_rows += batch.window.truncated_rows
                result.chunked_rows += batch.window.chunked_rows
                result.tokens += batch.window.real_tokens
            vectors, weights = {}, None
            if batch.size:
                vectors = {name: v.numpy() for name, v in self.encoder.encode(batch).items()}
                weights = batch.attention_mask.sum(dim=1).numpy()  # (B,) tokens per sequence
                result.padded_tokens += batch.input_ids.numel()
                self.tokens += int(weights.sum())
            if batch.window is not None:
                self.multi[batch.shard_index] = batch.window.multi
            rows = _rows_done(batch, self.multi.get(batch.shard_index))
            active.writer.add(
                batch.window_index, batch.window, batch.rows.numpy(), vectors, weights
            )
        except Exception as exc:  # fail this shard, keep the job going
            log.debug("batch failed", exc_info=True)
            self._abort(active, f"{type(exc).__name__}: {exc}")
            return None
        return rows

    def _end(self, item: ShardEnd) -> None:
        active = self.active.pop(item.shard_index, None)
        if active is not None:
            self.committing.append((active, item.num_rows, active.writer.commit(item.num_rows)))

    def _settle(self, wait: bool) -> None:
        """Record the shards whose commit finished: done only after the rename, else failed."""
        pending = []
        for active, rows, future in self.committing:
            if not (wait or future.done()):
                pending.append((active, rows, future))
                continue
            try:
                future.result()
            except Exception as exc:  # noqa: BLE001 - the shard fails; the others go on
                self._abort(active, f"{type(exc).__name__}: {exc}")
                continue
            result = active.result
            result.status, result.rows = "done", rows
            result.seconds = time.perf_counter() - active.started
            self.store.write(result.shard, self._record(result, active, rows_out=rows))
            self.claims.release(result.shard)
            self._finished(active.index, result)
            log.info("done %s: %d rows in %.1f s", result.shard.rel_name, rows, result.seconds)
        self.committing = pending

    def _failed(self, item: ShardFailed) -> None:
        if item.detail:
            log.debug("%s", item.detail)
        self.seen.add(item.shard_index)
        active = self.active.get(item.shard_index)
        if active is not None:
            self._abort(active, item.message)
        else:
            result = ShardResult(self.shards[item.shard_index], "running")
            self._record_failure(item.shard_index, result, item.message, {})

    def _abort(self, active: _Active, message: str) -> None:
        active.writer.abort()
        self.active.pop(active.index, None)
        active.result.seconds = time.perf_counter() - active.started
        self._record_failure(active.index, active.result, message, active.identity, active)

    def _record_failure(self, index, result, message, identity, active=None) -> None:
        result.status, result.error = "failed", message
        record = self._record(result, active)
        record.update(identity)
        self.store.write(result.shard, record)
        self.claims.release(result.shard)
        self._finished(index, result)
        log.error("failed %s: %s", result.shard.rel_name, message)

    def _record(self, result: ShardResult, active: _Active | None, rows_out: int = 0) -> dict:
        record = {
            "status": result.status,
            "fingerprint": self.spec.fingerprint,
            "rows_in": result.rows,
            "rows_out": rows_out,
            "null_rows": result.null_rows,
            "truncated_rows": result.truncated_rows,
            "chunked_rows": result.chunked_rows,
            "tokens": result.tokens,
            "padded_tokens": result.padded_tokens,
            "seconds": round(result.seconds, 3),
            "error": result.error,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "version": __version__,
        }
        if active is not None:
            record["started_at"] = active.started_at
            record.update(active.identity)
        return record
