"""This process: one ShardWorker, the model loaded once, shards one after another."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Sequence

from etl.contract import Shard, ShardResult, WorkerInfo
from etl.engines.base import Engine
from etl.plan import JobPlan
from etl.spec import OutputSpec
from etl.storage.base import Storage
from etl.worker.shard_worker import ShardWorker


class SingleProcess(Engine):
    """The plain `embed-etl run`: the worker lives in the calling process."""

    worker: ShardWorker | None = None

    def start(self, plan: JobPlan) -> None:
        started = time.perf_counter()
        self.worker = ShardWorker(self.cfg, plan.spec, plan.placement.device)
        self.started.append(
            WorkerInfo(
                os.getpid(),
                str(self.worker.device),
                round(time.perf_counter() - started, 3),
                socket.gethostname(),
            )
        )

    def embed_sample(
        self, shards: Sequence[Shard], spec: OutputSpec, storage: Storage
    ) -> list[ShardResult]:
        return self._worker().process(shards, spec, storage)

    def run(self, plan: JobPlan) -> list[ShardResult]:
        return self._worker().process(
            plan.pending,
            plan.spec,
            plan.storage,
            plan.total_rows,
            self.cfg.progress,
            reuse=plan.reuse,
        )

    def stop(self, failed: bool = False) -> None:
        self.worker = None

    def _worker(self) -> ShardWorker:
        if self.worker is None:
            raise RuntimeError("SingleProcess.start was not called")
        return self.worker
