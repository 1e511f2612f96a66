"""--engine ray: the same per-shard work on a Ray cluster (pip install 'embed-etl[ray]').

A pool of actors, each loading the model once (one GPU each where the cluster has GPUs). Each
actor runs one ShardWorker over the job, and its lease asks the driver for each shard as its
readers want another, as local workers do (etl.engines.handout): questions and results on a
Ray queue, answers through the actor's ``give``. It claims and embeds the shard with the same
atomic writes, manifest and claims as local runs (an output location can be filled partly by
Ray and partly by local processes); the driver shows each shard's result as it comes back. Ray
restarts a crashed actor (max_restarts) and the driver runs it again, up to MAX_RESTARTS times
in all; the shards it held go to the others first. The output location must be one every node
sees (a shared file system or an object store).

Actors are sized from the nodes' own resources, not the cluster's total: an actor needs all
its CPUs (and its GPU) on one node (etl.engines.ray_nodes).
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import time
from typing import Any

from etl.config import JobConfig
from etl.contract import ShardRecord, ShardStatus, WorkerInfo
from etl.engines.base import Engine, given_up, with_bar, work
from etl.engines.handout import Dispatch, FromDriver
from etl.engines.ray_nodes import describe_nodes, nodes, size_actors
from etl.errors import ConfigError, EmbedEtlError
from etl.plan import JobPlan, Placement
from etl.redact import log_to_stderr
from etl.spec import OutputSpec
from etl.worker.progress import Progress
from etl.worker.settings import Work, WorkerSettings, worker_settings

log = logging.getLogger(__name__)

MAX_RESTARTS = 2


class ShardActor:
    """Runs in a Ray worker process: one model, reused for every shard it claims. Two threads:
    ``run`` for the job, ``give`` for the driver's answers to its lease."""

    def __init__(self, settings: WorkerSettings, spec: OutputSpec) -> None:
        from etl.worker.shard_worker import ShardWorker

        log_to_stderr(logging.BASIC_FORMAT)  # credentials redacted
        started, self.worker = time.perf_counter(), ShardWorker(settings, spec)
        self.load_seconds = time.perf_counter() - started
        self.answers: queue.Queue = queue.Queue()

    def ready(self) -> WorkerInfo:
        """Answered once the model is loaded."""
        return WorkerInfo(
            os.getpid(), str(self.worker.device), round(self.load_seconds, 3), socket.gethostname()
        )

    def run(self, work: Work, number: int, events: Any) -> int:
        """Embed the shards the driver hands out, as worker ``number``; results go to
        ``events`` as they finish. The number of shards done."""
        handout = FromDriver(number, events, self.answers)
        records = self.worker.run(work, on_result=handout.report, handout=handout)
        return sum(r.status == ShardStatus.DONE for r in records)

    def give(self, shard: int | None) -> None:
        """The driver's answer to the lease's question."""
        self.answers.put(shard)


class RayActors(Engine):
    """Actors on the cluster at --ray-address (or RAY_ADDRESS), or on a local Ray."""

    def __init__(self, cfg: JobConfig) -> None:
        super().__init__(cfg)
        self.ray = connect(cfg)
        self.actors: list[Any] = []
        self.numbers: dict[int, Any] = {}  # worker number -> its actor (a rerun: a new number)
        self.dispatch: Dispatch | None = None
        self.arrivals: list[tuple[str, float]] = []  # (shard, when its record reached us)

    def placement(self) -> Placement:
        return cluster_placement(self.cfg)

    def start(self, plan: JobPlan) -> None:
        ray, cfg = self.ray, self.cfg
        gpu = plan.placement.device.startswith("cuda")
        cpus, count = size_actors(cfg, nodes(ray), gpu)
        log.info("ray: %d actor(s), %s CPU%s each", count, cpus, " and 1 GPU" if gpu else "")
        settings = worker_settings(plan.cfg, "cuda" if gpu else "cpu", cpus)
        actor_class = ray.remote(ShardActor).options(
            num_cpus=cpus,
            num_gpus=1 if gpu else 0,
            max_restarts=MAX_RESTARTS,
            max_task_retries=MAX_RESTARTS,  # loading; the job's run is run again by the driver
            max_concurrency=2,  # run, and give beside it
        )
        self.actors = [actor_class.remote(settings, plan.spec) for _ in range(count)]
        self._wait_ready(cpus, gpu)

    def run(self, plan: JobPlan) -> list[ShardRecord]:
        """Every actor runs over the job and asks for each shard; each record is taken as soon
        as its shard is done, so the progress bar and the ETA move while the job runs. Each
        shard is tried by one actor (one claim attempt per shard, not one per actor)."""
        from ray.util.queue import Queue

        ray = self.ray
        events = Queue(actor_options={"num_cpus": 0})
        self.dispatch = Dispatch(plan.pending, self._give)
        runs = dict(self._run(actor, plan, events) for actor in self.actors)
        records: list[ShardRecord] = []
        died = False
        bar = Progress(plan.total_rows, self.cfg.progress, with_bar(plan).total_tokens)
        try:
            while runs:
                self._take(events, records, bar, wait=0.2)
                ended, _ = ray.wait(list(runs), num_returns=len(runs), timeout=0)
                for ref in ended:
                    number = runs.pop(ref)
                    if self._ended(ref, number):  # its actor died
                        died = True
                        if self.dispatch.left() and self.restarts < MAX_RESTARTS:
                            self.restarts += 1  # Ray restarted it: run it again
                            runs.update([self._run(self.numbers[number], plan, events)])
            self._take(events, records, bar, wait=None)  # what the last ones sent before ending
        finally:
            bar.close()
            events.shutdown(force=True)
        done = {r.shard.rel_name for r in records}
        return records + (given_up(plan, done, "its Ray actor died") if died else [])

    def stop(self, failed: bool = False) -> None:
        for actor in self.actors:
            self.ray.kill(actor)
        self.actors = []

    def _run(self, actor: Any, plan: JobPlan, events: Any) -> tuple[Any, int]:
        """(the task, its worker number): the actor runs over the job, asking for shards."""
        number = len(self.numbers)
        self.numbers[number] = actor
        return actor.run.options(max_task_retries=0).remote(work(plan), number, events), number

    def _give(self, number: int, shard: int | None) -> None:
        self.numbers[number].give.options(max_task_retries=0).remote(shard)

    def _take(self, events: Any, records: list[ShardRecord], bar: Progress, wait: Any) -> None:
        """Handle the actors' questions and results: the first waited for up to ``wait``
        seconds, then whatever is there (None: only whatever is there)."""
        while True:
            try:
                event = events.get(timeout=wait) if wait is not None else events.get_nowait()
            except queue.Empty:
                return
            wait = None
            record = self.dispatch.handle(event)
            if record is not None:
                records.append(record)
                self.arrivals.append((record.shard.rel_name, time.time()))
                bar.update(record.rows_in, record.tokens)

    def _ended(self, ref: Any, number: int) -> bool:
        """A run that ended gives back the shards it held; True if its actor died."""
        self.dispatch.lost(number)
        try:
            self._get(ref)
        except self.ray.exceptions.RayActorError as exc:
            log.error("ray: actor of worker %d died: %s", number, exc)
            return True
        return False

    def _wait_ready(self, cpus: int, gpu: bool) -> None:
        """Every actor placed and its model loaded within --ray-timeout, or a clear error."""
        ray = self.ray
        refs = [a.ready.remote() for a in self.actors]
        deadline = time.monotonic() + self.cfg.ray_timeout
        pending = refs
        while pending:
            left = deadline - time.monotonic()
            if left <= 0:
                raise EmbedEtlError(
                    f"--engine ray: {len(pending)} of {len(refs)} actors ({cpus} CPU"
                    f"{' and 1 GPU' if gpu else ''} each) were not placed or ready within "
                    f"--ray-timeout {self.cfg.ray_timeout:g} s; the cluster's nodes offer "
                    f"{describe_nodes(nodes(ray))}. Lower --workers or --threads, or add nodes"
                )
            _, pending = ray.wait(pending, num_returns=len(pending), timeout=min(left, 30.0))
            if pending:
                log.info("ray: waiting for %d actor(s) to be placed and loaded", len(pending))
        for info in self._get(refs):
            self.started.append(info)
            log.info(
                "ray actor ready on %s %s (pid %d, model loaded in %.1f s)",
                info.host,
                info.device,
                info.pid,
                info.load_seconds,
            )

    def _get(self, refs: Any) -> Any:
        """ray.get, with the library's own error when an actor could not load the model."""
        try:
            return self.ray.get(refs)
        except self.ray.exceptions.RayError as exc:
            cause = _embed_etl_cause(exc)
            if cause is not None:
                raise cause from exc
            raise


def connect(cfg: JobConfig) -> Any:
    """Join the cluster at --ray-address (or RAY_ADDRESS), or start a local Ray."""
    try:
        import ray
    except ImportError as exc:
        raise ConfigError(
            "--engine ray: Ray is not installed; pip install 'embed-etl[ray]'"
        ) from exc
    if not ray.is_initialized():
        try:
            ray.init(address=cfg.ray_address, include_dashboard=False, log_to_driver=True)
        except (ConnectionError, ValueError, RuntimeError) as exc:
            where = cfg.ray_address or os.environ.get("RAY_ADDRESS") or "a local Ray"
            raise ConfigError(f"--ray-address {where}: cannot connect: {exc}") from exc
    return ray


def cluster_placement(cfg: JobConfig) -> Placement:
    """Where the actors will run, and whether that GPU has bfloat16: probed on the cluster,
    since the driver (an Airflow worker, a laptop) may have no GPU at all."""
    ray = connect(cfg)
    if cfg.device.startswith("cpu") or not any(n.gpus >= 1 for n in nodes(ray)):
        if cfg.device.startswith("cuda"):
            raise ConfigError(f"--device {cfg.device}: the Ray cluster has no GPUs")
        return Placement("cpu", "float32")

    @ray.remote(num_gpus=1, num_cpus=0)
    def probe() -> bool:
        import torch

        return bool(torch.cuda.is_bf16_supported())

    return Placement("cuda", "bfloat16" if ray.get(probe.remote()) else "float16")


def _embed_etl_cause(exc: BaseException) -> EmbedEtlError | None:
    """The EmbedEtlError an actor raised (say, in loading the model), if that is the cause."""
    seen = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, EmbedEtlError):
            return current
        current = getattr(current, "cause", None) or current.__cause__
    return None
