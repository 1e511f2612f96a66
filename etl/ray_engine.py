"""--engine ray: the same per-shard work on a Ray cluster (pip install 'embed-etl[ray]').

A pool of actors, each loading the model once (one GPU each where the cluster has GPUs),
claims and embeds whole shards through ShardWorker, with the same atomic writes, manifest
and claims as local runs: an output directory can be filled partly by Ray and partly by
local processes. Ray restarts a crashed actor and retries its task (max_restarts,
max_task_retries); the new actor takes over the dead one's claims and skips finished shards.
The output directory must be a path every node sees (a shared file system).
"""

from __future__ import annotations

import dataclasses
import logging

from etl.contract import ShardResult
from etl.errors import ConfigError

log = logging.getLogger(__name__)

CPUS_PER_ACTOR_DEFAULT = 4
MAX_RESTARTS = 2


class ShardActor:
    """Runs in a Ray worker process: one model, reused for every shard it claims."""

    def __init__(self, cfg, spec) -> None:
        from etl.worker import ShardWorker

        logging.basicConfig(level=logging.INFO)
        self.worker = ShardWorker(cfg, spec, cfg.device)

    def process(self, shards) -> list[ShardResult]:
        return self.worker.process(shards, progress=False)


def connect(cfg) -> None:
    """Join the cluster at --ray-address (or RAY_ADDRESS), or start a local Ray."""
    try:
        import ray
    except ImportError as exc:
        raise ConfigError(
            "--engine ray: Ray is not installed; pip install 'embed-etl[ray]'"
        ) from exc
    if not ray.is_initialized():
        ray.init(address=cfg.ray_address, include_dashboard=False, log_to_driver=True)


def cluster_device(cfg) -> tuple[str, str]:
    """Where the actors will run, and whether that GPU has bfloat16: probed on the cluster,
    since the driver (an Airflow worker, a laptop) may have no GPU at all."""
    import ray

    if cfg.device.startswith("cpu") or ray.cluster_resources().get("GPU", 0) < 1:
        if cfg.device.startswith("cuda"):
            raise ConfigError(f"--device {cfg.device}: the Ray cluster has no GPUs")
        return "cpu", "float32"

    @ray.remote(num_gpus=1, num_cpus=0)
    def probe() -> bool:
        import torch

        return bool(torch.cuda.is_bf16_supported())

    return "cuda", "bfloat16" if ray.get(probe.remote()) else "float16"


def run_on_ray(plan) -> list[ShardResult]:
    """Start the actor pool on plan.pending; every actor gets the whole list and claims."""
    import ray

    from etl.pipeline import record_job

    cfg = plan.cfg
    gpu = plan.device.startswith("cuda")
    resources = ray.cluster_resources()
    cpus = cfg.threads or (1 if gpu else CPUS_PER_ACTOR_DEFAULT)
    cpus = min(cpus, max(1, int(resources.get("CPU", 1))))
    count = cfg.workers if cfg.workers > 1 else _default_actors(resources, gpu, cpus)
    record_job(plan)
    log.info("ray: %d actor(s), %s CPU%s each", count, cpus, " and 1 GPU" if gpu else "")
    actor_cfg = dataclasses.replace(
        cfg,
        workers=1,
        devices=(),
        device="cuda" if gpu else "cpu",
        threads=cpus,
        progress=False,
        engine="local",
    )
    actor_class = ray.remote(ShardActor).options(
        num_cpus=cpus,
        num_gpus=1 if gpu else 0,
        max_restarts=MAX_RESTARTS,
        max_task_retries=MAX_RESTARTS,
    )
    actors = [actor_class.remote(actor_cfg, plan.spec) for _ in range(count)]
    try:
        batches = ray.get([a.process.remote(list(plan.pending)) for a in actors])
    finally:
        for actor in actors:
            ray.kill(actor)
    return [result for batch in batches for result in batch]


def _default_actors(resources: dict, gpu: bool, cpus_per_actor: int) -> int:
    if gpu:
        return max(1, int(resources.get("GPU", 1)))
    return max(1, int(resources.get("CPU", 1)) // cpus_per_actor)
