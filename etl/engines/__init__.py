"""Engines decide where shards run; each one is small because the worker owns the rest.

base    the interface (placement, start, run, stop), and what every engine gives its workers
single  this process
local   --workers N / --devices: one process per device or share of the cores
ray     --engine ray: actors on a Ray cluster (ray_nodes: how many fit its nodes)
handout local and ray: the driver hands each shard to one worker as the worker asks
"""

from __future__ import annotations

from etl.config import JobConfig
from etl.engines.base import Engine


def engine_for(cfg: JobConfig) -> Engine:
    """The engine the options ask for."""
    if cfg.engine == "ray":
        from etl.engines.ray import RayActors

        return RayActors(cfg)
    if cfg.workers > 1 or len(cfg.devices) > 1:
        from etl.engines.local import LocalProcesses

        return LocalProcesses(cfg)
    from etl.engines.single import SingleProcess

    return SingleProcess(cfg)
