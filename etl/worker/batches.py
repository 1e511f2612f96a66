"""Each batch from the reader, through the model in flight, into its shard's writer and record.

The next batches are submitted to the device (etl.stages.compute.inflight) before the oldest is
collected, so that the host places one batch's vectors while the device computes the next.
A batch's vectors reach its shard's writer in the order it was submitted; every batch of a
shard is collected before its commit; a batch that fails fails its shard only, and that
shard's batches still in flight are dropped, each once its copies are done (their buffers go
to later batches). The progress bar counts a batch's rows when it is collected.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from etl.contract import REFUSED_SHOWN, Batch, ShardRecord
from etl.errors import reason
from etl.spec import OutputSpec
from etl.stages.write.sink import ShardWriter
from etl.worker.progress import Progress, rows_done

if TYPE_CHECKING:  # torch stays out of the planning commands' imports
    import numpy as np

    from etl.stages.compute.inflight import InFlight, Submitted

log = logging.getLogger(__name__)


@dataclass
class Writing:
    """A shard being written."""

    index: int
    result: ShardRecord
    writer: ShardWriter
    started: float = field(default_factory=time.perf_counter)


class Batches:
    """This run's batches in flight, oldest first, and what each adds to its shard."""

    def __init__(
        self,
        flight: InFlight,
        spec: OutputSpec,
        writing: Mapping[int, Writing],
        fail: Callable[[Writing, str], None],
        bar: Progress | None = None,
    ) -> None:
        self.flight = flight
        self.spec = spec
        self.writing = writing  # the runner's shards being written: a failed one leaves it
        self.fail = fail  # the runner's: abort the shard's writer and record its failure
        self.bar = bar
        self.flying: deque[Submitted] = deque()
        self.multi: dict[int, np.ndarray | None] = {}  # shard -> its window's chunked rows

    def submit(self, batch: Batch) -> None:
        """Start the batch on the device; collect the oldest beyond the flight's depth."""
        shard = self.writing.get(batch.shard_index)
        if shard is None:
            return  # its shard already failed: drop the rest of it
        try:
            self.flying.append(self.flight.submit(batch))
        except Exception as exc:  # fail this shard, keep the job going
            log.debug("batch failed", exc_info=True)
            self.fail(shard, reason(exc))
            return
        while len(self.flying) > self.flight.depth:
            self._collect()

    def collect_shard(self, index: int) -> None:
        """Before a shard's commit: its batches in flight collected (and those older)."""
        while any(s.batch.shard_index == index for s in self.flying):
            self._collect()

    def drop(self) -> None:
        """However the run ends: the batches still in flight dropped, each once its copies are
        done, so that no copy lands in a buffer a later batch is given."""
        while self.flying:
            with contextlib.suppress(Exception):  # a failed device fails every wait alike
                self.flight.release(self.flying.popleft())

    def _collect(self) -> None:
        """The oldest batch in flight into its shard's writer; dropped if the shard failed."""
        submitted = self.flying.popleft()
        batch = submitted.batch
        shard = self.writing.get(batch.shard_index)
        try:
            if shard is None:
                return  # its shard failed while the batch was in flight
            vectors = self.flight.collect(submitted)
            rows, tokens = self._place(shard, batch, vectors, submitted.device_seconds)
        except Exception as exc:  # fail this shard, keep the job going
            log.debug("batch failed", exc_info=True)
            if shard is not None:
                self.fail(shard, reason(exc))
            return
        finally:
            self.flight.release(submitted)  # the writer has copied what it keeps
        if self.bar is not None:
            self.bar.update(rows, tokens)

    def _place(
        self, shard: Writing, batch: Batch, vectors: dict[str, np.ndarray], device_s: float
    ) -> tuple[int, int]:
        """A collected batch into its shard's writer and record: (rows it completes, tokens)."""
        result = shard.result
        if batch.window is not None:
            result.null_rows += batch.window.null_rows
            result.refused_rows += batch.window.refused_rows
            room = REFUSED_SHOWN - len(result.refused)
            result.refused += batch.window.refused[: max(0, room)]
            result.truncated_rows += batch.window.truncated_rows
            result.chunked_rows += batch.window.chunked_rows
            result.tokens += batch.window.real_tokens
            result.texts_embedded += batch.window.texts_embedded
            result.texts_not_fetched += batch.window.texts_not_fetched
            for source, rows in (batch.window.rows_reused or {}).items():
                result.rows_reused[source] = result.rows_reused.get(source, 0) + rows
            self.multi[batch.shard_index] = batch.window.multi
        weights, tokens = None, 0
        if batch.size:
            weights = batch.attention_mask.sum(dim=1).numpy()  # (B,) tokens per sequence
            result.padded_tokens += batch.input_ids.numel()
            result.device_seconds += device_s
            tokens = int(weights.sum())
        rows = rows_done(batch, self.multi.get(batch.shard_index))
        token_input = None
        if self.spec.has_tokens and batch.size:
            parts = batch.parts.numpy() if batch.parts is not None else None
            kept = batch.keep if batch.keep is not None else batch.attention_mask
            token_input = (batch.input_ids.numpy(), kept.numpy(), parts)
        shard.writer.add(
            batch.window_index, batch.window, batch.rows.numpy(), vectors, weights, token_input
        )
        return rows, tokens
