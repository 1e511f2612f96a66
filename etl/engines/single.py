"""This process: one ShardWorker, the model loaded once, shards one after another."""

from __future__ import annotations

import os
import socket
import time

from etl.contract import ShardRecord, WorkerInfo
from etl.engines.base import Engine, with_bar, work
from etl.plan import JobPlan
from etl.worker.settings import worker_settings
from etl.worker.shard_worker import ShardWorker


class SingleProcess(Engine):
    """The plain `embed-etl run`: the worker lives in the calling process."""

    worker: ShardWorker | None = None

    def start(self, plan: JobPlan) -> None:
        started = time.perf_counter()
        settings = worker_settings(
            plan.cfg, plan.placement.device, self.cfg.threads, progress=self.cfg.progress
        )
        self.worker = ShardWorker(settings, plan.spec)
        self.started.append(
            WorkerInfo(
                os.getpid(),
                str(self.worker.device),
                round(time.perf_counter() - started, 3),
                socket.gethostname(),
            )
        )

    def run(self, plan: JobPlan) -> list[ShardRecord]:
        if self.worker is None:
            raise RuntimeError("SingleProcess.start was not called")
        return self.worker.run(work(with_bar(plan)))

    def stop(self, failed: bool = False) -> None:
        self.worker = None
