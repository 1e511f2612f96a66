"""Resume: decide what is left to do in an output directory, and refuse to mix configurations."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from etl import __version__
from etl.config import JobConfig
from etl.contract import OutputSpec, Shard
from etl.errors import OutputConflictError
from etl.manifest import ManifestStore
from etl.sink import METADATA_PREFIX

log = logging.getLogger(__name__)


def job_record(spec: OutputSpec, cfg: JobConfig) -> dict[str, Any]:
    """What job.json holds: the fingerprint, what it is made of, and how to find the inputs."""
    return {
        "fingerprint": spec.fingerprint,
        "identity": spec.identity(),
        "model": spec.model.name,
        "inputs": [str(Path(i).expanduser().absolute()) for i in cfg.inputs],
        "created_at": time.time(),
        "version": __version__,
    }


def check_job_record(
    existing: dict[str, Any] | None, spec: OutputSpec, output_dir: str, store: ManifestStore
) -> None:
    """Refuse an output directory whose results were made with other options.

    A job record with nothing behind it (no shard recorded, no shard being worked on: say,
    the first attempt stopped at a model that did not load) does not count.
    """
    if existing is None or existing.get("fingerprint") == spec.fingerprint:
        return
    if not store.records() and not _anyone_working(store):
        return
    raise OutputConflictError(
        f"--output {output_dir} holds results made with other options "
        f"({describe_difference(existing.get('identity', {}), spec.identity())}); "
        "use another --output, or --overwrite to replace them"
    )


def _anyone_working(store: ManifestStore) -> bool:
    from etl.claims import ClaimBook

    return bool(ClaimBook(store.claims_dir, store, "").running())


def describe_difference(old: dict[str, Any], new: dict[str, Any]) -> str:
    """'normalize: false -> true; max_length: 256 -> 128' for the keys that differ."""
    changed = [
        f"{key}: {_short(old.get(key))} -> {_short(new.get(key))}"
        for key in sorted(set(old) | set(new))
        if old.get(key) != new.get(key)
    ]
    return "; ".join(changed) or "fingerprint differs"


def _short(value: Any) -> str:
    text = (
        "none" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
    )
    return text if len(text) <= 60 else text[:28] + "…" + text[-28:]


def select_pending(
    shards: list[Shard], store: ManifestStore, spec: OutputSpec, cfg: JobConfig
) -> tuple[list[Shard], list[Shard]]:
    """Split shards into (to do, already done). --only-failed keeps just the failed ones."""
    if cfg.overwrite:
        return list(shards), []
    pending, done = [], []
    for shard in shards:
        if store.is_done(shard, spec.fingerprint):
            done.append(shard)
        elif not cfg.only_failed or store.is_failed(shard):
            pending.append(shard)
    return pending, done


def check_existing_outputs(shards: list[Shard], spec: OutputSpec, output_dir: str) -> None:
    """An output file made with other options (say, the manifest was deleted) is not replaced."""
    key = (METADATA_PREFIX + "fingerprint").encode()
    for shard in shards:
        path = Path(shard.output_path)
        if not path.exists():
            continue
        try:
            metadata = pq.read_schema(path).metadata or {}
        except Exception:  # noqa: BLE001 - not one of ours, or damaged: it gets replaced
            continue
        found = metadata.get(key, b"").decode()
        if found and found != spec.fingerprint:
            raise OutputConflictError(
                f"{path} was made with other options (fingerprint {found}, this run "
                f"{spec.fingerprint}); use another --output, or --overwrite to replace it"
            )
