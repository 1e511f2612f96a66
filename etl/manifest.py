"""The manifest: what was done, recorded per shard under ``<output>/_embed_etl/``.

One small JSON file per shard (written to a temporary name, then renamed, so concurrent
processes never corrupt it and a reader never sees half a record), plus ``job.json``, which
records the fingerprint of the options that made the outputs. A shard counts as done when its
record says so with the job's fingerprint, its input still has the size and modification time
recorded, and its output file exists.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import urllib.parse
from pathlib import Path
from typing import Any

from etl.contract import Shard

STATE_DIR = "_embed_etl"


def state_key(rel_name: str) -> str:
    """A file name for a shard's record and claim: its relative name, quoted (or hashed if long)."""
    quoted = urllib.parse.quote(rel_name, safe="")
    if len(quoted) <= 180:
        return quoted
    return f"{quoted[:120]}~{hashlib.sha256(rel_name.encode()).hexdigest()[:16]}"


def input_identity(path: str) -> dict[str, int]:
    st = os.stat(path)
    return {"input_size": st.st_size, "input_mtime_ns": st.st_mtime_ns}


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temp.write_text(json.dumps(data, indent=1, sort_keys=True))
    os.replace(temp, path)


def create_json(path: Path, data: dict[str, Any]) -> dict[str, Any] | None:
    """Write ``path`` unless it exists; return the existing content, if any.

    The file is linked into place, so of two processes creating it at once exactly one
    writes it and the other reads (and can compare) it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    private = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    private.write_text(json.dumps(data, indent=1, sort_keys=True))
    try:
        os.link(private, path)
    except FileExistsError:
        return read_json(path)
    finally:
        private.unlink(missing_ok=True)
    return None


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return None  # unreadable record: treated as absent, the shard is redone


class ManifestStore:
    """Per-shard records and the job record of one output directory. Picklable."""

    def __init__(self, output_dir: str | Path) -> None:
        self.root = Path(output_dir) / STATE_DIR
        self.shards_dir = self.root / "shards"
        self.claims_dir = self.root / "claims"
        self.job_path = self.root / "job.json"

    def record_path(self, shard: Shard) -> Path:
        return self.shards_dir / f"{state_key(shard.rel_name)}.json"

    def read(self, shard: Shard) -> dict[str, Any] | None:
        return read_json(self.record_path(shard))

    def records(self) -> list[dict[str, Any]]:
        if not self.shards_dir.is_dir():
            return []
        found = (read_json(p) for p in sorted(self.shards_dir.glob("*.json")))
        return [r for r in found if r is not None]

    def write(self, shard: Shard, record: dict[str, Any]) -> None:
        record = {"input": shard.rel_name, "input_path": shard.input_path, **record}
        record.setdefault("output", shard.output_path)
        record.setdefault("finished_at", time.time())
        write_json_atomic(self.record_path(shard), record)

    def is_done(self, shard: Shard, fingerprint: str) -> bool:
        record = self.read(shard)
        if not record or record.get("status") != "done" or record.get("fingerprint") != fingerprint:
            return False
        try:
            same_input = all(
                record.get(k) == v for k, v in input_identity(shard.input_path).items()
            )
        except OSError:
            return False
        return same_input and Path(shard.output_path).exists()

    def is_failed(self, shard: Shard) -> bool:
        record = self.read(shard)
        return bool(record) and record.get("status") == "failed"

    def read_job(self) -> dict[str, Any] | None:
        return read_json(self.job_path)

    def create_job(self, job: dict[str, Any]) -> dict[str, Any] | None:
        """Write the job record unless one exists; return the existing one, if any
        (of two processes starting at once, one writes it and the other compares)."""
        return create_json(self.job_path, job)

    def write_job(self, job: dict[str, Any]) -> None:
        write_json_atomic(self.job_path, job)

    def clear(self) -> None:
        """Forget every record and the job record (for --overwrite); claims stay."""
        for path in self.shards_dir.glob("*.json") if self.shards_dir.is_dir() else ():
            path.unlink(missing_ok=True)
        self.job_path.unlink(missing_ok=True)
