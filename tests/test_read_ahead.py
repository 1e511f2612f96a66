"""The CPU's reader thread: every item in order, the reader's errors raised where items are
consumed, and a stop that leaves the reader finished (it takes nothing more, its cleanup ran)."""

from __future__ import annotations

import threading

import pytest

from etl.stages.read_ahead import ReadAhead


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
