"""int8 calibration in a worker: the job's ranges fixed from the sample it is handed, in its
memory, through the job's own path (etl.calibrate is the driver's half, before the workers)."""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

import pyarrow as pa

from etl.errors import EmbedEtlError
from etl.spec import OutputSpec
from etl.stages.write.vectors import int8_ranges
from etl.state.calibration import Calibration, read_calibration, store_calibration
from etl.storage.base import Storage

log = logging.getLogger(__name__)


def calibrate_in_worker(worker: Any, storage: Storage, calibration: Calibration) -> OutputSpec:
    """The ``worker``'s (a ShardWorker's) spec with the job's int8 ranges: those another
    worker stored first, or its own, from the sample embedded in memory."""
    spec = worker.spec
    if calibration.ranges is not None:
        return dataclasses.replace(spec, calibration=calibration.ranges)
    data = read_calibration(storage)
    if data is None or data.get("fingerprint") != spec.fingerprint:
        texts = list(calibration.texts)
        log.info("int8: calibrating the ranges on %d sample rows", len(texts))
        fixed = {
            "fingerprint": spec.fingerprint,
            "source": spec.calibration_source,
            "model": spec.model.name,
            "model_config_sha256": spec.model.config_sha256,
            "normalize": spec.normalize,
            "dims": {c.name: spec.out_dim(c) for c in spec.columns},
            "rows": len(texts),
            "columns": _embed_sample(worker, spec, texts),
            "created_at": time.time(),
        }
        data = store_calibration(storage, fixed, replace=False)
    log.info("int8 ranges from %s (%s rows)", data["source"], data.get("rows", "?"))
    return dataclasses.replace(spec, calibration=data)


def _embed_sample(worker: Any, spec: OutputSpec, texts: list[str]) -> dict[str, dict]:
    """Embed the sample as float32 through the job's own path; per column min and max."""
    sample_spec = dataclasses.replace(
        spec,
        text_column="text",
        id_column="id",
        keep_columns=(),
        chunk_layout="rows",  # a vector a row (a passage with --chunk-tokens), not lists
        output_dtypes=("float32",),
        calibration_source=None,
        calibration=None,
    )
    table = pa.table({"id": pa.array(range(len(texts)), pa.int64()), "text": texts})
    try:
        embedded = worker.embed_table(table, sample_spec)
    except EmbedEtlError as exc:
        raise EmbedEtlError(f"int8 calibration sample: {exc}") from exc
    columns = {}
    for column in spec.columns:
        values = embedded.column(column.name).combine_chunks().flatten().to_numpy()
        columns[column.name] = int8_ranges(values.reshape(-1, spec.out_dim(column)))
    return columns
