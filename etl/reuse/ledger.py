"""Which of a worker's shards the writer has finished, for readers ahead of it to wait on.

A reader runs ahead of the writer (a thread, or forked DataLoader processes). Before it looks
up a new shard's texts it waits until every shard it read before is finished: published with
its vectors in the store, or failed. So a text embedded by the previous shard is found in the
store, and a shard that failed leaves nothing for a later one to depend on. The wait costs the
time to write one shard's last window, once per shard.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterable


class Ledger:
    """Shard numbers 0..count-1, each finished once; shared with forked reader processes."""

    def __init__(self, count: int) -> None:
        context = multiprocessing.get_context("fork")
        self._finished = context.Array("b", max(1, count), lock=False)
        self._closed = context.Value("b", 0, lock=False)
        self._changed = context.Condition()

    def finish(self, index: int) -> None:
        """The writer is done with this shard, however it ended."""
        with self._changed:
            self._finished[index] = 1
            self._changed.notify_all()

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
