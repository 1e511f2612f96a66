"""Several workers, one job: the driver hands each shard to one worker as the worker asks.

Each worker gets the whole list of pending shards once, and its lease (etl.state.lease) asks
the driver for the number of the next one to try whenever its readers want another: its
pipeline stays fed across shard boundaries, and each shard gets one claim attempt from one
worker, so the requests per shard are those of one worker however many there are. Claims are
still taken, since other jobs may share the output. The driver keeps the order of one worker
(InOrder): every shard once, then once more each one held by another process; the shards a
worker that ended or died was handed and did not finish go first to the others.

Worker -> driver, on one queue for all workers: Ask, Declined, Result. Driver -> worker, on
that worker's own channel: a shard number, or None when none is left. The same on
multiprocessing queues (--workers) and on Ray (a Ray queue, and an actor method).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from etl.contract import Shard, ShardRecord, ShardStatus
from etl.state.lease import InOrder


@dataclass(frozen=True)
class Ask:
    """The worker's lease wants the next shard."""

    worker: int


@dataclass(frozen=True)
class Declined:
    """The lease did not take this shard: another process held it, or had finished it."""

    worker: int
    index: int
    held: bool


@dataclass(frozen=True)
class Result:
    """A shard the worker finished: done or failed, recorded in the manifest."""

    worker: int
    record: ShardRecord


Reply = Callable[[int, "int | None"], None]  # (worker, shard number or None): on its channel


class Dispatch:
    """The driver's side: which shard each worker tries next, and which ones each holds.
    Workers are numbered once each: a replacement gets a new number, so that a dead one's
    last question is never answered to its replacement."""

    def __init__(self, shards: Sequence[Shard], reply: Reply) -> None:
        self.order = InOrder(len(shards))
        self.numbers = {shard.rel_name: i for i, shard in enumerate(shards)}
        self.reply = reply
        self.out: dict[int, set[int]] = {}  # worker -> shards handed out, not finished
        self.finished: set[int] = set()  # done or failed
        self.gone: set[int] = set()

    def handle(self, event: Any) -> ShardRecord | None:
        """Answer an Ask, note a Declined; a Result's record, to show and keep."""
        if isinstance(event, Ask):
            if event.worker not in self.gone:
                self.reply(event.worker, self._next(event.worker))
        elif isinstance(event, Declined):
            self.out.get(event.worker, set()).discard(event.index)
            self.order.declined(event.index, event.held)
        elif isinstance(event, Result):
            index = self.numbers[event.record.shard.rel_name]
            self.out.get(event.worker, set()).discard(index)
            if event.record.status in (ShardStatus.DONE, ShardStatus.FAILED):
                self.finished.add(index)
                return event.record
        return None

    def lost(self, worker: int) -> None:
        """The worker ended or died: what it was handed and did not finish goes to the others
        first (a dead worker's claims are stale at once on this host)."""
        self.gone.add(worker)
        self.order.put_back(sorted(self.out.pop(worker, set()) - self.finished))

    def left(self) -> bool:
        """Shards still to hand out, or handed out and not finished."""
        return self.order.left() or any(self.out.values())

    def _next(self, worker: int) -> int | None:
        while (index := self.order.next()) is not None:
            if index not in self.finished:  # a dead worker's shard may have been finished
                self.out.setdefault(worker, set()).add(index)
                return index
        return None


class FromDriver:
    """The worker's side (its lease's Handout, and where its results go): questions on the
    driver's queue, answers on this worker's own channel, which anything with ``put`` and
    ``get`` serves."""

    def __init__(self, worker: int, events: Any, answers: Any) -> None:
        self.worker = worker
        self.events = events
        self.answers = answers

    def next(self) -> int | None:
        self.events.put(Ask(self.worker))
        return self.answers.get()

    def declined(self, index: int, held: bool) -> None:
        self.events.put(Declined(self.worker, index, held))

    def report(self, record: ShardRecord) -> None:
        """The on_result of ShardWorker.run: each finished shard to the driver, as it ends."""
        self.events.put(Result(self.worker, record))

    def close(self) -> None:
        self.answers.put(None)  # wake a question still waiting for the driver
