"""Helper threads leave SIGINT and SIGTERM to the main thread (etl.threads)."""

from __future__ import annotations

import queue
import signal

import pytest

from etl.threads import SIGNALS, helper_pool, helper_thread

pytestmark = pytest.mark.skipif(
    not hasattr(signal, "pthread_sigmask"), reason="no per-thread signal masks here"
)


def _mask() -> set[signal.Signals]:
    return set(signal.pthread_sigmask(signal.SIG_BLOCK, []))


def test_a_helper_thread_and_a_helper_pool_block_both_signals_and_the_caller_does_not():
    seen: queue.Queue = queue.Queue()
    helper_thread(lambda: seen.put(_mask()), "test-helper").join()
    pool = helper_pool("test-pool")
    try:
        in_pool = pool.submit(_mask).result()
    finally:
        pool.shutdown(wait=True)
    assert seen.get_nowait() >= SIGNALS
    assert in_pool >= SIGNALS
    assert not SIGNALS & _mask()  # the main thread still takes them
