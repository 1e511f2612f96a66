"""run_job: the one flow from input shards to embedding files.

plan_job decides what is left to do without loading the model; then one ShardWorker (this
process), several worker processes (--workers, --devices) or a pool of Ray actors
(--engine ray) claim and embed the pending shards.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import pyarrow.parquet as pq

from etl.config import JobConfig, build_output_spec
from etl.contract import JobSummary, OutputSpec, Shard, ShardResult
from etl.errors import ConfigError, InputError
from etl.manifest import ManifestStore
from etl.modelinfo import resolve_model
from etl.resume import check_existing_outputs, check_job_record, job_record, select_pending
from etl.shards import discover, partition
from etl.source import check_columns

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class JobPlan:
    """What a run will do, decided before any model is loaded."""

    cfg: JobConfig
    spec: OutputSpec
    device: str  # the device the fingerprint's dtype was resolved for
    pending: tuple[Shard, ...]
    done: tuple[Shard, ...]
    total_rows: int  # rows in the pending shards, from their footers


def plan_job(cfg: JobConfig, where: tuple[str, str] | None = None) -> JobPlan:
    """Discover inputs, resolve the model's facts and the output spec, find what is left.

    ``where`` is (device, auto dtype) when the model runs elsewhere (a Ray cluster); by
    default both are resolved on this machine. Raises ConfigError, ModelError or
    OutputConflictError before anything is written.
    """
    from etl.encoder import resolve_device, resolve_dtype

    shards = discover(cfg.inputs, cfg.output_dir)
    if cfg.num_shards is not None:
        shards = partition(shards, cfg.num_shards)[cfg.shard_index]
    model = resolve_model(cfg.model)
    if where is None:
        local = resolve_device(cfg.devices[0] if cfg.devices else cfg.device)
        device, dtype = str(local), resolve_dtype(cfg.dtype, local)
    else:
        device, dtype = where[0], where[1] if cfg.dtype == "auto" else cfg.dtype
    spec = build_output_spec(cfg, model, dtype)
    store = ManifestStore(cfg.output_dir)
    if not cfg.overwrite:
        check_job_record(store.read_job(), spec, cfg.output_dir, store)
    pending, done = select_pending(shards, store, spec, cfg)
    total_rows = 0
    if pending:
        if not cfg.overwrite:
            check_existing_outputs(pending, spec, cfg.output_dir)
        total_rows = preflight(pending, spec)
    return JobPlan(cfg, spec, device, tuple(pending), tuple(done), total_rows)


def run_job(cfg: JobConfig) -> JobSummary:
    """Embed every input shard of ``cfg`` that is not done yet into ``cfg.output_dir``.

    Fails before writing anything on bad options, a model that does not load or an output
    directory that holds results of other options. Afterwards a bad shard only fails itself.
    """
    started = time.perf_counter()
    where = None
    if cfg.engine == "ray":
        from etl.ray_engine import cluster_device, connect

        connect(cfg)
        where = cluster_device(cfg)
    plan = plan_job(cfg, where)
    skipped = [ShardResult(s, "skipped") for s in plan.done]
    if not plan.pending:
        log.info("nothing to do: %d shard(s) already done", len(plan.done))
        return JobSummary(plan.spec.fingerprint, skipped, time.perf_counter() - started)
    log.info(
        "%d shard(s) to do, %d already done; model %s, %s",
        len(plan.pending),
        len(plan.done),
        plan.spec.model.name,
        plan.spec.dtype,
    )
    from etl.calibration import with_calibration

    if cfg.engine == "ray":
        from etl.ray_engine import run_on_ray

        results = run_on_ray(with_calibration(plan))
    elif cfg.workers > 1 or len(cfg.devices) > 1:
        from etl.local_workers import run_local_workers

        results = run_local_workers(with_calibration(plan))
    else:
        from etl.worker import ShardWorker

        worker = ShardWorker(cfg, plan.spec, plan.device)
        plan = with_calibration(plan, worker)  # int8 only: ranges fixed once per job
        worker.spec = plan.spec
        record_job(plan)  # after the model loaded and ran its warm-up batch
        results = worker.process(plan.pending, plan.total_rows, cfg.progress)
    everything = sorted(skipped + merge_results(plan, results), key=lambda r: r.shard.rel_name)
    return JobSummary(plan.spec.fingerprint, everything, time.perf_counter() - started)


def record_job(plan: JobPlan) -> None:
    """Write job.json once per run, before the first output: a concurrent start with other
    options is refused here; --overwrite forgets the previous records first."""
    store = ManifestStore(plan.cfg.output_dir)
    record = job_record(plan.spec, plan.cfg)
    if plan.cfg.overwrite:
        store.clear()
        store.write_job(record)
        return
    existing = store.create_job(record)
    check_job_record(existing, plan.spec, plan.cfg.output_dir, store)
    if existing is not None and existing.get("fingerprint") != plan.spec.fingerprint:
        store.write_job(record)  # the old record had no results behind it: replace it


def merge_results(plan: JobPlan, results: list[ShardResult]) -> list[ShardResult]:
    """One result per pending shard from several workers' reports: done or failed wins."""
    rank = {"done": 3, "failed": 2, "claimed_elsewhere": 1}
    best: dict[str, ShardResult] = {}
    for result in results:
        current = best.get(result.shard.rel_name)
        if current is None or rank.get(result.status, 0) > rank.get(current.status, 0):
            best[result.shard.rel_name] = result
    return [best.get(s.rel_name, ShardResult(s, "claimed_elsewhere")) for s in plan.pending]


def preflight(shards: list[Shard], spec: OutputSpec) -> int:
    """Read every footer once; refuse a column that no readable shard has. Returns total rows.

    A column missing from only some shards fails just those shards later, with the same message.
    """
    total = 0
    usable = False
    problem: InputError | None = None
    for shard in shards:
        try:
            metadata = pq.read_metadata(shard.input_path)
        except Exception:  # noqa: BLE001 - an unreadable shard fails on its own, later
            continue
        total += metadata.num_rows
        if usable:
            continue
        try:
            check_columns(metadata.schema.to_arrow_schema(), shard.input_path, spec)
            usable = True
        except InputError as exc:
            problem = problem or exc
    if problem is not None and not usable:
        raise ConfigError(str(problem))
    return total
