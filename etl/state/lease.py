"""The shards one worker holds: the only code that takes, refreshes and releases its claims.

The worker's readers ask for shards through a ShardFeed; the lease answers from a thread of
the worker's main process, claiming the next shard nobody else holds (a second pass takes over
the claims of processes that died meanwhile). Right after a claim it asks the one rule for
"done" whether another process finished the shard since the plan; if not, it clears what a
killed attempt at the shard left behind. A heartbeat keeps the claims alive for other hosts.
A shard's claim is released once its record is written; on the way out, every claim it holds.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable, Iterator, Sequence

from etl.contract import Shard, ShardFeed
from etl.inputs import input_identity
from etl.state.claims import HEARTBEAT_SECONDS, ClaimBook
from etl.state.manifest import shard_done
from etl.threads import helper_thread

log = logging.getLogger(__name__)


class Lease:
    """Claims the worker's shards one at a time, as its readers ask; None ``claims`` hands out
    every shard unclaimed (a scratch output nobody else writes)."""

    def __init__(
        self,
        shards: Sequence[Shard],
        claims: ClaimBook | None,
        readers: int,
        on_taken: Callable[[Shard], None] | None = None,
    ) -> None:
        self.shards = list(shards)
        self.claims = claims
        self.readers = max(1, readers)
        self.on_taken = on_taken or (lambda shard: None)  # clear a killed attempt's litter
        self.feed = ShardFeed(processes=readers > 0)
        self.taken: set[int] = set()
        self._closing = threading.Event()
        self._order = self._claimed()
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
        for thread in self._threads:
            thread.join()
        self._threads = []
        self.feed.wake(self.readers)

    def release(self, shard: Shard) -> None:
        """Its record is written: others may see it done, nobody needs to hold it."""
        if self.claims is not None:
            self.claims.release(shard)

    def release_all(self) -> None:
        """Every claim this worker holds (after close, so that none is taken afterwards)."""
        if self.claims is not None:
            self.claims.release_all()

    def _next(self) -> int | None:
        if self._closing.is_set():
            return None
        return next(self._order, None)

    def _claimed(self) -> Iterator[int]:
        elsewhere = []
        for index in range(len(self.shards)):
            if self._take(index):
                yield index
            else:
                elsewhere.append(index)  # another process holds it (or finished it)
        for index in elsewhere:  # claims of processes that died meanwhile are stale now
            if self._take(index):
                yield index

    def _take(self, index: int) -> bool:
        shard = self.shards[index]
        if self.claims is not None:
            if not self.claims.take(shard):
                return False
            if self._done_meanwhile(shard):
                self.claims.release(shard)
                return False
        self.on_taken(shard)
        self.taken.add(index)
        return True

    def _done_meanwhile(self, shard: Shard) -> bool:
        """Another process may have finished it between the plan and the claim."""
        try:
            now = dataclasses.replace(shard, **input_identity(shard.input_path))
        except OSError:
            return False  # its reader reports the missing input
        manifest, claims = self.claims.manifest, self.claims
        return shard_done(now, claims.fingerprint, manifest.done_index_of(shard)) is not None

    def _heartbeat(self) -> None:
        while not self._closing.wait(HEARTBEAT_SECONDS):
            if self.claims is not None:
                self.claims.heartbeat()
