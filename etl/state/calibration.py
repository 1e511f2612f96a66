"""calibration.json: the int8 ranges of a job, fixed by its first run, read by every later one."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from typing import Any

from etl.state.keys import CALIBRATION, scratch_prefix
from etl.storage.base import Storage


def read_calibration(storage: Storage) -> dict[str, Any] | None:
    data = storage.read(CALIBRATION)
    if data is None:
        return None
    try:
        return json.loads(data)
    except ValueError:
        return None


def store_calibration(storage: Storage, data: dict[str, Any], replace: bool) -> dict[str, Any]:
    """Write calibration.json; of two processes starting at once the first one's ranges win.

    Returns the ranges the job must use: ours, or those another process of the same job
    stored first.
    """
    payload = json.dumps(data, indent=1, sort_keys=True).encode()
    if not replace:
        if storage.create(CALIBRATION, payload):
            return data
        existing = read_calibration(storage)
        if existing is not None and existing.get("fingerprint") == data["fingerprint"]:
            return existing  # another process of this job got there first: use its ranges
    storage.put(CALIBRATION, payload)  # --overwrite, or left by a job with other options
    return data


@contextlib.contextmanager
def calibration_scratch(storage: Storage, sample: bytes) -> Iterator[tuple[str, Storage]]:
    """A scratch folder under the output (so every worker sees it, on any node) holding the
    sample as a Parquet input: yields (its path, a storage for the sample's output); removed
    on the way out."""
    prefix = scratch_prefix(f"calibration-{os.getpid()}")
    storage.delete_prefix(prefix)
    try:
        storage.put(f"{prefix}/in/sample.parquet", sample)
        yield storage.uri(f"{prefix}/in/sample.parquet"), storage.child(f"{prefix}/out")
    finally:
        storage.delete_prefix(prefix)
