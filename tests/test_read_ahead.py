"""The CPU's reader thread: every item in order, the reader's errors raised where items are
consumed, and a stop that leaves the reader finished (it takes nothing more, its cleanup ran).
A reader process's batches cross by value."""

from __future__ import annotations

import threading
from multiprocessing import resource_sharer

import pytest
import torch
from torch.utils.data import IterableDataset

from etl.contract import Batch
from etl.stages.read.read_ahead import ReadAhead, make_loader


def test_every_item_in_order_each_time_it_is_iterated():
    loader = ReadAhead(range(1000), depth=3)
    assert list(loader) == list(range(1000))
    assert list(loader) == list(range(1000))
    reader = iter(ReadAhead([1]))
    assert list(reader) == [1]
    assert next(reader, "end") == "end"  # asked again after the end: ends again, no hang


def test_what_the_reader_raises_is_raised_to_the_consumer_after_the_items_before_it():
    def items():
        yield from (1, 2)
        raise OSError("disk gone")

    got = []
    with pytest.raises(OSError, match="disk gone"):
        for item in ReadAhead(items()):
            got.append(item)
    assert got == [1, 2]


def test_a_stop_waits_for_the_reader_which_then_takes_nothing_more():
    taken, closed = [], threading.Event()

    def items():
        try:
            for i in range(10_000):
                taken.append(i)
                yield i
        finally:
            closed.set()

    reader = iter(ReadAhead(items(), depth=2))
    assert next(reader) == 0
    reader._shutdown_workers()
    assert closed.is_set()  # the generator was closed, in the reader thread
    before = len(taken)
    assert before <= 4  # one consumed, at most two queued, one waiting to be queued
    assert not reader._thread.is_alive() and len(taken) == before


class _Batches(IterableDataset):
    def __iter__(self):
        for i in range(20):
            ids = torch.arange(i * 12, (i + 1) * 12).reshape(3, 4)  # (B, T)
            yield Batch(0, i, torch.arange(3), ids, ids > 2, keep=ids % 2 == 0)


def test_a_reader_process_sends_batches_by_value_not_as_file_descriptors(monkeypatch):
    """Receiving a tensor's file descriptor is a socket handshake with a thread of the reader,
    which printed a traceback when SIGTERM cut it short; batches travel in the pickle instead."""
    handed_over = []
    detach = resource_sharer.DupFd.detach
    monkeypatch.setattr(
        resource_sharer.DupFd, "detach", lambda fd: handed_over.append(fd) or detach(fd)
    )
    got = list(make_loader(_Batches(), num_workers=1, pin_memory=False))
    expected = list(_Batches())
    assert [b.window_index for b in got] == list(range(20))
    for batch, sent in zip(got, expected, strict=True):
        for name in ("rows", "input_ids", "attention_mask", "keep"):
            assert torch.equal(getattr(batch, name), getattr(sent, name)), name
        assert batch.parts is None and batch.window is None
    assert not handed_over
