"""run_job: the one flow from input shards to embedding files, the same for every engine.

plan       discover inputs, resolve the output spec, skip what is done (no model loaded);
           drop the claims that killed runs left on done shards
start      the engine loads the model in each of its workers and runs the largest batch
calibrate  int8 only: the ranges of an earlier run, or the sample the workers fix them from
record     job.json, once, before the first output; the vector store's store.json
run        the engine's workers claim and embed the pending shards
compact    the job's vector store, when it leaves many small segments (etl.reuse.compact)
"""

from __future__ import annotations

import logging
import time

from etl.calibrate import with_calibration
from etl.config import JobConfig
from etl.contract import ShardRecord, ShardStatus
from etl.engines import engine_for
from etl.plan import JobPlan, plan_at
from etl.reuse.compact import compact_if_due
from etl.reuse.plan import prepare_stores
from etl.state.claims import ClaimBook
from etl.state.job_record import record_job
from etl.state.manifest import Manifest
from etl.summary import JobSummary

log = logging.getLogger(__name__)


def run_job(cfg: JobConfig) -> JobSummary:
    """Embed every input shard of ``cfg`` that is not done yet into ``cfg.output_dir``.

    Fails before writing anything on bad options, a model that does not load or an output
    location that holds results of other options. Afterwards a bad shard only fails itself.
    """
    started = time.perf_counter()
    with engine_for(cfg) as engine:
        plan = plan_at(cfg, engine.placement())
        skipped = [ShardRecord(s, ShardStatus.SKIPPED) for s in plan.done]
        if plan.done:  # a kill after a shard's record leaves its claim behind
            ClaimBook(Manifest(plan.storage), plan.spec.fingerprint).clear_stale(plan.done)
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
        try:
            engine.start(plan)
            plan = with_calibration(plan)
            record_job(plan.storage, plan.spec, cfg)
            if plan.reuse is not None:
                prepare_stores(plan.reuse)
            results = engine.run(plan)
            if plan.reuse is not None:
                compact_if_due(plan.reuse.own)
        finally:
            plan.storage.discard_temporaries()
    everything = sorted(skipped + merge_results(plan, results), key=lambda r: r.shard.rel_name)
    return JobSummary(
        plan.spec.fingerprint,
        everything,
        time.perf_counter() - started,
        workers=engine.started,
        worker_restarts=engine.restarts,
        stores_not_used=list(plan.reuse.unused) if plan.reuse is not None else [],
    )


def merge_results(plan: JobPlan, results: list[ShardRecord]) -> list[ShardRecord]:
    """One result per pending shard from several workers' reports: done or failed wins."""
    rank = {ShardStatus.DONE: 3, ShardStatus.FAILED: 2, ShardStatus.ELSEWHERE: 1}
    best: dict[str, ShardRecord] = {}
    for result in results:
        current = best.get(result.shard.rel_name)
        if current is None or rank.get(result.status, 0) > rank.get(current.status, 0):
            best[result.shard.rel_name] = result
    return [best.get(s.rel_name, ShardRecord(s, ShardStatus.ELSEWHERE)) for s in plan.pending]
