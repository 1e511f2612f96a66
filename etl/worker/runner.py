"""The worker's loop: reader items through the model into shard writers; then record and release.

A shard is recorded as done only after its output was published, and the lease releases its
claim only after its record is written. However the loop ends (done, a failure, SIGTERM), the
lease stops handing out shards and the readers are stopped first, then every claim of this
run is released and every temporary file removed. Batches go from the reader to their shard's
writer through etl.worker.batches, several in flight on the device.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from collections.abc import Callable
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from etl.contract import (
    Batch,
    Shard,
    ShardEnd,
    ShardFailed,
    ShardRecord,
    ShardStart,
    ShardStatus,
)
from etl.errors import reason
from etl.reuse.ledger import Ledger
from etl.reuse.publish import Publisher
from etl.spec import OutputSpec
from etl.stages.write.sink import ShardWriter
from etl.state.lease import Lease
from etl.state.manifest import Manifest, stamp
from etl.threads import helper_pool
from etl.worker.batches import Batches, Writing
from etl.worker.progress import Progress

if TYPE_CHECKING:  # torch stays out of the planning commands' imports
    from etl.stages.compute.inflight import InFlight
    from etl.worker.settings import Work

log = logging.getLogger(__name__)

ResultCallback = Callable[[ShardRecord], None]


@dataclass
class _Committing:
    """A shard whose writer is closing and publishing its file on the io thread."""

    active: Writing
    rows: int
    future: Future


class Runner:
    """Consumes one loader: the shards it was given, in the order the readers send them."""

    def __init__(
        self,
        shards: list[Shard],
        spec: OutputSpec,
        flight: InFlight,
        manifest: Manifest,
        lease: Lease,
        on_result: ResultCallback | None = None,
        store: Publisher | None = None,
        ledger: Ledger | None = None,
    ) -> None:
        self.shards = shards
        self.spec = spec
        self.flight = flight  # the model's batches in flight (the encoder's)
        self.manifest = manifest
        self.storage = manifest.storage
        self.lease = lease  # the claims of this worker's shards
        self.on_result = on_result
        self.active: dict[int, Writing] = {}
        self.results: dict[int, ShardRecord] = {}
        self.seen: set[int] = set()  # shards this process claimed
        self.committing: list[_Committing] = []
        self.io: Executor | None = None
        self.store = store  # where the vectors computed go (the job's own store)
        self.ledger = ledger  # told when each shard is finished, for the readers ahead

    def consume(self, loader, work: Work, progress: bool | None) -> list[ShardRecord]:
        bar = Progress(work.total_rows, progress, work.total_tokens)
        batches = Batches(self.flight, self.spec, self.active, self._abort, bar)
        items = None
        try:
            items = iter(loader)  # readers start (fork) here, before any thread of ours
            self.lease.start()
            # One thread turns finished windows into Parquet while the model runs.
            self.io = helper_pool("embed-etl-io")
            for item in items:
                if isinstance(item, Batch):
                    batches.submit(item)
                elif isinstance(item, ShardStart):
                    self._start(item)
                elif isinstance(item, ShardEnd):
                    batches.collect_shard(item.shard_index)
                    self._end(item)
                elif isinstance(item, ShardFailed):
                    self._failed(item)
                self._settle(wait=False)
        finally:
            if self.ledger is not None:
                self.ledger.close()  # a reader waiting on a shard must not wait forever
            self.lease.close()  # no shard is claimed after this
            _stop_readers(items)
            batches.drop()
            for active in self.active.values():
                active.writer.abort()
            self._settle(wait=True)  # shards whose publish is under way still get recorded
            if self.io is not None:
                self.io.shutdown(wait=True)
            if self.store is not None:
                self.store.close()  # the journal hears of every segment published
            self.lease.release_all()
            self.storage.discard_temporaries()
            bar.close()
        # Shards this worker never claimed: another process or worker had them.
        for index, shard in enumerate(self.shards):
            if index not in self.seen:
                self.results[index] = ShardRecord(shard, ShardStatus.ELSEWHERE)
        return [self.results[i] for i in sorted(self.results)]

    def _start(self, item: ShardStart) -> None:
        self.seen.add(item.shard_index)
        result = self._new_record(item.shard_index)
        result.input_size = item.input_identity.get("input_size")
        result.input_mtime_ns = item.input_identity.get("input_mtime_ns")
        result.started_at = time.time()
        try:
            writer = ShardWriter(
                result.shard,
                self.spec,
                item.schema,
                self.storage,
                io=self.io,
                store=self.store,
                finished=self._finisher(item.shard_index),
                input_rows=item.num_rows,
            )
        except Exception as exc:  # noqa: BLE001 - e.g. output location not writable
            self._record_failure(item.shard_index, result, reason(exc))
            return
        self.active[item.shard_index] = Writing(item.shard_index, result, writer)

    def _end(self, item: ShardEnd) -> None:
        active = self.active.pop(item.shard_index, None)
        if active is not None:
            future = active.writer.commit(item.num_rows)
            rows = active.writer.rows_out(item.num_rows)
            self.committing.append(_Committing(active, rows, future))

    def _settle(self, wait: bool) -> None:
        """Record the shards whose commit finished: done only once published, else failed."""
        pending = []
        for entry in self.committing:
            if not (wait or entry.future.done()):
                pending.append(entry)
                continue
            active = entry.active
            try:
                entry.future.result()
            except Exception as exc:  # noqa: BLE001 - the shard fails; the others go on
                self._abort(active, reason(exc))
                continue
            result = active.result
            result.status, result.rows_in = ShardStatus.DONE, entry.rows
            result.rows_out = entry.rows
            result.seconds = time.perf_counter() - active.started
            self._record(result)
            self.lease.release(result.shard)
            self._finished(active.index, result)
            if self.ledger is not None:  # the model's time if the device says, else the wall's
                spent = result.device_seconds or result.seconds
                self.ledger.observe(spent, result.texts_embedded)
            log.info(
                "done %s: %d rows in %.1f s", result.shard.rel_name, entry.rows, result.seconds
            )
        self.committing = pending

    def _failed(self, item: ShardFailed) -> None:
        if item.detail:
            log.debug("%s", item.detail)
        self.seen.add(item.shard_index)
        active = self.active.get(item.shard_index)
        if active is not None:
            self._abort(active, item.message)
        else:
            self._record_failure(item.shard_index, self._new_record(item.shard_index), item.message)

    def _new_record(self, index: int) -> ShardRecord:
        shard = self.shards[index]
        output = self.storage.uri(shard.output_key)
        return ShardRecord(shard, ShardStatus.RUNNING, self.spec.fingerprint, output=output)

    def _abort(self, active: Writing, message: str) -> None:
        active.writer.abort()
        self.active.pop(active.index, None)
        active.result.seconds = time.perf_counter() - active.started
        self._record_failure(active.index, active.result, message, writer=True)

    def _record_failure(
        self, index: int, result: ShardRecord, message: str, writer: bool = False
    ) -> None:
        result.status, result.error = ShardStatus.FAILED, message
        if not writer and self.ledger is not None:  # no writer to say so
            self.ledger.finish(index)
        self._record(result)
        self.lease.release(result.shard)
        self._finished(index, result)
        log.error("failed %s: %s", result.shard.rel_name, message)

    def _record(self, result: ShardRecord) -> None:
        """Into the manifest; the worker keeps the same record as its result."""
        stamp(result)
        self.manifest.write(result)

    def _finisher(self, index: int) -> Callable[[bool], None] | None:
        """What the shard's writer calls once it is done with it (published or given up)."""
        return functools.partial(self.ledger.finish, index) if self.ledger is not None else None

    def _finished(self, index: int, result: ShardRecord) -> None:
        self.results[index] = result
        if self.on_result is not None:
            self.on_result(result)


def _stop_readers(items: Any) -> None:
    """Stop the DataLoader's reader processes now (they would stop when garbage-collected,
    which an exception on its way out delays)."""
    shutdown = getattr(items, "_shutdown_workers", None)
    if shutdown is not None:
        with contextlib.suppress(Exception):
            shutdown()
