"""calibration.json: the int8 ranges of a job, fixed by its first run, read by every later one."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from etl.state.keys import CALIBRATION
from etl.storage.base import Storage


@dataclass(frozen=True)
class Calibration:
    """The job's int8 ranges for the workers: fixed already, or the sample to fix them from."""

    ranges: dict[str, Any] | None = None  # calibration.json's content
    texts: tuple[str, ...] = ()  # the sample, for the workers to embed (when ranges is None)


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


def forget_calibration(storage: Storage) -> None:
    """--overwrite: the ranges of the previous run go, before any worker fixes new ones."""
    storage.delete(CALIBRATION)
