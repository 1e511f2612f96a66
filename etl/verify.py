"""embed-etl verify: read the outputs back and check each against its input and the job.

Per shard: every input row once, in input order (ids compared by position, nulls and duplicates
included); row counts equal to the manifest's; every vector column of the type and width the
job's fingerprint promises; no NaN or infinity; unit length where the job normalized (within
NORM_TOLERANCE); null vectors exactly where the text was null (or over --max-text-bytes); the
file's fingerprint the job's. polars scans only the columns it needs, with its streaming
engine, one shard at a time, so memory does not grow with the corpus (a URI one row group at a
time, through the storage the job used for it); --sample checks vectors on a fraction of the
rows (every id is still checked).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from etl.contract import Shard
from etl.errors import ConfigError, EmbedEtlError
from etl.inputs import discover
from etl.recompute import RecomputeReport
from etl.redact import recorded_inputs
from etl.spec import METADATA_PREFIX
from etl.stages.read.source import parquet_file
from etl.stages.write.vectors import arrow_type, sparse_type
from etl.state.job_record import read_job
from etl.state.manifest import DoneIndex, Manifest, shard_done
from etl.storage import Storage, is_uri, open_storage
from etl.verify_passages import check_passages, nested, unnested
from etl.verify_values import NORM_TOLERANCE, check_values


@dataclass
class ShardCheck:
    """One shard: its rows and what is wrong with it (nothing, if ``problems`` is empty)."""

    input: str
    rows: int = 0
    problems: list[str] = field(default_factory=list)


@dataclass
class VerifyReport:
    """What `verify` found: each shard's problems, and the recomputed sample's comparison."""

    output_dir: str
    fingerprint: str
    sample: float
    shards: list[ShardCheck] = field(default_factory=list)
    seconds: float = 0.0
    recompute: RecomputeReport | None = None  # --recompute N: the sample embedded again

    @property
    def ok(self) -> bool:
        if self.recompute is not None and not self.recompute.ok:
            return False
        return not any(s.problems for s in self.shards)

    def to_dict(self) -> dict[str, Any]:
        bad = [s for s in self.shards if s.problems]
        return {
            "status": "ok" if self.ok else "failed",
            "output": self.output_dir,
            "fingerprint": self.fingerprint,
            "shards": len(self.shards),
            "rows": sum(s.rows for s in self.shards),
            "shards_with_problems": len(bad),
            "sample": self.sample,
            "norm_tolerance": NORM_TOLERANCE,
            "seconds": round(self.seconds, 3),
            "problems": [{"input": s.input, "problems": s.problems} for s in bad],
            **({"recompute": self.recompute.to_dict()} if self.recompute is not None else {}),
        }

    def to_text(self) -> str:
        """What `embed-etl verify` prints: the shards checked, each one's problems, the
        recomputed sample (--json prints to_dict)."""
        bad = [s for s in self.shards if s.problems]
        rows = sum(s.rows for s in self.shards)
        lines = [
            f"output   {self.output_dir}  (fingerprint {self.fingerprint})",
            f"checked  {len(self.shards)} shards, {rows:,} rows in {round(self.seconds, 3)} s"
            + (f", vectors on {self.sample:.0%} of the rows" if self.sample < 1 else ""),
        ]
        if bad:
            lines += ["", f"{len(bad)} shards with problems:"]
            for shard in bad:
                lines += [f"  {shard.input}"] + [f"    {p}" for p in shard.problems]
        else:
            lines.append("every shard checks out")
        if self.recompute is not None:
            lines += ["", self.recompute.to_text()]
        return "\n".join(lines)


def verify_job(
    output_dir: str,
    inputs: tuple[str, ...] = (),
    sample: float = 1.0,
    recompute: int = 0,
    device: str = "auto",
    trust_remote_code: bool = False,
    model: str | None = None,
) -> VerifyReport:
    """Check every shard of the job in ``output_dir`` (inputs default to the job's own); with
    ``recompute``, embed that many sampled rows again and compare them with the stored ones:
    with the job's model, or ``model`` (a local copy of it), running the model's own code only
    if ``trust_remote_code`` (the caller's consent, never the job record's)."""
    if not 0 < sample <= 1:
        raise ConfigError(f"--sample {sample}: expected a fraction in (0, 1]")
    if recompute < 0:
        raise ConfigError(f"--recompute {recompute}: expected a number of rows, 0 or more")
    if not recompute and (model is not None or trust_remote_code):
        option = "--model" if model is not None else "--trust-remote-code"
        raise ConfigError(f"{option}: only with --recompute N (nothing is embedded without it)")
    started = time.perf_counter()
    storage = open_storage(output_dir)
    storage.check()
    job = read_job(storage)
    if job is None:
        raise ConfigError(f"--output {output_dir}: no embed-etl job found there")
    if recompute and job["identity"].get("passages") is not None:
        raise ConfigError(
            f"--recompute: {output_dir} holds passages (--chunk-tokens), which it cannot embed "
            "again yet; verify without it checks them"
        )
    report = VerifyReport(output_dir, job["fingerprint"], sample)
    manifest = Manifest(storage)
    index = manifest.done_index()  # the plan's rule for "done", from the same two listings
    shards = discover(recorded_inputs(job, tuple(inputs)), output_dir)
    for shard in shards:
        check = ShardCheck(shard.rel_name)
        try:
            _check_shard(shard, storage, index, job, sample, check)
        except (OSError, pa.ArrowException, EmbedEtlError) as exc:
            check.problems.append(f"cannot read: {exc}")
        report.shards.append(check)
    whole = [s for s, c in zip(shards, report.shards, strict=True) if not c.problems]
    if recompute and whole:
        from etl.recompute import Trust
        from etl.recompute import recompute as embed_again

        trust = Trust(trust_remote_code, model)
        report.recompute = embed_again(job, storage, whole, recompute, device, trust)
    report.seconds = time.perf_counter() - started
    return report


def _check_shard(
    shard: Shard,
    storage: Storage,
    index: DoneIndex,
    job: dict,
    sample: float,
    check: ShardCheck,
) -> None:
    import polars as pl

    identity = job["identity"]
    if not storage.exists(shard.output_key):
        check.problems.append("no output file")
        return
    output = storage.uri(shard.output_key)
    try:
        footer = pq.read_metadata(output if not is_uri(output) else storage.open(shard.output_key))
    except (OSError, pa.ArrowException) as exc:
        check.problems.append(f"not a readable Parquet file: {exc}")
        return
    check.rows = footer.num_rows
    meta = footer.metadata or {}
    found = meta.get((METADATA_PREFIX + "fingerprint").encode(), b"").decode()
    if found != job["fingerprint"]:
        check.problems.append(f"made by another job: fingerprint {found or 'none'}")
    input_rows = parquet_file(shard.input_path).metadata.num_rows
    done = shard_done(shard, job["fingerprint"], index)
    if done is None:
        check.problems.append("not done: no done record of this job for its input as it is now")
    recorded = done.rows if done is not None else None
    passages = identity.get("passages") is not None  # --chunk-tokens: a row per passage
    per_passage = passages and not nested(identity)
    if not footer.num_rows == (recorded if per_passage else input_rows) == recorded:
        check.problems.append(
            f"rows: input {input_rows}, output {footer.num_rows}, manifest {recorded}"
        )
    schema = footer.schema.to_arrow_schema()
    columns = _vector_columns(identity, schema, check)
    if passages:
        check.problems += check_passages(shard.input_path, output, identity, list(columns), _scan)
        for name, kind in columns.items():  # nested: each list of vectors, a vector a row
            scan = _scan(output).select(unnested(name, identity))
            check.problems += check_values(scan, {name: kind}, identity, sample)
        return
    id_col, text_col = identity["id_column"], identity["text_column"]
    # A text over --max-text-bytes gets null vectors, as a null text does.
    limit = identity.get("max_text_bytes")
    no_text = pl.col(text_col).is_null()
    if limit is not None:
        size = pl.col(text_col).cast(pl.String).str.len_bytes()  # a dictionary column too
        no_text = no_text | (size > limit).fill_null(False)
    source = _scan(shard.input_path).select(
        pl.col(id_col).alias("in_id"), no_text.alias("null_text")
    )
    out = _scan(output).select(pl.col(id_col).alias("out_id"), *map(pl.col, columns))
    common = min(input_rows, footer.num_rows)  # ids are compared position by position
    joined = pl.concat([source.slice(0, common), out.slice(0, common)], how="horizontal")
    moved = pl.col("in_id").ne_missing(pl.col("out_id"))
    checks = [moved.sum().alias("moved"), moved.arg_max().alias("first_moved")]
    for name in columns:
        checks.append((pl.col("null_text") != pl.col(name).is_null()).sum().alias(f"{name}:null"))
    counts = joined.select(checks).collect(engine="streaming").row(0, named=True)
    if counts["moved"]:
        check.problems.append(
            f"ids out of place: {counts['moved']} rows differ from the input by position, "
            f"the first at row {counts['first_moved']}"
        )
    for name in columns:
        if counts[f"{name}:null"]:
            check.problems.append(
                f"{name}: {counts[f'{name}:null']} rows null where the text is not (nor over "
                "--max-text-bytes), or not null where it is"
            )
    problems = check_values(_scan(output), columns, identity, sample)
    check.problems += problems


def _scan(location: str) -> Any:
    """A lazy polars scan: of a local file by polars itself; of a URI one row group at a time
    from the storage the job reads and writes that store with (one client, no second one)."""
    import polars as pl
    from polars.io.plugins import register_io_source

    if not is_uri(location):
        return pl.scan_parquet(location)
    parquet = parquet_file(location)
    schema = pl.from_arrow(parquet.schema_arrow.empty_table()).schema

    def row_groups(columns: list[str] | None, predicate: Any, n_rows: int | None, _: Any) -> Any:
        left = n_rows
        for group in range(parquet.num_row_groups):
            if left is not None and left <= 0:
                return
            frame = pl.from_arrow(parquet.read_row_group(group, columns=columns))
            if predicate is not None:
                frame = frame.filter(predicate)
            if left is not None:
                frame = frame.head(left)
                left -= frame.height
            yield frame

    return register_io_source(row_groups, schema=schema)


def _vector_columns(
    identity: dict, schema: pa.Schema, check: ShardCheck
) -> dict[str, tuple[str, str]]:
    """The output's vector columns: (stored dtype, pooling), each checked against the job."""
    dtypes = identity.get("output_dtypes") or [identity["output_dtype"]]
    columns = {}
    for column in identity["columns"]:
        for dtype in dtypes:
            name = column["name"] if len(dtypes) == 1 else f"{column['name']}_{dtype}"
            expected = _expected_type(column, dtype, identity)
            if name not in schema.names:
                check.problems.append(f"{name}: no such column")
                continue
            if not schema.field(name).type.equals(expected):
                check.problems.append(f"{name}: {schema.field(name).type}, expected {expected}")
                continue
            columns[name] = (dtype, column["pooling"])
    return columns


def _expected_type(column: dict, dtype: str, identity: dict) -> pa.DataType:
    """The sink's own type for the column; --chunk-layout nested: a list of it."""
    width = min(identity.get("truncate_dim") or column["dim"], column["dim"])
    kind = sparse_type(dtype) if column["pooling"] == "sparse" else arrow_type(dtype, width)
    kind = pa.list_(kind) if column["pooling"] == "tokens" else kind
    return pa.list_(kind) if nested(identity) else kind
