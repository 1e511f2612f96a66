"""--workers N / --devices: one worker process per device (or per share of the CPU cores).

Each process loads the model once, says it is ready, and then embeds the shards the parent
hands it one at a time as it asks (etl.engines.handout), claiming each in the shared output
location, as separate `embed-etl run` processes would. The parent starts them, answers them,
shows progress and collects their results. A worker that dies is replaced (up to MAX_RESTARTS
times); its claims go stale at once on this host, and the shards it held go to the others first.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import queue
import signal
import socket
import sys
import time
from dataclasses import dataclass
from typing import Any

from etl.config import JobConfig
from etl.contract import ShardRecord, WorkerInfo
from etl.engines.base import Engine, given_up, with_bar, work
from etl.engines.handout import Dispatch, FromDriver
from etl.errors import EmbedEtlError
from etl.plan import JobPlan
from etl.redact import log_to_stderr
from etl.spec import OutputSpec
from etl.worker.progress import Progress
from etl.worker.settings import Work, WorkerSettings, worker_settings

log = logging.getLogger(__name__)

MAX_RESTARTS = 2  # replacements per run, for workers that died


# Parent -> worker, on the worker's own command queue: a Work (None = stop), then the answers
# to its questions (etl.engines.handout). Worker -> parent, one queue for all: these, and the
# handout's questions and results. A worker is numbered once: a replacement gets a new number.
@dataclass
class Ready:
    index: int
    worker: WorkerInfo


@dataclass
class Failed:
    index: int
    message: str  # an EmbedEtlError the worker could not get past (say, the model)


@dataclass
class _Worker:
    process: Any  # multiprocessing.Process
    commands: Any  # its command queue
    settings: WorkerSettings
    ready: bool = False
    handled: bool = False  # its exit was noticed


class LocalProcesses(Engine):
    """Worker processes on this machine, spawned (fresh interpreters, no inherited threads)."""

    def __init__(self, cfg: JobConfig) -> None:
        super().__init__(cfg)
        self.context = multiprocessing.get_context("spawn")
        self.events = self.context.Queue()
        self.workers: dict[int, _Worker] = {}
        self.spawned = 0  # workers numbered so far
        self.dispatch: Dispatch | None = None
        self.spec: OutputSpec | None = None
        self.results: dict[str, ShardRecord] = {}
        self.errors: list[str] = []

    def start(self, plan: JobPlan) -> None:
        cfg = self.cfg
        devices = list(cfg.devices) or [plan.placement.device] * cfg.workers
        threads = cfg.threads
        if threads is None and devices[0].startswith("cpu"):
            from etl.stages.compute.device import default_threads

            threads = max(1, default_threads() // len(devices))  # split the cores
        self.spec = plan.spec
        log.info("%d worker processes on %s", len(devices), ", ".join(devices))
        for device in devices:
            self._spawn(worker_settings(plan.cfg, device, threads))
        while not all(w.ready for w in self.workers.values()):
            self._handle(self._next_event(), plan=None)
            self._fail_if_gone(self.workers, "while loading the model")

    def run(self, plan: JobPlan) -> list[ShardRecord]:
        self.bar = Progress(plan.total_rows, self.cfg.progress, with_bar(plan).total_tokens)
        self.dispatch = Dispatch(plan.pending, self._answer)
        try:
            for index in self.workers:
                self._dispatch(index, plan)
            while True:
                self._handle(self._next_event(), plan)
                self._restart_dead(plan)
                if self._all_ended():
                    break
        finally:
            self.bar.close()
        records = list(self.results.values())
        died = any(w.process.exitcode not in (0, None) for w in self.workers.values())
        if died or self.errors:  # out of restarts, or a worker could not go on
            why = self.errors[0] if self.errors else "its worker process died"
            records += given_up(plan, set(self.results), why)
        return records

    def stop(self, failed: bool = False) -> None:
        if failed:
            self._terminate()
        for worker in self.workers.values():
            if worker.process.is_alive():
                worker.commands.put(None)
        for worker in self.workers.values():
            worker.process.join(timeout=30)
            if worker.process.is_alive():
                worker.process.terminate()
                worker.process.join()
        self.workers.clear()

    def _spawn(self, settings: WorkerSettings) -> None:
        index, self.spawned = self.spawned, self.spawned + 1
        commands = self.context.Queue()
        process = self.context.Process(
            target=_worker_main,
            args=(index, settings, self.spec, commands, self.events),
            name=f"embed-etl-worker-{index}",
        )
        process.start()
        self.workers[index] = _Worker(process, commands, settings)

    def _dispatch(self, index: int, plan: JobPlan) -> None:
        """Give a ready worker the list of pending shards; it asks which of them to embed."""
        self.workers[index].commands.put(work(plan))

    def _answer(self, index: int, shard: int | None) -> None:
        self.workers[index].commands.put(shard)

    def _next_event(self) -> Any:
        try:
            return self.events.get(timeout=0.5)
        except queue.Empty:
            return None

    def _all_ended(self) -> bool:
        """No worker alive, every exit noticed, nothing left to read."""
        for worker in self.workers.values():
            if worker.process.is_alive():
                return False
            if worker.process.exitcode not in (0, None) and not worker.handled:
                return False
        return self.events.empty()

    def _handle(self, event: Any, plan: JobPlan | None) -> None:
        if event is None:
            return
        if isinstance(event, Ready):
            self.workers[event.index].ready = True
            self.started.append(event.worker)
            log.info("worker %d ready: %s", event.index, event.worker)
            if plan is not None:  # a replacement, started while the job runs
                self._dispatch(event.index, plan)
        elif isinstance(event, Failed):
            if plan is None:  # while loading: nothing was written yet
                self._terminate()
                raise EmbedEtlError(event.message)
            log.error("worker %d: %s", event.index, event.message)
            self.errors.append(event.message)
        elif self.dispatch is not None:  # a question, a shard not taken, a result
            record = self.dispatch.handle(event)
            if record is not None:
                self.results[record.shard.rel_name] = record
                self.bar.update(record.rows_in, record.tokens)

    def _fail_if_gone(self, indices: Any, doing: str) -> None:
        """A worker we wait for that exits without a word fails the whole job."""
        for index in indices:
            worker = self.workers[index]
            if worker.process.exitcode is not None and self.events.empty():
                self._terminate()
                raise EmbedEtlError(
                    f"worker {index} on {worker.settings.device} exited with code "
                    f"{worker.process.exitcode} {doing}; run with --workers 1 to see why"
                )

    def _restart_dead(self, plan: JobPlan) -> None:
        """A worker that ended gives back the shards it held; one that died is replaced."""
        for index, worker in list(self.workers.items()):
            code = worker.process.exitcode
            if code is None or worker.handled:
                continue
            worker.handled = True
            self.dispatch.lost(index)
            if code == 0:
                continue
            log.error("worker %d (pid %s) ended with exit code %s", index, worker.process.pid, code)
            if self.dispatch.left() and self.restarts < MAX_RESTARTS:
                self.restarts += 1
                log.warning("shards left: starting worker %d in place of %d", self.spawned, index)
                self._spawn(worker.settings)

    def _terminate(self) -> None:
        for worker in self.workers.values():
            if worker.process.is_alive():
                worker.process.terminate()  # SIGTERM: the worker unwinds and releases its claims
        for worker in self.workers.values():
            worker.process.join()


def _worker_main(
    index: int, settings: WorkerSettings, spec: OutputSpec, commands: Any, events: Any
) -> None:
    """Entry point of a worker process: load once, then embed the Work the parent sends."""
    from etl.worker.shard_worker import ShardWorker

    signal.signal(signal.SIGTERM, _interrupt)
    log_to_stderr(f"%(asctime)s %(levelname)s worker-{index} %(name)s: %(message)s")
    try:
        started = time.perf_counter()
        worker = ShardWorker(settings, spec)
        seconds = round(time.perf_counter() - started, 3)
        info = WorkerInfo(os.getpid(), str(worker.device), seconds, socket.gethostname())
        events.put(Ready(index, info))
        command: Work | None = commands.get()
        if command is not None:
            handout = FromDriver(index, events, commands)  # answers come on the command queue
            worker.run(command, on_result=handout.report, handout=handout)
    except EmbedEtlError as exc:
        events.put(Failed(index, str(exc)))
    except KeyboardInterrupt:
        sys.exit(130)
    finally:
        events.close()
        events.join_thread()


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt
