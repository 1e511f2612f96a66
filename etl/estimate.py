"""What a job will cost before it runs: rows, tokens, the share the stores hold, and time.

estimate_job plans the job as `run` would (no model loaded) and draws a sample of its rows
(etl.sampling), counted by the job's own tokenizing path. The job's tokens are the sampled row
groups' tokens over their text bytes times the pending shards' text bytes (both from the
footers). The sample's hashes are looked up in the stores the job would consult.

With ``calibrate`` the sample's rows are written as Parquet shards of the job's own average size
(so that windows, batches and per-shard work are as in the job) in a temporary directory, and
the job's own engine embeds them there with every option of the job (model, dtype, device,
batching, workers), no store and no progress bar. The rate is their tokens over the wall time
from the first shard's start to the last one's record; start-up (loading the model) is the rest
of the run's time, added once to a projection.
"""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from etl.config import CALIBRATE_ROWS, ESTIMATE_ROWS, JobConfig
from etl.contract import ShardStatus
from etl.errors import ConfigError, EmbedEtlError
from etl.figures import Figures
from etl.options import config_from_options
from etl.plan import JobPlan, plan_job
from etl.sampling import draw_sample, held_share, tokenizer_of

MAX_SAMPLE_SHARDS = 64  # --calibrate writes its rows as at most this many shards


class Estimate(Figures):
    """What a job will cost, as estimate_job finds it: its figures (what --json prints)."""

    def to_text(self) -> str:
        """What `plan --estimate` prints: rows, tokens, the stores' share, and with --calibrate,
        time (--json prints to_dict)."""
        found = self.figures
        lines = [
            f"inputs       {found['inputs']:,} shards ({found['shards_done']:,} done, "
            f"{found['shards_pending']:,} to do)",
            f"rows         {found['rows']:,} to do (from the footers)",
        ]
        if not found["rows"]:
            return "\n".join([*lines, "nothing to embed"])
        if found.get("chunk_tokens"):
            tokens = found["chunk_tokens"]
            long = f"{found['long_share']:.1%} in several passages of --chunk-tokens {tokens}"
        else:
            long = (
                f"{found['long_share']:.1%} over --max-length {found['max_length']}, "
                f"--long-text {found['long_text']}"
            )
        lines.append(
            f"tokens       {found['tokens']:,} ({found['tokens_per_row']:,} a row; "
            f"{found['sample_rows']:,} rows sampled in {found['sample_groups']} row groups; {long})"
        )
        held = found.get("stores_hold")
        if held is not None:
            lines.append(
                f"stores hold  {held['rows']:.1%} of the sampled rows, {held['tokens']:.1%} of "
                f"their tokens: {found['tokens_to_embed']:,} tokens to embed"
            )
        lines.append(f"model        {found['model']} on {found['device']}, {found['dtype']}")
        calibration = found.get("calibration")
        if calibration is None:
            lines.append("time         add --calibrate to time a sample on this machine")
            return "\n".join(lines)
        when = found["time"]
        lines += [
            f"calibrated   {calibration['rows']:,} rows, {calibration['tokens']:,} tokens in "
            f"{calibration['embedding_s']:,} s: {calibration['tokens_per_s']:,.0f} tokens/s "
            f"({calibration['rows_per_s']:,.0f} rows/s), start-up {calibration['startup_s']} s",
            f"time         {_duration(when['seconds'])} with these options "
            f"({_devices(found['device'], when['devices'])}); "
            f"{_duration(when['seconds_one_device'])} on one device, "
            f"{_duration(when['seconds_fleet'])} on {when['fleet']}",
            f"cost         {when['device_hours']:,} device-hours",
        ]
        return "\n".join(lines)


def estimate_options(
    options: dict[str, Any],
    sample_rows: int = ESTIMATE_ROWS,
    calibrate: bool = False,
    fleet: int = 8,
    calibrate_rows: int | None = None,
) -> Estimate:
    """estimate_job for options as a command line gives them (etl.options); without an
    ``output_dir``, a throwaway one (a job needs one; the estimate writes nothing under it)."""
    scratch = None if options.get("output_dir") else scratch_dir()
    try:
        output = options.get("output_dir") or os.path.join(str(scratch), "output")
        cfg = config_from_options(**{**options, "output_dir": output})
        return estimate_job(cfg, sample_rows, calibrate, fleet, calibrate_rows)
    finally:
        if scratch:
            remove_scratch(scratch)


def estimate_job(
    cfg: JobConfig,
    sample_rows: int = ESTIMATE_ROWS,
    calibrate: bool = False,
    fleet: int = 8,
    calibrate_rows: int | None = None,
) -> Estimate:
    """The job's cost (Estimate.to_text says how it reads). Writes nothing
    under --output; ``calibrate`` embeds ``calibrate_rows`` of the sample (None: CALIBRATE_ROWS
    on a CPU, all of it elsewhere) in a temporary directory."""
    plan = plan_job(cfg)
    pending = plan.pending
    result: dict[str, Any] = {
        "inputs": len(pending) + len(plan.done),
        "shards_pending": len(pending),
        "shards_done": len(plan.done),
        "rows": plan.total_rows,
        "model": plan.spec.model.name,
        "max_length": plan.spec.max_length,
        "long_text": plan.spec.long_text,
        "chunk_tokens": plan.spec.chunk_tokens,
        "device": plan.placement.device,
        "dtype": plan.spec.dtype,
    }
    if not pending or not plan.total_rows:
        return Estimate({**result, "tokens": 0, "tokens_to_embed": 0, "sample_rows": 0})
    tokenizer, layout = tokenizer_of(plan.spec, cfg.trust_remote_code)
    sample = draw_sample(pending, plan.spec, tokenizer, layout, sample_rows)
    tokens = sample.tokens(plan.total_rows, plan.text_bytes)
    held = held_share(plan, sample, tokenizer)
    to_embed = round(tokens * (1 - (held or {}).get("tokens", 0.0)))
    result.update(
        sample_rows=sample.table.num_rows,
        sample_groups=len(sample.group_rows),
        tokens_per_row=round(tokens / plan.total_rows, 2),
        tokens=tokens,
        long_share=round(sample.long_rows / max(1, sample.table.num_rows), 4),
        stores_hold=held,
        tokens_to_embed=to_embed,
    )
    if calibrate:
        if calibrate_rows is None:
            on_cpu = plan.placement.device == "cpu"
            calibrate_rows = CALIBRATE_ROWS if on_cpu else sample.table.num_rows
        if cfg.engine == "ray":
            raise ConfigError(
                "--calibrate: not with --engine ray (the sample is written on this machine); "
                "calibrate one node's device here, without --engine ray, and scale with --fleet"
            )
        timing = time_sample(cfg, plan, sample.table, calibrate_rows)
        if not timing["tokens"]:
            raise EmbedEtlError("--calibrate: the sample holds no text to time (all null?)")
        result["calibration"] = timing
        result["time"] = projected_time(timing, to_embed, max(1, len(cfg.devices)), fleet)
    return Estimate(result)


def projected_time(timing: dict[str, Any], tokens: int, devices: int, fleet: int) -> dict[str, Any]:
    """Seconds for ``tokens`` at the calibrated rate with these options (on ``devices``), on
    one device and on ``fleet`` (linear in devices: shards are independent), and the
    device-hours they take."""
    rate = timing["tokens_per_s"] / devices  # one device's share
    start = timing["startup_s"]
    return {
        "seconds": round(start + tokens / timing["tokens_per_s"], 1),
        "devices": devices,
        "seconds_one_device": round(start + tokens / rate, 1),
        "fleet": fleet,
        "seconds_fleet": round(start + tokens / (rate * fleet), 1),
        "device_hours": round(tokens / rate / 3600, 4),
    }


def time_sample(cfg: JobConfig, plan: JobPlan, table: pa.Table, most: int) -> dict[str, Any]:
    """Embed ``most`` rows of the sample ``table`` (evenly spread over it) with ``cfg``'s
    options; their rate in tokens a second, and the run's start-up."""
    from etl.job import run_job

    if table.num_rows > most:
        table = table.take(
            pa.array(np.linspace(0, table.num_rows - 1, most).round().astype(np.int64))
        )
    rows = table.num_rows
    if not rows:
        raise EmbedEtlError("--calibrate: the sample holds no rows to time")
    scratch = scratch_dir()
    try:
        inputs = Path(scratch) / "in"
        shards = write_sample(table, cfg, inputs, plan.total_rows / len(plan.pending))
        summary = run_job(scratch_config(cfg, str(inputs), str(Path(scratch) / "out")))
    finally:
        remove_scratch(scratch)
    done = [r for r in summary.shards if r.status == ShardStatus.DONE]
    failed = [r for r in summary.shards if r.status == ShardStatus.FAILED]
    if failed or not done:
        why = failed[0].error if failed else "no shard was embedded"
        raise EmbedEtlError(f"--calibrate: the sample could not be embedded: {why}")
    started = min(r.started_at for r in done if r.started_at is not None)
    wall = max(r.finished_at for r in done) - started
    tokens = sum(r.tokens for r in done)
    return {
        "rows": rows,
        "shards": shards,
        "tokens": tokens,
        "seconds": round(summary.seconds, 2),
        "embedding_s": round(wall, 2),
        "startup_s": round(max(0.0, summary.seconds - wall), 2),
        "tokens_per_s": round(tokens / wall, 1) if wall > 0 else float(tokens),
        "rows_per_s": round(rows / wall, 1) if wall > 0 else float(rows),
    }


def write_sample(table: pa.Table, cfg: JobConfig, where: Path, shard_rows: float) -> int:
    """The sample as Parquet shards of about ``shard_rows`` rows (the job's average), at most
    MAX_SAMPLE_SHARDS; returns how many."""
    where.mkdir(parents=True)
    table = table.select([0]).rename_columns([cfg.text_column])
    table = table.append_column(cfg.id_column, pa.array(range(table.num_rows), pa.int64()))
    count = min(MAX_SAMPLE_SHARDS, max(1, math.ceil(table.num_rows / max(1.0, shard_rows))))
    size = math.ceil(table.num_rows / count)
    for i in range(count):
        pq.write_table(table.slice(i * size, size), where / f"sample-{i:05d}.parquet")
    return count


def scratch_config(cfg: JobConfig, inputs: str, output: str) -> JobConfig:
    """``cfg`` on other inputs and output, consulting and keeping no store, showing no bar."""
    return dataclasses.replace(
        cfg,
        inputs=(inputs,),
        output_dir=output,
        keep_columns=(),
        overwrite=True,
        only_failed=False,
        shard_index=None,
        num_shards=None,
        store=None,
        reuse=(),
        no_reuse=True,
        progress=False,
    )


def scratch_dir() -> str:
    return tempfile.mkdtemp(prefix="embed-etl-estimate-")


def remove_scratch(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)


def _duration(seconds: float) -> str:
    hours, rest = divmod(round(seconds), 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m{seconds:02d}s" if hours else f"{minutes}m{seconds:02d}s"


def _devices(device: str, count: int) -> str:
    if device == "cpu":
        return "this machine's CPU"
    return f"{count} device{'s' if count > 1 else ''}, {device}"
