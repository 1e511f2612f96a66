"""--workers N / --devices: one worker process per device (or per share of the CPU cores).

Each process loads the model once and claims whole shards from the shared output directory
until none is left, exactly as separate `embed-etl run` processes would. The parent only
starts them, shows progress and collects their results. If a worker dies, its claims go
stale and the others take them over; shards still left when all are gone get a fresh round.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import os
import queue
import signal
import sys
import time
from typing import Any

from etl.contract import Shard, ShardResult
from etl.errors import EmbedEtlError

log = logging.getLogger(__name__)

ROUNDS = 2  # a second round only runs when a worker died and left shards behind


def run_local_workers(plan) -> list[ShardResult]:
    """Run plan.pending on N worker processes; one result per shard."""
    from tqdm import tqdm

    from etl.encoder import default_threads
    from etl.pipeline import record_job

    cfg = plan.cfg
    devices = list(cfg.devices) or [plan.device] * cfg.workers
    threads = cfg.threads
    if threads is None and devices[0].startswith("cpu"):
        threads = max(1, default_threads() // len(devices))  # split the cores, never oversubscribe
    record_job(plan)
    log.info("%d worker processes on %s", len(devices), ", ".join(devices))
    bar = tqdm(
        total=plan.total_rows,
        unit="rows",
        file=sys.stderr,
        dynamic_ncols=True,
        disable=not cfg.progress if cfg.progress is not None else None,
    )
    results: dict[str, ShardResult] = {}
    pending = list(plan.pending)
    try:
        for round_number in range(ROUNDS):
            died = _round(cfg, plan.spec, devices, threads, pending, results, bar)
            pending = [s for s in pending if s.rel_name not in results]
            if not pending or not died:
                break
            if round_number + 1 < ROUNDS:
                log.warning("a worker died; %d shard(s) left: starting workers again", len(pending))
    finally:
        bar.close()
    for shard in pending:
        results.setdefault(
            shard.rel_name,
            ShardResult(shard, "failed", error="its worker process died; rerun to finish it"),
        )
    return list(results.values())


def _round(cfg, spec, devices, threads, shards: list[Shard], results, bar) -> bool:
    """Start one worker per device on the shards; True if any of them died."""
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no inherited threads
    messages = context.Queue()
    processes = []
    for index, device in enumerate(devices):
        child_cfg = dataclasses.replace(
            cfg, workers=1, devices=(), device=device, threads=threads, progress=False
        )
        process = context.Process(
            target=_worker_main,
            args=(index, child_cfg, spec, shards, messages),
            name=f"embed-etl-worker-{index}",
        )
        process.start()
        processes.append(process)
    errors: list[str] = []
    try:
        while any(p.is_alive() for p in processes) or not messages.empty():
            try:
                kind, payload = messages.get(timeout=0.5)
            except queue.Empty:
                continue
            if kind == "result":
                if payload.status in ("done", "failed"):
                    results[payload.shard.rel_name] = payload
                    bar.update(payload.rows)
            elif kind == "ready":
                index, pid, device, seconds = payload
                log.info(
                    "worker %d ready on %s (pid %d, model loaded in %.1f s)",
                    index,
                    device,
                    pid,
                    seconds,
                )
            elif kind == "error":
                errors.append(payload)
    except BaseException:
        for process in processes:
            if process.is_alive():
                process.terminate()  # SIGTERM: the worker unwinds and releases its claims
        raise
    finally:
        for process in processes:
            process.join()
    if errors and not results:
        raise EmbedEtlError(errors[0])
    for message in errors:
        log.error("worker: %s", message)
    died = [p for p in processes if p.exitcode not in (0, None)]
    for process in died:
        log.error("%s ended with exit code %s", process.name, process.exitcode)
    return bool(died)


def _worker_main(index: int, cfg, spec, shards: list[Shard], messages: Any) -> None:
    """Entry point of a worker process: one ShardWorker over the shared list of shards."""
    from etl.worker import ShardWorker

    signal.signal(signal.SIGTERM, _interrupt)
    logging.basicConfig(
        level=logging.INFO,
        format=f"%(asctime)s %(levelname)s worker-{index} %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        started = time.perf_counter()
        worker = ShardWorker(cfg, spec, cfg.device)
        messages.put(
            ("ready", (index, os.getpid(), str(worker.device), time.perf_counter() - started))
        )
        worker.process(shards, on_result=lambda r: messages.put(("result", r)))
    except EmbedEtlError as exc:
        messages.put(("error", str(exc)))
    except KeyboardInterrupt:
        sys.exit(130)
    finally:
        messages.close()
        messages.join_thread()


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt
