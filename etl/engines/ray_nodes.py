"""The Ray cluster's alive nodes, and how many actors of how many CPUs (and a GPU) fit them:
each actor needs all its CPUs, and its GPU, on one node (etl.engines.ray)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from etl.config import JobConfig
from etl.errors import ConfigError

log = logging.getLogger(__name__)

CPUS_PER_ACTOR_DEFAULT = 4


@dataclass(frozen=True)
class Node:
    """What one alive node offers."""

    cpus: float
    gpus: float


def nodes(ray: Any) -> list[Node]:
    """The alive nodes' CPUs and GPUs."""
    return [
        Node(float(n["Resources"].get("CPU", 0)), float(n["Resources"].get("GPU", 0)))
        for n in ray.nodes()
        if n.get("Alive")
    ]


def size_actors(cfg: JobConfig, found: list[Node], gpu: bool) -> tuple[int, int]:
    """(CPUs per actor, number of actors): each actor on one node, CPUs capped by the largest."""
    usable = [n for n in found if n.gpus >= 1] if gpu else found
    largest = int(max((n.cpus for n in usable), default=0))
    if largest < 1:
        raise ConfigError(f"--engine ray: no node offers a CPU{' and a GPU' if gpu else ''}")
    if cfg.threads is not None and cfg.threads > largest:
        raise ConfigError(
            f"--threads {cfg.threads}: each Ray actor needs its CPUs on one node, and the "
            f"largest node offers {largest} ({describe_nodes(found)})"
        )
    cpus = cfg.threads or (1 if gpu else min(CPUS_PER_ACTOR_DEFAULT, largest))
    fits = sum(int(min(n.cpus // cpus, n.gpus) if gpu else n.cpus // cpus) for n in usable)
    count = cfg.workers if cfg.workers > 1 else max(1, fits)
    if count > fits:
        log.warning(
            "ray: %d actors of %d CPU(s) asked for, the nodes fit %d now; the rest wait for "
            "room (up to --ray-timeout)",
            count,
            cpus,
            fits,
        )
    return cpus, count


def describe_nodes(found: list[Node]) -> str:
    return ", ".join(f"{n.cpus:g} CPU" + (f" {n.gpus:g} GPU" if n.gpus else "") for n in found)
