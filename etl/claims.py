"""Claims: a process takes a shard before working on it, so no two processes ever share one.

A claim is a file linked into place (atomic; fails if one exists) under
``<output>/_embed_etl/claims/``, naming its owner (host, pid, process start time, run token).
It is released after the shard's manifest record is written. A claim whose owner is gone is
stale and may be taken over: on the same host, when the owner process no longer exists (a
SIGKILL is noticed at once); on another host, when the owner has not refreshed the file's
modification time for ``stale_after`` seconds. Takeovers happen under an flock so that two
processes never both take over the same stale claim.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from etl.contract import Shard
from etl.manifest import ManifestStore, state_key

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
    """Take, release, refresh and inspect claims in one output directory. Picklable."""

    def __init__(
        self,
        claims_dir: str | Path,
        manifest: ManifestStore,
        fingerprint: str,
        owner: Owner | None = None,
        stale_after: float = STALE_AFTER_SECONDS,
    ) -> None:
        self.dir = Path(claims_dir)
        self.manifest = manifest
        self.fingerprint = fingerprint
        self.owner = owner or Owner()
        self.stale_after = stale_after

    def path(self, shard: Shard) -> Path:
        return self.dir / f"{state_key(shard.rel_name)}.claim"

    def __call__(self, shard: Shard) -> bool:
        """Try to claim a shard that is still to do; False if someone holds it or it got done."""
        self.dir.mkdir(parents=True, exist_ok=True)
        if not (self._create(shard) or self._take_over(shard)):
            return False
        # Another process may have finished it between our planning and our claim.
        if self.manifest.is_done(shard, self.fingerprint):
            self.release(shard)
            return False
        return True

    def release(self, shard: Shard) -> None:
        path = self.path(shard)
        holder = read_claim(path)
        if holder is not None and holder.get("token") == self.owner.token:
            path.unlink(missing_ok=True)

    def release_all(self) -> None:
        """Drop every claim this run holds (used when the job stops early)."""
        for path, holder in self._claims():
            if holder.get("token") == self.owner.token:
                path.unlink(missing_ok=True)

    def heartbeat(self) -> None:
        """Refresh the modification time of this run's claims, so other hosts see them alive."""
        for path, holder in self._claims():
            if holder.get("token") == self.owner.token:
                with contextlib.suppress(FileNotFoundError):
                    os.utime(path)

    def running(self) -> dict[str, dict]:
        """Claims held by live owners: claim key -> holder."""
        return {p.stem: h for p, h in self._claims() if not self._is_stale(p, h)}

    def _claims(self):
        if not self.dir.is_dir():
            return
        for path in self.dir.glob("*.claim"):
            holder = read_claim(path)
            if holder is not None:
                yield path, holder

    def _create(self, shard: Shard) -> bool:
        """Write the claim under a private name, then link it into place: the link either
        fails (someone holds the shard) or makes a complete claim appear at once."""
        path = self.path(shard)
        owner = self.owner
        record = {
            "input": shard.rel_name,
            "host": owner.host,
            "pid": owner.pid,
            "started": owner.started,
            "token": owner.token,
            "claimed_at": time.time(),
        }
        private = path.with_name(f".{path.name}.{owner.token}.{os.getpid()}")
        private.write_text(json.dumps(record))
        try:
            os.link(private, path)
        except FileExistsError:
            return False
        finally:
            private.unlink(missing_ok=True)
        return True

    def _take_over(self, shard: Shard) -> bool:
        path = self.path(shard)
        with _locked(self.dir / ".takeover.lock"):
            holder = read_claim(path)
            if holder is not None and not self._is_stale(path, holder):
                return False
            if holder is not None:
                log.warning(
                    "taking over %s from %s pid %s (gone)",
                    shard.rel_name,
                    holder.get("host"),
                    holder.get("pid"),
                )
            path.unlink(missing_ok=True)
            return self._create(shard)

    def _is_stale(self, path: Path, holder: dict) -> bool:
        if holder.get("host") == self.owner.host:
            return not process_alive(int(holder.get("pid", -1)), holder.get("started"))
        return time.time() - _mtime(path) > self.stale_after


def read_claim(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


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


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


@contextlib.contextmanager
def _locked(path: Path):
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
