"""The one interface every engine implements: start workers, run a plan, stop them.

run_job drives each engine through the same steps, in this order:

  placement()  where the models will run, resolved without loading one (the plan's device and
               dtype): this machine, or the Ray cluster (probed there)
  start(plan)  load the model in every worker and run the largest batch: a model that does not
               load or fit fails here, before anything is written
  run(plan)    every worker claims and embeds pending shards until none is left; the engine
               draws the progress bar (with_bar: its total, estimated where it is shown)
  stop()       workers gone, their memory given back

Engines only decide where a ShardWorker runs and with which settings (its device, its share
of the cores); claiming, skipping done shards, the int8 ranges, writing and recording are the
worker's, the same everywhere. The user's JobConfig is read here, never rewritten: a worker
gets its own WorkerSettings.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from typing import Any

from etl.config import JobConfig
from etl.contract import ShardRecord, ShardStatus, WorkerInfo
from etl.plan import JobPlan, Placement, local_placement
from etl.sampling import bar_tokens
from etl.worker.settings import Work


class Engine(ABC):
    """Where shards run: this process, N local processes, or Ray actors."""

    def __init__(self, cfg: JobConfig) -> None:
        self.cfg = cfg
        self.restarts = 0  # workers started again after one died
        self.started: list[WorkerInfo] = []  # every worker that loaded the model, in order

    def placement(self) -> Placement:
        """Where this engine's models run: this machine's device the options name."""
        return local_placement(self.cfg)

    @abstractmethod
    def start(self, plan: JobPlan) -> None:
        """Load the model in every worker; raise (EmbedEtlError) if any of them cannot."""

    @abstractmethod
    def run(self, plan: JobPlan) -> list[ShardRecord]:
        """Embed the plan's pending shards; records of the shards this engine's workers did."""

    @abstractmethod
    def stop(self, failed: bool = False) -> None:
        """Stop the workers (at once if the run ``failed``); a no-op when they are gone."""

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        self.stop(failed=exc_type is not None)


def with_bar(plan: JobPlan) -> JobPlan:
    """The plan with the job's tokens estimated for its progress bar where one is shown (a
    small sample, etl.sampling.bar_tokens): asked by the engine, which draws the bar."""
    return dataclasses.replace(plan, total_tokens=bar_tokens(plan))


def work(plan: JobPlan, shards: Any = None) -> Work:
    """What a worker is asked to do: the plan's pending shards (or these), into its output."""
    return Work(
        tuple(plan.pending if shards is None else shards),
        plan.storage,
        plan.total_rows,
        plan.total_tokens,
        plan.reuse,
        plan.calibration,
    )


def given_up(plan: JobPlan, finished: set[str], why: str) -> list[ShardRecord]:
    """Failed records for the pending shards no worker finished, once workers died or could
    not go on and none is left to take them."""
    return [
        ShardRecord(shard, ShardStatus.FAILED, error=f"{why}; rerun to finish it")
        for shard in plan.pending
        if shard.rel_name not in finished
    ]
