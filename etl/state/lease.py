"""The shards one worker holds: the only code that takes, refreshes and releases its claims.

The worker's readers ask for shards through a ShardFeed; the lease answers from a thread of
the worker's main process. It asks its Handout which shard to try next: on its own, every
shard in order (InOrder); one of several workers asks the driver, which gives each shard to
one worker (etl.engines.handout), so that a shard costs one claim attempt however many workers
there are. The lease claims that shard unless another process holds it, then asks the one rule
for "done" whether another process finished it since the plan; if not, it clears what a killed
attempt at the shard left behind. A shard it did not take goes back to the handout, which
offers a held one once more after every other (its holder may have died meanwhile). A
heartbeat keeps the claims alive for other hosts. A shard's claim is released once its record
is written; on the way out, every claim the lease still holds.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import threading
from collections import Counter, deque
from collections.abc import Callable, Sequence
from typing import Protocol

from etl.contract import Shard, ShardFeed
from etl.errors import EmbedEtlError
from etl.inputs import input_identity
from etl.state.claims import HEARTBEAT_SECONDS, ClaimBook
from etl.state.manifest import shard_done
from etl.threads import helper_thread

log = logging.getLogger(__name__)


class Handout(Protocol):
    """Which shard a lease tries next, and what becomes of the ones it did not take."""

    def next(self) -> int | None:
        """The number of the next shard to try; None when there is none left."""

    def declined(self, index: int, held: bool) -> None:
        """Not taken: another process ``held`` it (worth one more try), or it is done."""

    def close(self) -> None:
        """The lease is closing: wake a ``next`` still waiting for an answer."""


class InOrder:
    """Every shard once, in order; then once more each one another process held (its holder
    may have died meanwhile). Shards put back (their worker died) come first."""

    def __init__(self, count: int) -> None:
        self.first = deque(range(count))
        self.again: deque[int] = deque()
        self.tries: Counter[int] = Counter()

    def next(self) -> int | None:
        waiting = self.first or self.again
        if not waiting:
            return None
        index = waiting.popleft()
        self.tries[index] += 1
        return index

    def declined(self, index: int, held: bool) -> None:
        if held and self.tries[index] == 1:
            self.again.append(index)

    def put_back(self, indices: Sequence[int]) -> None:
        """Handed to a worker that ended without finishing them: tried first, as if new."""
        for index in reversed(indices):
            self.tries[index] -= 1
            self.first.appendleft(index)

    def left(self) -> bool:
        return bool(self.first or self.again)

    def close(self) -> None:
        pass


class Claim(enum.Enum):
    """What came of trying to take a shard."""

    TAKEN = "taken"
    HELD = "held"  # another process holds it
    DONE = "done"  # another process finished it since the plan


class Lease:
    """Claims the worker's shards one at a time, as its readers ask; None ``claims`` hands out
    every shard unclaimed (a scratch output nobody else writes)."""

    def __init__(
        self,
        shards: Sequence[Shard],
        claims: ClaimBook | None,
        readers: int,
        on_taken: Callable[[Shard], None] | None = None,
        handout: Handout | None = None,
    ) -> None:
        self.shards = list(shards)
        self.claims = claims
        self.readers = max(1, readers)
        self.on_taken = on_taken or (lambda shard: None)  # clear a killed attempt's litter
        self.handout = handout if handout is not None else InOrder(len(self.shards))
        self.feed = ShardFeed(processes=readers > 0)
        self.taken: set[int] = set()  # every shard this lease took
        self.held: dict[str, Shard] = {}  # the claims it holds now
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._broken = False  # a claim attempt failed: no more shards for this worker
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        """Answer the readers and beat the heart, in threads (start them after readers fork)."""
        self._threads = [
            helper_thread(self.feed.serve, "lease-feed", self._next),
            helper_thread(self._heartbeat, "lease-heartbeat"),
        ]

    def close(self) -> None:
        """Take no more shards and wake every reader still waiting for one."""
        self._closing.set()
        self.feed.stop()
        self.handout.close()
        for thread in self._threads:
            thread.join()
        self._threads = []
        self.feed.wake(self.readers)

    def release(self, shard: Shard) -> None:
        """Its record is written: others may see it done, nobody needs to hold it."""
        if self.claims is not None:
            self.claims.release(shard)
            with self._lock:
                self.held.pop(shard.rel_name, None)

    def release_all(self) -> None:
        """Every claim this lease still holds (after close, so that none is taken afterwards):
        no listing of the claims, which on an object store is a request of its own."""
        with self._lock:
            held = list(self.held.values())
        for shard in held:
            self.release(shard)

    def _next(self) -> int | None:
        while not (self._closing.is_set() or self._broken):
            index = self.handout.next()
            if index is None or self._closing.is_set():
                return None  # a shard handed out but not tried: the driver's to hand out again
            try:
                claim = self._take(index)
            except Exception:  # a reader must never wait for an answer forever
                log.exception(
                    "claiming %s failed: no more shards for this worker",
                    self.shards[index].rel_name,
                )
                self._broken = True
                return None
            if claim is Claim.TAKEN:
                return index
            self.handout.declined(index, held=claim is Claim.HELD)
        return None

    def _take(self, index: int) -> Claim:
        shard = self.shards[index]
        if self.claims is not None:
            with self._lock:  # before the request: a claim whose reply was lost is still ours
                self.held[shard.rel_name] = shard
            if not self.claims.take(shard):
                with self._lock:
                    del self.held[shard.rel_name]
                return Claim.HELD
            if self._done_meanwhile(shard):
                self.release(shard)
                return Claim.DONE
        self.on_taken(shard)
        self.taken.add(index)
        return Claim.TAKEN

    def _done_meanwhile(self, shard: Shard) -> bool:
        """Another process may have finished it between the plan and the claim."""
        try:
            now = dataclasses.replace(shard, **input_identity(shard.input_path))
        except OSError:
            return False  # its reader reports the missing input
        manifest, claims = self.claims.manifest, self.claims
        return shard_done(now, claims.fingerprint, manifest.done_index_of(shard)) is not None

    def _heartbeat(self) -> None:
        """Every HEARTBEAT_SECONDS; a beat that fails (the store unreachable a moment) is
        logged, and the next one tries again."""
        while not self._closing.wait(HEARTBEAT_SECONDS):
            if self.claims is not None:
                with self._lock:
                    held = list(self.held.values())
                try:
                    self.claims.heartbeat(held)
                except (EmbedEtlError, OSError) as exc:
                    log.warning("could not refresh this worker's claims: %s", exc)
