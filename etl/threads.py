"""Threads of the job leave SIGINT and SIGTERM to the main thread.

The kernel hands a process signal to any thread that does not block it. Python runs the
handler in the main thread only, and only once the main thread wakes: if the signal lands in a
helper thread while the main thread waits in a system call, the interrupt waits with it (a
SIGTERM was seen to take effect a whole shard late). Every thread the job starts blocks both,
so the kernel interrupts the main thread's wait itself; threads they start inherit the mask.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

SIGNALS = {signal.SIGINT, signal.SIGTERM}


def block_signals() -> None:
    """Called first in a helper thread: SIGINT and SIGTERM go to the main thread."""
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)


def helper_thread(target: Callable[..., Any], name: str, *args: Any) -> threading.Thread:
    """A started thread that runs ``target(*args)`` with the signals blocked."""

    def run() -> None:
        block_signals()
        target(*args)

    thread = threading.Thread(target=run, name=name)
    thread.start()
    return thread


def helper_pool(name: str) -> ThreadPoolExecutor:
    """One worker thread, the signals blocked."""
    return ThreadPoolExecutor(1, thread_name_prefix=name, initializer=block_signals)
