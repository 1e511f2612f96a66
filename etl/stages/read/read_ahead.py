"""Where the readers run ahead of the model: a thread of this process, or DataLoader processes.

A thread with `--num-workers 0` (the default on a CPU), DataLoader worker processes otherwise.

Reading Parquet and tokenizing release the GIL, so one thread keeps the model fed as well as a
forked DataLoader worker does, without a second process: on 20,000 corpus rows on a 2-core CPU
the whole job took 58.8 s with the thread against 62.1 s with the worker (medians of 3), so it
is the CPU default. Whatever the reader raises is raised where the items are consumed, and
stopping it waits until it has returned, so that it claims nothing after the claims are
released.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import Any

from torch.utils.data import DataLoader

from etl.threads import block_signals

# Reading processes by default: none, on a CPU and on a GPU alike; a thread of the job reads
# ahead, the Rust tokenizer spreading each window over every core. A forked reader tokenizes on
# one core (tokenizers turns its threads off after a fork): on an H200 with 16 cores, 50,000
# corpus rows in 8 shards ran at 22,898 rows/s with the thread against 7,182 with 4 reader
# processes (float16, 65,536-token batches; benchmarks/RESULTS.md).
DEFAULT_READERS = 0
DEPTH = 64  # items read ahead: batches of a window, or a shard's start and end


class ReadAhead:
    """An iterable over another's items, produced by a reader thread started per iteration."""

    def __init__(self, items: Iterable[Any], depth: int = DEPTH) -> None:
        self.items = items
        self.depth = depth

    def __iter__(self) -> Reader:
        return Reader(self.items, self.depth)


class _Raised:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


_END = object()


class Reader(Iterator[Any]):
    def __init__(self, items: Iterable[Any], depth: int) -> None:
        self._queue: queue.Queue = queue.Queue(depth)
        self._stop = threading.Event()
        self._ended = False
        self._thread = threading.Thread(
            target=self._fill, args=(items,), name="embed-etl-reader", daemon=True
        )
        self._thread.start()  # _fill blocks SIGINT and SIGTERM first (etl.threads)

    def __next__(self) -> Any:
        if self._ended:  # asked again after the end: the reader has nothing more to send
            raise StopIteration
        item = self._queue.get()
        if item is _END:
            self._ended = True
            raise StopIteration
        if isinstance(item, _Raised):
            self._ended = True
            raise item.exc
        return item

    def _shutdown_workers(self) -> None:
        """Stop the reader and wait for it (the name the runner calls on a DataLoader's)."""
        self._stop.set()
        self._thread.join()

    def _fill(self, items: Iterable[Any]) -> None:
        block_signals()
        source = iter(items)
        try:
            for item in source:
                if not self._put(item):
                    return
            self._put(_END)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, raised there
            self._put(_Raised(exc))
        finally:
            close = getattr(source, "close", None)
            if close is not None:
                close()  # the generator's own cleanup (open shards) runs in this thread

    def _put(self, item: Any) -> bool:
        """Queue an item; False once stopped. The wait wakes every 0.1 s to see a stop."""
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False


def make_loader(stream: Iterable[Any], num_workers: int, pin_memory: bool) -> Iterable[Any]:
    """The stream's items as they are (the stream batches already), read ahead of the model by
    a thread of this process (num_workers 0) or by DataLoader worker processes, whose batches
    come over by value (etl.contract.Batch pickles its tensors as numpy arrays)."""
    if num_workers == 0:
        return ReadAhead(stream)
    return DataLoader(
        stream,
        batch_size=None,
        num_workers=num_workers,
        pin_memory=pin_memory,
        prefetch_factor=4,
        collate_fn=_as_is,
    )


def _as_is(item: Any) -> Any:
    return item
