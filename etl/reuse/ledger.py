"""Which of a worker's shards the writer has finished, for readers ahead of it to wait on.

A reader runs ahead of the writer (a thread, or forked DataLoader processes). Before it looks
up a new shard's texts it waits until every shard it read before is finished: published with
its vectors in the store, or failed. It then adds the segments of those that were published to
its lookup itself (it knows their hashes: it sent them to the model), so a text embedded by the
previous shard is found, without a request, and a shard that failed leaves nothing for a later
one to depend on. The wait costs the time to write one shard's last window, once per shard.
The ledger also carries what embedding a text costs the worker, for readers deciding whether a
stored vector is worth a request (etl.reuse.lookup).
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterable

PENDING, FINISHED, STORED = 0, 1, 2


class Ledger:
    """Shard numbers 0..count-1, each finished once; shared with forked reader processes."""

    def __init__(self, count: int) -> None:
        context = multiprocessing.get_context("fork")
        self._finished = context.Array("b", max(1, count), lock=False)
        self._closed = context.Value("b", 0, lock=False)
        self._cost = context.Value("d", 0.0, lock=False)  # seconds to embed a text; 0: unknown
        self._changed = context.Condition()

    def finish(self, index: int, stored: bool = False) -> None:
        """The writer is done with this shard, however it ended (``stored``: its segment is in
        the store)."""
        with self._changed:
            self._finished[index] = STORED if stored else FINISHED
            self._changed.notify_all()

    @property
    def cost_per_text(self) -> float:
        """What embedding a text costs this worker (seconds), as its finished shards say; 0
        while none has."""
        return float(self._cost.value)

    def observe(self, seconds: float, texts: int) -> None:
        """A finished shard's time for its texts (a moving average over shards)."""
        if texts > 0 and seconds > 0:
            cost = seconds / texts
            old = self._cost.value
            self._cost.value = cost if old == 0 else 0.7 * old + 0.3 * cost

    def stored(self, index: int) -> bool:
        return self._finished[index] == STORED

    def wait(self, indices: Iterable[int]) -> bool:
        """Block until every one of these shards is finished; False if the ledger was closed
        first (the worker is stopping)."""
        indices = list(indices)
        with self._changed:
            while not all(self._finished[i] for i in indices):
                if self._closed.value:
                    return False
                self._changed.wait()
        return True

    def close(self) -> None:
        """Wake every waiting reader: nothing more will be finished."""
        with self._changed:
            self._closed.value = 1
            self._changed.notify_all()
