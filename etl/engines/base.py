"""The one interface every engine implements: start workers, run a plan, return shard results.

run_job drives each engine through the same steps, in this order, so that recording the job
and fixing the int8 ranges happen once, in one place, whatever runs the shards:

  placement()     where the models will run (this machine, or probed on a Ray cluster)
  start(plan)     load the model in every worker and run the largest batch: a model that does
                  not load or fit fails here, before anything is written
  embed_sample()  the int8 calibration sample, on one loaded worker
  run(plan)       every worker claims and embeds pending shards until none is left
  stop()          workers gone, their memory given back

Engines only decide where a ShardWorker runs; claiming, skipping done shards, writing and
recording are the worker's, the same everywhere.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

from etl.config import JobConfig
from etl.contract import Shard, ShardResult, WorkerInfo
from etl.plan import JobPlan, Placement, local_placement
from etl.spec import OutputSpec
from etl.storage.base import Storage


class Engine(ABC):
    """Where shards run: this process, N local processes, or Ray actors."""

    def __init__(self, cfg: JobConfig) -> None:
        self.cfg = cfg
        self.restarts = 0  # workers started again after one died
        self.started: list[WorkerInfo] = []  # every worker that loaded the model, in order

    def placement(self) -> Placement:
        """Where the models will run, resolved without loading one."""
        return local_placement(self.cfg)

    @abstractmethod
    def start(self, plan: JobPlan) -> None:
        """Load the model in every worker; raise (EmbedEtlError) if any of them cannot."""

    @abstractmethod
    def embed_sample(
        self, shards: Sequence[Shard], spec: OutputSpec, storage: Storage
    ) -> list[ShardResult]:
        """Embed a few shards on one loaded worker (the int8 calibration sample)."""

    @abstractmethod
    def run(self, plan: JobPlan) -> list[ShardResult]:
        """Embed the plan's pending shards; results of the shards this engine's workers did."""

    @abstractmethod
    def stop(self, failed: bool = False) -> None:
        """Stop the workers (at once if the run ``failed``); a no-op when they are gone."""

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        self.stop(failed=exc_type is not None)
