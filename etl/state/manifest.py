"""The manifest: one record per shard saying what was done, under ``_embed_etl/shards/``.

A record (etl.contract.ShardRecord, the one record type) is written whole (put) after the
shard's output was published, so a reader never sees half of one. A done shard then gets an
empty marker, ``_embed_etl/done/<shard>@<fingerprint>-<input size>-
<input mtime>-<rows>-<null rows>-<truncated>-<chunked>``, so that resuming or reporting on
10,000 shards lists two prefixes (markers and outputs) instead of reading 10,000 records: on an
object store, a LIST request per 1,000 shards instead of two requests per shard. A marker of
other options or of a changed input matches nothing; --overwrite deletes them all.

Whether a shard is done is decided by one function, ``shard_done``, over a DoneIndex: built
from the two listings (plan, status, verify) or from one shard's record (the lease, right
after claiming it).
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass, fields
from typing import Any

from etl.contract import Shard, ShardRecord, ShardStatus
from etl.inputs import output_key
from etl.redact import redact
from etl.state.keys import DONE, JOB, RECORDS, STATE_DIR, done_key, record_key, state_name
from etl.storage.base import Storage
from etl.version import __version__

RECORD_FIELDS = tuple(f.name for f in fields(ShardRecord) if f.name != "shard")


def record_json(record: ShardRecord) -> bytes:
    """A record as the manifest stores it: flat JSON, the shard as its relative name and path."""
    raw = {name: getattr(record, name) for name in RECORD_FIELDS}
    raw.update(input=record.shard.rel_name, input_path=record.shard.input_path)
    return redact(json.dumps(raw, indent=1, sort_keys=True)).encode()  # its paths and errors


def parse_record(data: bytes) -> ShardRecord | None:
    """A stored record; None for one that is unreadable (its shard is then redone)."""
    try:
        raw: dict[str, Any] = json.loads(data)
        rel = raw["input"]
        values = {k: raw[k] for k in RECORD_FIELDS if k in raw}
        values["status"] = ShardStatus(values["status"])
        shard = Shard(
            raw.get("input_path", ""),
            rel,
            output_key(rel),
            values.get("input_size"),
            values.get("input_mtime_ns"),
        )
        return ShardRecord(shard, **values)
    except (ValueError, TypeError, KeyError):
        return None


def stamp(record: ShardRecord) -> None:
    """Say who finished the shard (done or failed), and when, on its record."""
    record.seconds = round(record.seconds, 3)
    record.host, record.pid, record.version = socket.gethostname(), os.getpid(), __version__
    record.finished_at = time.time()


@dataclass(frozen=True)
class Done:
    """A done shard as its marker tells it: what deciding "done" and reporting counts need."""

    fingerprint: str
    input_size: int
    input_mtime_ns: int
    rows: int
    null_rows: int
    truncated_rows: int
    chunked_rows: int

    @classmethod
    def of(cls, record: ShardRecord) -> Done | None:
        return cls.parse(marker(record))

    @classmethod
    def parse(cls, name: str) -> Done | None:
        parts = name.split("-")
        if len(parts) != 7:
            return None
        try:
            return cls(parts[0], *(int(p) for p in parts[1:]))
        except ValueError:
            return None


def marker(record: ShardRecord) -> str:
    """A done record's marker name: the facts of Done, in order."""
    counts = (record.rows_out, record.null_rows, record.truncated_rows, record.chunked_rows)
    facts = (record.fingerprint, record.input_size, record.input_mtime_ns, *counts)
    return "-".join(str(f) for f in facts)


@dataclass(frozen=True)
class DoneIndex:
    """What "done" is decided from: the done markers by shard state name, and the outputs."""

    markers: dict[str, list[Done]]
    outputs: frozenset[str]


def shard_done(shard: Shard, fingerprint: str, index: DoneIndex) -> Done | None:
    """The one rule for "done", asked by the plan, the lease, `status` and `verify`: a marker
    of this job's fingerprint for the input as it is now (size and modification time), and
    the shard's output present. Returns the marker (its counts), or None."""
    if shard.output_key not in index.outputs:
        return None
    for done in index.markers.get(state_name(shard.rel_name), ()):
        same_input = (done.input_size, done.input_mtime_ns) == (
            shard.input_size,
            shard.input_mtime_ns,
        )
        if done.fingerprint == fingerprint and same_input:
            return done
    return None


class Manifest:
    """Per-shard records of one output location. Picklable."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage

    def read(self, shard: Shard) -> ShardRecord | None:
        return self.read_name(state_name(shard.rel_name))

    def recorded(self) -> set[str]:
        """State names of the shards that have a record: one listing."""
        return {e.key[len(RECORDS) + 1 :].removesuffix(".json") for e in self.storage.list(RECORDS)}

    def read_name(self, name: str) -> ShardRecord | None:
        data = self.storage.read(f"{RECORDS}/{name}.json")
        return parse_record(data) if data is not None else None

    def records(self) -> list[ShardRecord]:
        found = []
        for entry in self.storage.list(RECORDS):
            data = self.storage.read(entry.key)
            record = parse_record(data) if data is not None else None
            if record is not None:
                found.append(record)
        return found

    def write(self, record: ShardRecord) -> None:
        self.storage.put(record_key(record.shard.rel_name), record_json(record))
        if record.status == ShardStatus.DONE:
            self.storage.put(done_key(record.shard.rel_name, marker(record)), b"")

    def done_index(self) -> DoneIndex:
        """What says which shards are done, for every shard: two listings, markers and
        outputs, instead of requests per shard."""
        markers: dict[str, list[Done]] = {}
        for entry in self.storage.list(DONE):
            name, _, found = entry.key[len(DONE) + 1 :].rpartition("@")
            done = Done.parse(found)
            if done is not None:
                markers.setdefault(name, []).append(done)
        outputs = frozenset(
            e.key for e in self.storage.list("") if not e.key.startswith(f"{STATE_DIR}/")
        )
        return DoneIndex(markers, outputs)

    def done_index_of(self, shard: Shard) -> DoneIndex:
        """The same for one shard, without listing everything: its record names its marker,
        which must exist (a kill between the record and the marker leaves it undone, as the
        listing sees it too), and its output. Three requests."""
        record = self.read(shard)
        done = Done.of(record) if record and record.status == ShardStatus.DONE else None
        markers: dict[str, list[Done]] = {}
        if done is not None and self.storage.exists(done_key(shard.rel_name, marker(record))):
            markers[state_name(shard.rel_name)] = [done]
        present = self.storage.exists(shard.output_key)
        return DoneIndex(markers, frozenset([shard.output_key] if present else []))

    def split(
        self, shards: list[Shard], fingerprint: str, only_failed: bool = False
    ) -> tuple[list[Shard], list[Shard]]:
        """(to do, already done) of ``shards`` for the job of ``fingerprint``; ``only_failed``
        (--only-failed) keeps just the failed ones to do."""
        index = self.done_index()  # two listings, not requests per shard
        pending, done = [], []
        for shard in shards:
            if shard_done(shard, fingerprint, index):
                done.append(shard)
            elif not only_failed or self.is_failed(shard):
                pending.append(shard)
        return pending, done

    def is_failed(self, shard: Shard) -> bool:
        record = self.read(shard)
        return record is not None and record.status == ShardStatus.FAILED

    def clear(self) -> None:
        """Forget every record and the job record (for --overwrite); claims stay."""
        self.storage.delete_prefix(RECORDS)
        self.storage.delete_prefix(DONE)
        self.storage.delete(JOB)
