"""What a run will do, decided before any model is loaded: inputs, output spec, what is left.

plan_job discovers the inputs, reads the model's facts, resolves the output spec and its
fingerprint, refuses an output made with other options, skips the shards already done and reads
the footers of the rest (a column missing from every input is a usage error here).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import pyarrow.parquet as pq

from etl.config import JobConfig
from etl.contract import Shard
from etl.errors import ConfigError, InputError, ModelError, OutputConflictError
from etl.figures import Figures
from etl.inputs import discover, partition
from etl.model.locate import resolve_model
from etl.model.runtime import require_safe_torch
from etl.reuse.plan import ReusePlan, plan_reuse
from etl.spec import METADATA_PREFIX, OutputSpec, build_output_spec
from etl.stages.read.source import check_columns
from etl.state.job_record import check_job_record
from etl.state.manifest import Manifest
from etl.storage import Storage, files, is_uri, open_storage

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Placement:
    """Where the models run, and the compute dtype that `--dtype auto` picks there."""

    device: str  # cpu, cuda, cuda:N, mps
    dtype: str  # float32, float16, bfloat16


@dataclass(frozen=True)
class JobPlan:
    """What a run will do, decided before any model is loaded."""

    cfg: JobConfig
    spec: OutputSpec
    placement: Placement
    storage: Storage  # the output location
    pending: tuple[Shard, ...]
    done: tuple[Shard, ...]
    total_rows: int  # rows in the pending shards, from their footers
    reuse: ReusePlan | None = None  # the vector stores consulted and added to (etl.reuse)
    calibration: Any = None  # etl.state.calibration.Calibration: int8 ranges the workers fix first
    total_tokens: int | None = None  # estimated where a progress bar shows them (engines' with_bar)
    text_bytes: int = 0  # the text column's uncompressed bytes in the pending shards (footers)


def local_placement(cfg: JobConfig) -> Placement:
    """The device the options name on this machine, and its dtype."""
    from etl.stages.compute.device import resolve_device, resolve_dtype

    device = resolve_device(cfg.devices[0] if cfg.devices else cfg.device)
    return Placement(str(device), resolve_dtype(cfg.dtype, device))


def plan_job(cfg: JobConfig, placement: Placement | None = None) -> JobPlan:
    """plan_at where the models run: ``placement``, or this machine's device the options name."""
    return plan_at(cfg, placement or local_placement(cfg))


def plan_at(cfg: JobConfig, placement: Placement) -> JobPlan:
    """Discover inputs, resolve the model's facts and the output spec, find what is left.

    ``placement`` is where the models run: this machine, or a Ray cluster (the engine's).
    Raises ConfigError, ModelError or OutputConflictError before anything is written.
    """
    require_safe_torch()  # before any model file is read
    shards = discover(cfg.inputs, cfg.output_dir)
    if cfg.num_shards is not None:
        shards = partition(shards, cfg.num_shards)[cfg.shard_index]
    model = resolve_model(cfg.model, cfg.task, cfg.prompt_name)
    if model.custom_code and not cfg.trust_remote_code:
        raise ModelError(
            f"--model {model.name}: its config.json maps it to code shipped with the model "
            f"(auto_map, model type {model.model_type}); pass --trust-remote-code if you trust it"
        )
    if not model.recipe.from_model and not cfg.poolings:
        log.info(
            "%s has no sentence-transformers configuration (modules.json): masked mean over "
            "the last layer, not normalized unless --normalize",
            model.name,
        )
    dtype = placement.dtype if cfg.dtype == "auto" else cfg.dtype
    spec = build_output_spec(cfg, model, dtype, placement.device.partition(":")[0])
    storage = open_storage(cfg.output_dir)
    storage.check()  # no bucket, no access: one clear line now, not a failed shard later
    if not storage.conditional:
        if cfg.workers > 1 or len(cfg.devices) > 1 or cfg.engine == "ray":
            raise ConfigError(
                f"--output {cfg.output_dir}: this store has no create-if-absent write, so "
                "workers cannot claim shards safely; run one process per part with "
                "--shard-index/--num-shards"
            )
        log.warning(
            "--output %s: this store has no create-if-absent write: claims cannot keep two "
            "processes apart; give each process its own part with --shard-index/--num-shards",
            cfg.output_dir,
        )
    if cfg.overwrite:
        pending, done = list(shards), []
    else:
        check_job_record(storage, spec, cfg.output_dir)
        pending, done = Manifest(storage).split(shards, spec.fingerprint, cfg.only_failed)
    total_rows, text_bytes, reuse = 0, 0, None
    if pending:
        if not cfg.overwrite:
            check_existing_outputs(pending, spec, storage)
        total_rows, text_bytes = preflight(pending, spec)
        reuse = plan_reuse(cfg, spec, storage)
    return JobPlan(
        cfg,
        spec,
        placement,
        storage,
        tuple(pending),
        tuple(done),
        total_rows,
        reuse,
        text_bytes=text_bytes,
    )


def check_existing_outputs(shards: list[Shard], spec: OutputSpec, storage: Storage) -> None:
    """An output file made with other options (say, the manifest was deleted) is not replaced."""
    key = (METADATA_PREFIX + "fingerprint").encode()
    for shard in shards:
        if not storage.exists(shard.output_key):
            continue
        try:
            with storage.open(shard.output_key) as handle:
                metadata = pq.read_schema(handle).metadata or {}
        except Exception:  # noqa: BLE001 - not one of ours, or damaged: it gets replaced
            continue
        found = metadata.get(key, b"").decode()
        if found and found != spec.fingerprint:
            raise OutputConflictError(
                f"{storage.uri(shard.output_key)} was made with other options (fingerprint "
                f"{found}, this run {spec.fingerprint}); use another --output, or --overwrite "
                "to replace it"
            )


def preflight(shards: list[Shard], spec: OutputSpec) -> tuple[int, int]:
    """Read every footer once; refuse a column that no readable shard has. Returns the rows,
    and the text column's uncompressed bytes (for etl.estimate), of the readable shards.

    A column missing from only some shards fails just those shards later, with the same message.
    """
    total = text_bytes = 0
    usable = False
    problem: InputError | None = None
    for shard in shards:
        try:
            metadata = read_footer(shard.input_path)
        except Exception:  # noqa: BLE001 - an unreadable shard fails on its own, later
            continue
        total += metadata.num_rows
        text_bytes += column_bytes(metadata, spec.text_column)
        if usable:
            continue
        try:
            check_columns(metadata.schema.to_arrow_schema(), shard.input_path, spec)
            usable = True
        except InputError as exc:
            problem = problem or exc
    if problem is not None and not usable:
        raise ConfigError(str(problem))
    return total, text_bytes


def column_bytes(metadata: pq.FileMetaData, column: str, group: int | None = None) -> int:
    """A top-level column's uncompressed bytes in the file (or in one row group), from the
    footer; 0 where it has no such column."""
    paths = [metadata.schema.column(i).path for i in range(metadata.num_columns)]
    if column not in paths:
        return 0
    at = paths.index(column)
    groups = range(metadata.num_row_groups) if group is None else (group,)
    return sum(metadata.row_group(g).column(at).total_uncompressed_size for g in groups)


class Parts(Figures):
    """Which input files each of num_shards parts gets: its figures (what --json prints)."""

    def to_text(self) -> str:
        """What `plan --num-shards N` prints: a line a part, its bytes and its input files."""
        lines = []
        for part in self.figures["parts"]:
            names = ", ".join(part["inputs"]) or "(nothing)"
            lines.append(f"part {part['shard_index']}: {part['bytes']:,} bytes: {names}")
        return "\n".join(lines)


def plan_parts(inputs: tuple[str, ...], num_shards: int, output_dir: str | None) -> Parts:
    """Which input files each of num_shards parts gets (what --shard-index I selects)."""
    if num_shards < 1:
        raise ConfigError(f"--num-shards: expected at least 1, got {num_shards}")
    shards = discover(inputs, output_dir)
    parts = []
    for index, part in enumerate(partition(shards, num_shards)):
        parts.append(
            {
                "shard_index": index,
                "inputs": [s.rel_name for s in part],
                "paths": [s.input_path for s in part],
                "bytes": sum(_size(s.input_path) for s in part),
            }
        )
    return Parts({"num_shards": num_shards, "total_inputs": len(shards), "parts": parts})


def _size(path: str) -> int:
    try:
        return files.info(path).size
    except OSError:
        return 0


def read_footer(path: str) -> pq.FileMetaData:
    """A shard's Parquet footer: a few KB read from its end, wherever it lives."""
    if not is_uri(path):
        return pq.read_metadata(path)
    with files.open_input(path) as handle:
        return pq.read_metadata(handle)
