"""The manifest: one record per shard saying what was done, under ``_embed_etl/shards/``.

A record is written whole (put) after the shard's output was published, so a reader never sees
half of one. A shard counts as done when its record says so with the job's fingerprint, its
input still has the size and modification time recorded, and its output exists.

A done shard also gets an empty marker, ``_embed_etl/done/<shard>@<fingerprint>-<input size>-
<input mtime>-<rows>-<null rows>-<truncated>-<chunked>``, so that resuming or reporting on
10,000 shards lists two prefixes (markers and outputs) instead of reading 10,000 records: on an
object store, a LIST request per 1,000 shards instead of two requests per shard. A marker of
other options or of a changed input matches nothing; --overwrite deletes them all.
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from etl.contract import Shard, ShardResult, ShardStatus
from etl.inputs import input_identity
from etl.state.keys import DONE, JOB, RECORDS, STATE_DIR, done_key, record_key, state_name
from etl.storage.base import Storage
from etl.version import __version__


@dataclass
class ShardRecord:
    """What the manifest keeps about one shard (the JSON fields of its record)."""

    input: str  # relative name
    status: ShardStatus
    fingerprint: str
    input_path: str = ""
    output: str = ""
    rows_in: int = 0
    rows_out: int = 0
    null_rows: int = 0
    truncated_rows: int = 0
    chunked_rows: int = 0
    tokens: int = 0
    padded_tokens: int = 0
    seconds: float = 0.0
    error: str | None = None
    host: str = ""
    pid: int = 0
    version: str = ""
    started_at: float | None = None
    finished_at: float = 0.0
    input_size: int | None = None
    input_mtime_ns: int | None = None
    texts_embedded: int = 0  # texts that went through the model
    rows_reused: dict[str, int] = field(default_factory=dict)  # rows that copied a vector, by
    # where it came from: shard (a repeat in the shard), job (this run), earlier (a store)

    @classmethod
    def of(
        cls,
        result: ShardResult,
        fingerprint: str,
        output: str,
        identity: dict[str, int] | None = None,
        started_at: float | None = None,
        rows_out: int = 0,
    ) -> ShardRecord:
        """The record of a shard this process just finished (done or failed)."""
        identity = identity or {}
        return cls(
            input=result.shard.rel_name,
            status=result.status,
            fingerprint=fingerprint,
            input_path=result.shard.input_path,
            output=output,
            rows_in=result.rows,
            rows_out=rows_out,
            null_rows=result.null_rows,
            truncated_rows=result.truncated_rows,
            chunked_rows=result.chunked_rows,
            tokens=result.tokens,
            padded_tokens=result.padded_tokens,
            seconds=round(result.seconds, 3),
            error=result.error,
            host=socket.gethostname(),
            pid=os.getpid(),
            version=__version__,
            started_at=started_at,
            finished_at=time.time(),
            input_size=identity.get("input_size"),
            input_mtime_ns=identity.get("input_mtime_ns"),
            texts_embedded=result.texts_embedded,
            rows_reused=dict(result.rows_reused),
        )

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), indent=1, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes) -> ShardRecord | None:
        """Parse a record; None for one that is unreadable (its shard is then redone)."""
        try:
            raw: dict[str, Any] = json.loads(data)
            known = {f.name for f in fields(cls)}
            record = cls(**{k: v for k, v in raw.items() if k in known})
            record.status = ShardStatus(record.status)
            return record
        except (ValueError, TypeError):
            return None

    def same_input(self, path: str) -> bool:
        try:
            now = input_identity(path)
        except OSError:
            return False
        return (self.input_size, self.input_mtime_ns) == (
            now["input_size"],
            now["input_mtime_ns"],
        )

    def marker(self) -> str:
        """The done marker's name: what resuming and `status` need, without reading this."""
        counts = (self.rows_out, self.null_rows, self.truncated_rows, self.chunked_rows)
        facts = (self.fingerprint, self.input_size, self.input_mtime_ns, *counts)
        return "-".join(str(f) for f in facts)


@dataclass(frozen=True)
class Done:
    """A done shard as its marker tells it."""

    fingerprint: str
    input_size: int
    input_mtime_ns: int
    rows: int
    null_rows: int
    truncated_rows: int
    chunked_rows: int

    @classmethod
    def parse(cls, name: str) -> Done | None:
        parts = name.split("-")
        if len(parts) != 7:
            return None
        try:
            return cls(parts[0], *(int(p) for p in parts[1:]))
        except ValueError:
            return None

    def matches(self, shard: Shard, fingerprint: str) -> bool:
        return self.fingerprint == fingerprint and (self.input_size, self.input_mtime_ns) == (
            shard.input_size,
            shard.input_mtime_ns,
        )


class Manifest:
    """Per-shard records of one output location. Picklable."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage

    def read(self, shard: Shard) -> ShardRecord | None:
        data = self.storage.read(record_key(shard.rel_name))
        return ShardRecord.from_json(data) if data is not None else None

    def recorded(self) -> set[str]:
        """State names of the shards that have a record: one listing."""
        return {e.key[len(RECORDS) + 1 :].removesuffix(".json") for e in self.storage.list(RECORDS)}

    def read_name(self, name: str) -> ShardRecord | None:
        data = self.storage.read(f"{RECORDS}/{name}.json")
        return ShardRecord.from_json(data) if data is not None else None

    def records(self) -> list[ShardRecord]:
        found = []
        for entry in self.storage.list(RECORDS):
            data = self.storage.read(entry.key)
            record = ShardRecord.from_json(data) if data is not None else None
            if record is not None:
                found.append(record)
        return found

    def write(self, record: ShardRecord) -> None:
        self.storage.put(record_key(record.input), record.to_json())
        if record.status == ShardStatus.DONE:
            self.storage.put(done_key(record.input, record.marker()), b"")

    def done_index(self) -> dict[str, list[Done]]:
        """Every done marker, by shard state name: one listing."""
        index: dict[str, list[Done]] = {}
        for entry in self.storage.list(DONE):
            name, _, marker = entry.key[len(DONE) + 1 :].rpartition("@")
            done = Done.parse(marker)
            if done is not None:
                index.setdefault(name, []).append(done)
        return index

    def outputs(self) -> set[str]:
        """Keys of every output file: one listing."""
        return {e.key for e in self.storage.list("") if not e.key.startswith(f"{STATE_DIR}/")}

    def done_per_index(
        self, shard: Shard, fingerprint: str, index: dict[str, list[Done]], outputs: set[str]
    ) -> Done | None:
        """The shard's marker if it is done by the index and the listed outputs (no request)."""
        if shard.output_key not in outputs:
            return None
        for done in index.get(state_name(shard.rel_name), ()):
            if done.matches(shard, fingerprint):
                return done
        return None

    def is_done(self, shard: Shard, fingerprint: str) -> bool:
        record = self.read(shard)
        return (
            record is not None
            and record.status == ShardStatus.DONE
            and record.fingerprint == fingerprint
            and record.same_input(shard.input_path)
            and self.storage.exists(shard.output_key)
        )

    def is_failed(self, shard: Shard) -> bool:
        record = self.read(shard)
        return record is not None and record.status == ShardStatus.FAILED

    def clear(self) -> None:
        """Forget every record and the job record (for --overwrite); claims stay."""
        self.storage.delete_prefix(RECORDS)
        self.storage.delete_prefix(DONE)
        self.storage.delete(JOB)
