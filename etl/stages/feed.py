"""Which shard a reader reads next: it asks, and the worker answers with one it already holds.

Readers (a thread of the worker, or forked DataLoader processes) never claim a shard. Each
asks the feed when it is ready for another; the worker's lease (etl.state.lease) claims one
and answers with its number, or None when it has no more. A reader holds at most the shard it
is reading, so shards are not taken by a busy worker while another is idle.
"""

from __future__ import annotations

import multiprocessing
import queue
from typing import Any

ASK = "ask"
STOP = "stop"


class ShardFeed:
    """Two queues, requests and answers; shared with forked readers when ``processes``."""

    def __init__(self, processes: bool) -> None:
        if processes:
            context = multiprocessing.get_context("fork")
            self.requests: Any = context.Queue()
            self.answers: Any = context.Queue()
        else:
            self.requests, self.answers = queue.Queue(), queue.Queue()

    def next(self) -> int | None:
        """Reader side: the number of the next shard to read, None when there is none."""
        self.requests.put(ASK)
        return self.answers.get()

    def serve(self, choose: Any) -> None:
        """Owner side, in a thread: answer each request with ``choose()`` until stopped."""
        while self.requests.get() != STOP:
            self.answers.put(choose())

    def stop(self) -> None:
        """Make ``serve`` return once it has answered the requests already made."""
        self.requests.put(STOP)

    def wake(self, readers: int) -> None:
        """After ``serve`` returned: answer None to readers still waiting (and later ones)."""
        for _ in range(readers):
            self.answers.put(None)
