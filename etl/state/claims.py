"""Claims: a process takes a shard before working on it, so no two processes ever share one.

This is the claim store; a worker holds its claims through etl.state.lease.Lease, which
takes, refreshes and releases them.

A claim is an object created only if absent under ``_embed_etl/claims/``, naming its owner
(host, pid, process start time, run token). It is released after the shard's manifest record is
written. A claim whose owner is gone is stale and may be taken over: on the same host, when the
owner process no longer exists (a SIGKILL is noticed at once); on another host, when the owner
has not refreshed the claim's modification time for ``stale_after`` seconds. A takeover replaces
the stale claim only if it is still the one read, so two processes never both take it over. A
stale claim of a shard that is done is deleted by the next run's plan.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from etl.contract import Shard
from etl.state.keys import CLAIMS, claim_key
from etl.state.manifest import Manifest
from etl.storage.base import Storage

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 60.0
STALE_AFTER_SECONDS = 600.0


@dataclass
class Owner:
    """Who holds claims: the job's main process, also for claims its DataLoader workers take."""

    host: str = field(default_factory=socket.gethostname)
    pid: int = field(default_factory=os.getpid)
    started: int | None = None
    token: str = field(default_factory=lambda: uuid.uuid4().hex[:12])

    def __post_init__(self) -> None:
        if self.started is None:
            self.started = process_start_time(self.pid)


class ClaimBook:
    """Take, release, refresh and inspect the claims of one output location. Picklable."""

    def __init__(
        self,
        manifest: Manifest,
        fingerprint: str,
        owner: Owner | None = None,
        stale_after: float = STALE_AFTER_SECONDS,
    ) -> None:
        self.manifest = manifest
        self.storage: Storage = manifest.storage
        self.fingerprint = fingerprint
        self.owner = owner or Owner()
        self.stale_after = stale_after
        self.taken_over: set[str] = set()  # shards whose stale claim this book took over

    def take(self, shard: Shard) -> bool:
        """Claim a shard: create its claim, or take over a stale one; False if someone holds it.
        Whether it is still to do is the lease's question (etl.state.lease)."""
        return self._create(shard) or self._take_over(shard)

    def key(self, shard: Shard) -> str:
        return claim_key(shard.rel_name)

    def release(self, shard: Shard) -> None:
        holder = self._holder(self.key(shard))
        if holder is not None and holder.get("token") == self.owner.token:
            self.storage.delete(self.key(shard))

    def clear_stale(self, shards: Iterable[Shard]) -> None:
        """Delete the stale claims of these shards (done ones: a kill between a shard's record and
        its claim's release leaves such a claim, and nothing else would ever remove it)."""
        names = {shard.rel_name for shard in shards}
        for key, holder in self._claims():
            if holder.get("input") in names and self._is_stale(key, holder):
                self.storage.delete(key)

    def heartbeat(self, shards: Iterable[Shard] | None = None) -> None:
        """Refresh the modification time of this run's claims, so other hosts see them alive:
        of these ``shards`` (what a lease holds: no listing, and no reading of the claims of
        every other worker), or of every claim that is this run's."""
        if shards is None:
            found = self._claims()
        else:
            found = ((key, self._holder(key)) for key in map(self.key, shards))
        for key, holder in found:
            if holder is not None and holder.get("token") == self.owner.token:
                self.storage.touch(key)

    def running(self) -> dict[str, dict]:
        """Claims held by live owners: shard relative name -> holder."""
        return {
            holder.get("input", key): holder
            for key, holder in self._claims()
            if not self._is_stale(key, holder)
        }

    def _claims(self) -> Iterator[tuple[str, dict]]:
        for entry in self.storage.list(CLAIMS):
            holder = self._holder(entry.key)
            if holder is not None:
                yield entry.key, holder

    def _holder(self, key: str) -> dict | None:
        return _parse(self.storage.read(key))

    def _claim_bytes(self, shard: Shard) -> bytes:
        owner = self.owner
        record = {
            "input": shard.rel_name,
            "host": owner.host,
            "pid": owner.pid,
            "started": owner.started,
            "token": owner.token,
            "claimed_at": time.time(),
        }
        return json.dumps(record).encode()

    def _create(self, shard: Shard) -> bool:
        return self.storage.create(self.key(shard), self._claim_bytes(shard))

    def _take_over(self, shard: Shard) -> bool:
        key = self.key(shard)
        current = self.storage.read(key)
        if current is None:  # released meanwhile
            return self._create(shard)
        holder = _parse(current)
        if holder is not None and not self._is_stale(key, holder):
            return False
        if not self.storage.swap(key, current, self._claim_bytes(shard)):
            return False  # someone else took it over first
        self.taken_over.add(shard.rel_name)
        log.warning(
            "took over %s from %s pid %s (gone)",
            shard.rel_name,
            (holder or {}).get("host"),
            (holder or {}).get("pid"),
        )
        return True

    def _is_stale(self, key: str, holder: dict) -> bool:
        if holder.get("host") == self.owner.host:
            return not process_alive(int(holder.get("pid", -1)), holder.get("started"))
        entry = self.storage.stat(key)
        return entry is None or time.time() - entry.mtime > self.stale_after


def _parse(data: bytes | None) -> dict | None:
    if data is None:
        return None
    try:
        holder = json.loads(data)
    except ValueError:
        return None
    return holder if isinstance(holder, dict) else None


def process_start_time(pid: int) -> int | None:
    """Start time of a process in clock ticks since boot (Linux), to tell reused pids apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def process_alive(pid: int, started: int | None) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by another user
    if started is not None:
        now = process_start_time(pid)
        if now is not None and now != started:
            return False  # the pid was reused by another process
    return _not_zombie(pid)


def _not_zombie(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state != "Z"
