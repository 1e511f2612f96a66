"""job.json: the fingerprint of the options that made an output, written once per job.

Two runs write into one output only if their fingerprints agree; a run with other options is
refused with what differs, unless --overwrite, which forgets the old records first.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from etl.config import JobConfig
from etl.errors import OutputConflictError
from etl.redact import redact
from etl.spec import OutputSpec
from etl.state.claims import ClaimBook
from etl.state.keys import JOB
from etl.state.manifest import Manifest
from etl.storage import Storage, is_uri
from etl.version import __version__


def job_record(spec: OutputSpec, cfg: JobConfig) -> dict[str, Any]:
    """What job.json holds: the fingerprint, what it is made of, and how to find the inputs."""
    return {
        "fingerprint": spec.fingerprint,
        "identity": spec.identity(),
        "model": spec.model.name,
        "inputs": [i if is_uri(i) else str(Path(i).expanduser().absolute()) for i in cfg.inputs],
        "options": vector_options(cfg),
        "created_at": time.time(),
        "version": __version__,
    }


# The JobConfig fields that decide the vectors: what `verify --recompute` runs the job's recipe
# with again.
VECTOR_OPTIONS = (
    "model",
    "text_column",
    "id_column",
    "keep_columns",
    "poolings",
    "layers",
    "normalize",
    "max_length",
    "long_text",
    "chunk_overlap",
    "max_text_bytes",
    "output_dtypes",
    "truncate_dim",
    "calibration_rows",
    "prompt",
    "prompt_name",
    "task",
    "sparse_top_k",
    "trust_remote_code",
)


def vector_options(cfg: JobConfig) -> dict[str, Any]:
    """The options that decide the vectors, a local model directory made absolute."""
    options = {name: getattr(cfg, name) for name in VECTOR_OPTIONS}
    model = cfg.model
    if model is not None and not is_uri(model) and Path(model).expanduser().is_dir():
        options["model"] = str(Path(model).expanduser().absolute())
    return {k: list(v) if isinstance(v, tuple) else v for k, v in options.items()}


def read_job(storage: Storage) -> dict[str, Any] | None:
    data = storage.read(JOB)
    if data is None:
        return None
    try:
        return json.loads(data)
    except ValueError:
        return None  # unreadable: as if absent


def record_job(storage: Storage, spec: OutputSpec, cfg: JobConfig) -> None:
    """Write job.json before the first output; a concurrent start with other options is
    refused here. --overwrite forgets the previous records first."""
    record = redact(json.dumps(job_record(spec, cfg), indent=1, sort_keys=True)).encode()
    if cfg.overwrite:
        Manifest(storage).clear()
        storage.put(JOB, record)
        return
    if storage.create(JOB, record):
        return
    existing = check_job_record(storage, spec, cfg.output_dir)
    if existing is None or existing.get("fingerprint") != spec.fingerprint:
        storage.put(JOB, record)  # the old record had no results behind it: replace it


def check_job_record(storage: Storage, spec: OutputSpec, output_dir: str) -> dict[str, Any] | None:
    """The output's job record (None without one); refused if its results were made with other
    options.

    A job record with nothing behind it (no shard recorded, no shard being worked on: say,
    the first attempt stopped at a model that did not load) does not count.
    """
    existing = read_job(storage)
    if existing is None or existing.get("fingerprint") == spec.fingerprint:
        return existing
    manifest = Manifest(storage)
    if not manifest.recorded() and not ClaimBook(manifest, "").running():
        return existing
    raise OutputConflictError(
        f"--output {output_dir} holds results made with another model, other options or other code "
        f"({describe_difference(existing.get('identity', {}), spec.identity())}); "
        "use another --output, or --overwrite to replace them"
    )


def describe_difference(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> str:
    """'normalize: false -> true; recipe.dense: ... -> ...' for the keys that differ, nested
    objects by their dotted path."""
    changed = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            changed.append(describe_difference(a, b, f"{prefix}{key}."))
        else:
            changed.append(f"{prefix}{key}: {_short(a)} -> {_short(b)}")
    return "; ".join(changed) or "fingerprint differs"


def _short(value: Any) -> str:
    text = (
        "none" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
    )
    return text if len(text) <= 60 else text[:28] + "…" + text[-28:]
