"""embed-etl verify --recompute N: embed N sampled rows again with the job's recipe, compare.

A vector copied from a store is trusted by its text's hash and the store's recipe; a store
damaged on disk, or written by a buggy or tampered tool under the same recipe, would go
unnoticed. Recomputing a sample through the model (never through a store) catches it: per
column, the sample's lowest cosine to the stored vectors and the largest difference, against a
floor that ordinary recomputation clears by orders of magnitude (batches of other shapes change
float32 vectors by about 1e-6).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from etl.config import JobConfig
from etl.contract import Shard
from etl.errors import ConfigError, EmbedEtlError, ModelError
from etl.model.locate import resolve_model
from etl.spec import OutputSpec, build_output_spec
from etl.stages.read.source import parquet_file, plain_text
from etl.stages.write.vectors import dequantize_int8
from etl.state.calibration import read_calibration
from etl.state.job_record import describe_difference
from etl.storage import Storage

SEED = 20261202
# Lowest cosine a recomputed vector may have to the stored one, by how it was made and stored.
FLOORS = {"exact": 0.99999, "half": 0.999, "float16": 0.999, "int8": 0.99, "binary": 0.9}


@dataclass(frozen=True)
class Trust:
    """What the verifier allows, from its own command line: running the model's own code, and
    the model to load in place of the one job.json names (a local copy of it)."""

    remote_code: bool = False
    model: str | None = None


@dataclass
class ColumnCheck:
    name: str
    rows: int
    min_cosine: float
    max_abs_diff: float | None  # float columns: largest |stored - recomputed|
    floor: float

    @property
    def ok(self) -> bool:
        return self.min_cosine >= self.floor


@dataclass
class RecomputeReport:
    rows: int = 0
    columns: list[ColumnCheck] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and all(c.ok for c in self.columns)

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "columns": [{**dataclasses.asdict(c), "ok": c.ok} for c in self.columns],
            "problems": self.problems,
        }

    def to_text(self) -> str:
        """The lines `embed-etl verify` prints for it: each column's lowest cosine and verdict."""
        lines = [f"recomputed {self.rows} sampled rows with the job's recipe:"]
        for c in self.columns:
            diff = f", max |diff| {c.max_abs_diff:.2e}" if c.max_abs_diff is not None else ""
            verdict = "ok" if c.ok else f"DIFFERS (floor {c.floor})"
            lines.append(f"  {c.name}: min cosine {c.min_cosine:.6f}{diff}: {verdict}")
        return "\n".join(lines + [f"  {p}" for p in self.problems])


def recompute(
    job: dict[str, Any],
    storage: Storage,
    shards: list[Shard],
    count: int,
    device: str = "auto",
    trust: Trust | None = None,
) -> RecomputeReport:
    """Embed ``count`` rows sampled over the shards again and compare them with the outputs,
    with the verifier's own trust (never the job record's)."""
    cfg, spec = _recipe(job, storage, device, trust or Trust())
    report = RecomputeReport()
    sampled = _sample(shards, storage, spec, count)
    if not sampled:
        report.problems.append("no row with a text to recompute")
        return report
    texts = pa.concat_arrays([s.column("text").combine_chunks() for s in sampled.values()])
    stored = pa.concat_tables([s.drop_columns(["text"]) for s in sampled.values()])
    fresh = _embed(cfg, spec, texts)
    report.rows = len(texts)
    if fresh.column("n_tokens").to_pylist() != stored.column("n_tokens").to_pylist():
        report.problems.append("n_tokens: the stored token counts are not those of the texts")
    ranges = (spec.calibration or {}).get("columns", {})
    for column in spec.columns:
        if column.tokens:
            continue
        for name, dtype in spec.stored(column):
            width = column.dim if column.sparse else None
            a = _values(stored.column(name), dtype, ranges.get(column.name), width)
            b = _values(fresh.column(name), dtype, ranges.get(column.name), width)
            norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
            cosine = (a * b).sum(1) / np.maximum(norms, 1e-30)
            # Two empty vectors (a sparse row with no weight) are the same vector.
            cosine[(norms == 0) & ~(a != b).any(axis=1)] = 1.0
            floor = FLOORS.get(dtype) or FLOORS["exact" if spec.dtype == "float32" else "half"]
            diff = float(np.abs(a - b).max()) if dtype in ("float32", "float16") else None
            report.columns.append(ColumnCheck(name, len(a), float(cosine.min()), diff, floor))
    return report


def _recipe(
    job: dict[str, Any], storage: Storage, device: str, trust: Trust
) -> tuple[JobConfig, OutputSpec]:
    """The job's options and output spec, as the job ran them, or why they cannot be. Whoever
    wrote job.json chose its model; only the verifier decides whether that model's own code may
    run here (``trust``), and may name a local copy of it (checked against the job's identity)."""
    options = job.get("options")
    if not isinstance(options, dict):
        raise ConfigError(
            f"--recompute: {storage.uri()}: its job.json has no options (made by embed-etl "
            "before 0.3); rerun the job to record them"
        )
    listed = {k: tuple(v) if isinstance(v, list) else v for k, v in options.items()}
    listed.pop("trust_remote_code", None)  # the record's word is not the verifier's consent
    if trust.model is not None:
        listed["model"] = trust.model
    identity = job["identity"]
    cfg = JobConfig(
        inputs=tuple(job.get("inputs", ())) or ("-",),
        output_dir=storage.uri(),
        device=device,
        dtype=identity["dtype"],
        num_workers=0,
        progress=False,
        no_reuse=True,
        trust_remote_code=trust.remote_code,
        **listed,
    )
    model = resolve_model(cfg.model, cfg.task, cfg.prompt_name)
    if model.custom_code and not trust.remote_code:
        raise ModelError(
            f"--recompute: the job's model {model.name} ships its own Python code (auto_map in "
            "its config.json); verify runs it only with --trust-remote-code, which a job record "
            "cannot give"
        )
    spec = build_output_spec(cfg, model, identity["dtype"])
    # Another device, or this machine's versions of embed-etl and its libraries, may run other
    # code (the values are compared within tolerances for that); int8 ranges are the job's own,
    # read from its calibration.json.
    ignore = {"backend", "code", "calibration"}
    theirs = {k: v for k, v in identity.items() if k not in ignore}
    ours = {k: v for k, v in spec.identity().items() if k not in ignore}
    if theirs != ours:
        named = f"--model {trust.model} is not the job's model" if trust.model else None
        raise ConfigError(
            f"--recompute: {named or 'the model or its files changed since the job ran'} "
            f"({describe_difference(theirs, ours)}); cannot run its recipe again"
        )
    if spec.int8:
        spec = dataclasses.replace(spec, calibration=read_calibration(storage))
    return cfg, spec


def _sample(
    shards: list[Shard], storage: Storage, spec: OutputSpec, count: int
) -> dict[str, pa.Table]:
    """Rows spread over every output by a fixed seed: their texts and stored columns."""
    sizes = [parquet_file(storage.uri(s.output_key)).metadata.num_rows for s in shards]
    total = sum(sizes)
    picks = np.sort(np.random.default_rng(SEED).choice(total, min(count, total), replace=False))
    starts = np.cumsum([0, *sizes])
    names = ["n_tokens", *(n for c in spec.columns if not c.tokens for n, _ in spec.stored(c))]
    sampled = {}
    for i, shard in enumerate(shards):
        rows = picks[(picks >= starts[i]) & (picks < starts[i + 1])] - starts[i]
        if not len(rows):
            continue
        text = _take(shard.input_path, [spec.text_column], rows).column(0)
        table = _take(storage.uri(shard.output_key), names, rows).append_column("text", text)
        # Null texts, and texts over --max-text-bytes, have null vectors: nothing to recompute.
        sizes = pc.binary_length(plain_text(table.column("text").combine_chunks()))
        table = table.filter(pc.fill_null(pc.less_equal(sizes, spec.max_text_bytes), False))
        if table.num_rows:
            sampled[shard.rel_name] = table
    return sampled


def _take(location: str, columns: list[str], rows: np.ndarray) -> pa.Table:
    """Rows (sorted positions) of a Parquet file, reading only the row groups that hold them."""
    parquet = parquet_file(location)
    meta = parquet.metadata
    starts = np.cumsum([0, *(meta.row_group(g).num_rows for g in range(meta.num_row_groups))])
    groups = np.searchsorted(starts, rows, side="right") - 1
    parts = [
        parquet.read_row_group(int(g), columns=columns).take(rows[groups == g] - starts[g])
        for g in np.unique(groups)
    ]
    return pa.concat_tables(parts)


def _embed(cfg: JobConfig, spec: OutputSpec, texts: pa.Array) -> pa.Table:
    """The texts through the job's own path (tokenizer, model, pooling, encoding), no store."""
    from etl.worker.settings import worker_settings
    from etl.worker.shard_worker import ShardWorker

    ids = pa.array(np.arange(len(texts)), pa.int64())
    sample_spec = dataclasses.replace(spec, keep_columns=())
    worker = ShardWorker(worker_settings(cfg, cfg.device, cfg.threads), sample_spec)
    try:
        return worker.embed_table(
            pa.table({spec.id_column: ids, spec.text_column: texts}), sample_spec
        )
    except EmbedEtlError as exc:
        raise EmbedEtlError(f"--recompute: the sample failed: {exc}") from exc


def _values(
    column: pa.ChunkedArray, dtype: str, ranges: dict | None, vocab: int | None = None
) -> np.ndarray:
    """(N, D) float32 of a stored vector column: decoded int8, sign bits as +-1, a sparse
    column (``vocab`` wide) made dense for the few rows sampled."""
    flat = column.combine_chunks()
    if vocab is not None:
        counts = flat.value_lengths().fill_null(0).to_numpy(zero_copy_only=False)
        pairs = flat.flatten()
        dense = np.zeros((len(flat), vocab), np.float32)
        rows = np.repeat(np.arange(len(flat)), counts)
        index = pairs.field("index").to_numpy(zero_copy_only=False)
        dense[rows, index] = pairs.field("value").to_numpy(zero_copy_only=False)
        return dense
    width = flat.type.list_size
    values = flat.flatten().to_numpy(zero_copy_only=False).reshape(-1, width)
    if dtype == "int8":
        return dequantize_int8(values, ranges)
    if dtype == "binary":
        return np.unpackbits(values, axis=1).astype(np.float32) * 2 - 1
    return values.astype(np.float32)
