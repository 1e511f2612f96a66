"""int8 ranges, fixed once per job so that every shard of a corpus is quantized alike.

The ranges are each dimension's min and max over a calibration sample: rows taken from the
job's inputs (the first rows of up to 64 shards spread over the sorted list; the same sample
whichever part of the job runs first), or the texts of a Parquet file given with
--calibration, or the ranges of another job (its calibration.json). The sample goes through the
job's own path (tokenizer, model, pooling, chunking, --truncate-dim, --normalize) inside a
worker, in its memory, so the ranges are those of the vectors actually stored. The result
lives in ``<output>/_embed_etl/calibration.json`` and in every file's metadata; later runs of
the same job read it back instead of sampling again.

This is the driver's half, before the workers run (no model: an existing calibration.json,
another job's ranges, or the sample's texts to hand to the workers); the worker's half is
etl.worker.calibration: each worker handed texts embeds them, the first to store its ranges
wins (create-if-absent), and every worker uses the stored ones. Engines know nothing of it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from typing import TYPE_CHECKING, Any

import numpy as np

from etl.config import JobConfig
from etl.errors import ConfigError, EmbedEtlError
from etl.inputs import discover
from etl.spec import OutputSpec
from etl.stages.read.source import parquet_file, text_values
from etl.state.calibration import (
    Calibration,
    forget_calibration,
    read_calibration,
    store_calibration,
)
from etl.storage.files import open_input, read_bytes

if TYPE_CHECKING:
    from etl.plan import JobPlan

log = logging.getLogger(__name__)

SAMPLE_SHARDS = 64  # the sample reads the head of at most this many shards


def with_calibration(plan: JobPlan) -> JobPlan:
    """The plan with its spec's int8 ranges set, or with the sample the workers fix them
    from (a no-op for other output dtypes). Loads no model."""
    spec, cfg = plan.spec, plan.cfg
    if not spec.int8:
        return plan
    given = cfg.calibration
    # Another job's ranges, checked against this job first: a small JSON file (its content is
    # in the fingerprint: the spec read it whole already); a Parquet sample costs 4 bytes here.
    from_file = _from_ranges_file(given, spec) if given and not _is_parquet(given) else None
    existing = read_calibration(plan.storage)
    if existing and existing.get("fingerprint") == spec.fingerprint and not cfg.overwrite:
        data = existing
    elif from_file is not None:
        data = store_calibration(plan.storage, from_file, cfg.overwrite)
    else:
        texts = _sample_file(given, cfg) if given else _sample_inputs(cfg)
        if not texts:
            raise EmbedEtlError(
                f"--output-dtype int8: no non-null {cfg.text_column!r} texts to calibrate the "
                f"ranges from in {given or 'the inputs'}"
            )
        if cfg.overwrite:
            forget_calibration(plan.storage)  # so that the workers' first ranges win again
        return dataclasses.replace(plan, calibration=Calibration(texts=tuple(texts)))
    log.info("int8 ranges from %s (%s rows)", data["source"], data.get("rows", "?"))
    spec = dataclasses.replace(spec, calibration=data)
    return dataclasses.replace(plan, spec=spec, calibration=Calibration(ranges=data))


def _is_parquet(path: str) -> bool:
    try:
        with open_input(path) as handle:
            return handle.read(4) == b"PAR1"
    except OSError:
        return False  # _from_ranges_file says it cannot be read


def _from_ranges_file(path: str, spec: OutputSpec) -> dict[str, Any]:
    """Ranges of another job: same model, dimensions, normalization and columns, or refused."""
    try:
        data = json.loads(read_bytes(path))
    except (OSError, ValueError):
        data = None
    if not isinstance(data, dict) or "columns" not in data:
        raise ConfigError(
            f"--calibration {path}: expected a calibration.json written by embed-etl "
            "(under another output's _embed_etl/), or a Parquet file of sample texts"
        )
    wanted = {
        "model_config_sha256": spec.model.config_sha256,
        "dims": {c.name: spec.out_dim(c) for c in spec.columns},
        "normalize": spec.normalize,
    }
    for key, value in wanted.items():
        if data.get(key) != value:
            raise ConfigError(
                f"--calibration {path}: made with {key} {data.get(key)!r}, this job has {value!r}"
            )
    missing = [c.name for c in spec.columns if c.name not in data["columns"]]
    if missing:
        raise ConfigError(f"--calibration {path}: no ranges for column(s) {', '.join(missing)}")
    columns = {c.name: data["columns"][c.name] for c in spec.columns}
    return {
        **data,
        "fingerprint": spec.fingerprint,
        "source": spec.calibration_source,
        "columns": columns,
        "from_file": str(path),
    }


def _sample_inputs(cfg) -> list[str]:
    """The first rows of up to SAMPLE_SHARDS shards, spread evenly over all of the job's inputs."""
    shards = discover(cfg.inputs, cfg.output_dir)  # every part of the job: one sample for all
    picks = sorted(
        {round(i) for i in np.linspace(0, len(shards) - 1, min(SAMPLE_SHARDS, len(shards)))}
    )
    per_shard = math.ceil(cfg.calibration_rows / len(picks))
    texts: list[str] = []
    for i in picks:
        try:
            texts += _head_texts(shards[i].input_path, cfg, per_shard)
        except Exception as exc:  # noqa: BLE001 - a bad shard fails later, on its own
            log.warning("calibration sample: skipping %s: %s", shards[i].input_path, exc)
    return texts[: cfg.calibration_rows]


def _sample_file(path: str, cfg) -> list[str]:
    try:
        return _head_texts(path, cfg, cfg.calibration_rows)
    except Exception as exc:
        raise ConfigError(
            f"--calibration {path}: cannot read column {cfg.text_column!r}: {exc}"
        ) from exc


def _head_texts(path: str, cfg: JobConfig, rows: int) -> list[str]:
    """The first ``rows`` texts of a file that the job embeds (not null, nor over
    --max-text-bytes)."""
    texts: list[str] = []
    columns = [cfg.text_column]
    for batch in parquet_file(path).iter_batches(batch_size=min(rows, 8192), columns=columns):
        texts += [t for t in text_values(batch.column(0), cfg.max_text_bytes) if t is not None]
        if len(texts) >= rows:
            break
    return texts[:rows]
