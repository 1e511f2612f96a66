"""What one worker is given: its settings, fixed when it starts, and the work it is asked for.

The user's JobConfig stays with the plan and the engine; a worker sees only these records.
An engine builds a worker's settings once from the plan, for the device and the share of the
cores it gives that worker.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from etl.contract import Shard
from etl.storage import fork_safe
from etl.storage.base import Storage

if TYPE_CHECKING:
    from etl.config import JobConfig


@dataclass(frozen=True)
class WorkerSettings:
    """How a worker runs: where, on how many threads, how it batches and reads."""

    device: str  # cpu, cuda, cuda:N, mps, or auto
    threads: int | None = None  # torch's intra-op threads; None: the machine's default
    batch_tokens: int | None = None  # padded-token budget per batch; None: the device's
    batch_size: int | None = None  # at most this many sequences per batch
    sort_window: int | None = None  # rows sorted by length together
    readers: int | None = None  # DataLoader reader processes; None: the device's default
    trust_remote_code: bool = False
    progress: bool | None = False  # a progress bar in this worker (only where it is alone)


@dataclass(frozen=True)
class Work:
    """Embed these shards into this output location."""

    shards: tuple[Shard, ...]
    storage: Storage
    total_rows: int = 0  # rows in these shards, for the progress bar
    total_tokens: int | None = None  # their tokens, estimated where the bar is shown
    reuse: Any = None  # etl.reuse.plan.ReusePlan: the vector stores; None embeds every row
    calibration: Any = None  # etl.state.calibration.Calibration: int8 ranges still to fix, or None


def worker_settings(
    cfg: JobConfig, device: str, threads: int | None, progress: bool | None = False
) -> WorkerSettings:
    """A worker's settings from the user's options, on ``device`` with ``threads``."""
    return WorkerSettings(
        device=device,
        threads=threads,
        batch_tokens=cfg.batch_tokens,
        batch_size=cfg.batch_size,
        sort_window=cfg.sort_window,
        readers=cfg.num_workers if fork_safe(cfg.locations()) else 0,  # auto: a thread there
        trust_remote_code=cfg.trust_remote_code,
        progress=progress,
    )
