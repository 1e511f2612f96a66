"""Claims: one holder at a time; dead or silent holders are taken over, live ones never."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from etl.claims import ClaimBook, Owner
from etl.contract import Shard
from etl.manifest import ManifestStore

SHARD = Shard("/in/a.parquet", "sub/a.parquet", "/out/sub/a.parquet")


def _book(tmp_path, owner=None, stale_after=600.0):
    store = ManifestStore(tmp_path)
    return ClaimBook(store.claims_dir, store, "fp", owner=owner, stale_after=stale_after)


def test_one_holder_at_a_time_and_release(tmp_path):
    a, b = _book(tmp_path), _book(tmp_path)
    assert a(SHARD) and not b(SHARD)
    b.release(SHARD)  # not b's claim: nothing happens
    assert not b(SHARD)
    a.release(SHARD)
    assert b(SHARD)


def test_claim_of_a_dead_process_on_this_host_is_taken_over(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    assert _book(tmp_path, owner=Owner(pid=dead.pid, started=1))(SHARD)
    assert _book(tmp_path)(SHARD)


def test_reused_pid_does_not_keep_a_claim_alive(tmp_path):
    # Same pid as a live process (ours) but another start time: the owner is gone.
    impostor = Owner(pid=os.getpid(), started=1)
    assert _book(tmp_path, owner=impostor)(SHARD)
    assert _book(tmp_path)(SHARD)


def test_other_host_claims_go_stale_only_without_heartbeat(tmp_path):
    remote = Owner(host="elsewhere", pid=1, started=1)
    holder = _book(tmp_path, owner=remote)
    assert holder(SHARD)
    assert not _book(tmp_path, stale_after=600)(SHARD)  # fresh: respected
    path = holder.path(SHARD)
    os.utime(path, (0, 0))  # no heartbeat since 1970
    taker = _book(tmp_path, stale_after=600)
    assert taker(SHARD)
    assert json.loads(path.read_text())["token"] == taker.owner.token


def test_heartbeat_refreshes_only_own_claims(tmp_path):
    mine, theirs = _book(tmp_path), _book(tmp_path, owner=Owner(host="elsewhere", pid=1, started=1))
    other = Shard("/in/b.parquet", "b.parquet", "/out/b.parquet")
    assert mine(SHARD) and theirs(other)
    for shard, book in ((SHARD, mine), (other, theirs)):
        os.utime(book.path(shard), (0, 0))
    mine.heartbeat()
    assert os.stat(mine.path(SHARD)).st_mtime > 0 and os.stat(theirs.path(other)).st_mtime == 0


def test_a_shard_done_meanwhile_is_not_claimed(tmp_path):
    src = tmp_path / "a.parquet"
    src.write_bytes(b"x")
    out = tmp_path / "out.parquet"
    out.write_bytes(b"y")
    shard = Shard(str(src), "a.parquet", str(out))
    book = _book(tmp_path)
    from etl.manifest import input_identity

    book.manifest.write(shard, {"status": "done", "fingerprint": "fp", **input_identity(str(src))})
    assert not book(shard)
    assert not book.path(shard).exists()
