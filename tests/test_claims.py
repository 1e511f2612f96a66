"""Claims: one holder at a time; dead or silent holders are taken over, live ones never."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

from etl.contract import Shard, ShardRecord, ShardStatus
from etl.inputs import input_identity
from etl.state.claims import ClaimBook, Owner
from etl.state.lease import Lease
from etl.state.manifest import Manifest
from etl.storage import open_storage

SHARD = Shard("/in/a.parquet", "sub/a.parquet", "sub/a.parquet")


def _book(tmp_path, owner=None, stale_after=600.0):
    return ClaimBook(Manifest(open_storage(tmp_path)), "fp", owner=owner, stale_after=stale_after)


def _path(book, shard):
    return book.storage.local_path(book.key(shard))


def test_one_holder_at_a_time_and_release(tmp_path):
    a, b = _book(tmp_path), _book(tmp_path)
    assert a.take(SHARD) and not b.take(SHARD)
    b.release(SHARD)  # not b's claim: nothing happens
    assert not b.take(SHARD)
    a.release(SHARD)
    assert b.take(SHARD)


def test_claim_of_a_dead_process_on_this_host_is_taken_over(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    assert _book(tmp_path, owner=Owner(pid=dead.pid, started=1)).take(SHARD)
    assert _book(tmp_path).take(SHARD)


def test_of_many_takers_of_a_stale_claim_exactly_one_gets_it(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    assert _book(tmp_path, owner=Owner(pid=dead.pid, started=1)).take(SHARD)
    takers = [_book(tmp_path) for _ in range(8)]  # live owners, each with its own token
    barrier = threading.Barrier(len(takers))
    won = []

    def take(book) -> None:
        barrier.wait()
        if book.take(SHARD):
            won.append(book.owner.token)

    threads = [threading.Thread(target=take, args=(b,)) for b in takers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1
    assert json.loads(_path(takers[0], SHARD).read_text())["token"] == won[0]


def test_reused_pid_does_not_keep_a_claim_alive(tmp_path):
    # Same pid as a live process (ours) but another start time: the owner is gone.
    impostor = Owner(pid=os.getpid(), started=1)
    assert _book(tmp_path, owner=impostor).take(SHARD)
    assert _book(tmp_path).take(SHARD)


def test_other_host_claims_go_stale_only_without_heartbeat(tmp_path):
    remote = Owner(host="elsewhere", pid=1, started=1)
    holder = _book(tmp_path, owner=remote)
    assert holder.take(SHARD)
    assert not _book(tmp_path, stale_after=600).take(SHARD)  # fresh: respected
    path = _path(holder, SHARD)
    os.utime(path, (0, 0))  # no heartbeat since 1970
    taker = _book(tmp_path, stale_after=600)
    assert taker.take(SHARD)
    assert json.loads(path.read_text())["token"] == taker.owner.token


def test_heartbeat_refreshes_only_own_claims(tmp_path):
    mine, theirs = _book(tmp_path), _book(tmp_path, owner=Owner(host="elsewhere", pid=1, started=1))
    other = Shard("/in/b.parquet", "b.parquet", "b.parquet")
    assert mine.take(SHARD) and theirs.take(other)
    for shard, book in ((SHARD, mine), (other, theirs)):
        os.utime(_path(book, shard), (0, 0))
    mine.heartbeat()
    assert os.stat(_path(mine, SHARD)).st_mtime > 0 and os.stat(_path(theirs, other)).st_mtime == 0
    # What a lease holds, named (no listing): still only its own claims, and gone ones pass.
    os.utime(_path(mine, SHARD), (0, 0))
    gone = Shard("/in/c.parquet", "c.parquet", "c.parquet")
    mine.heartbeat([SHARD, other, gone])
    assert os.stat(_path(mine, SHARD)).st_mtime > 0 and os.stat(_path(theirs, other)).st_mtime == 0


def test_a_shard_done_meanwhile_is_not_claimed(tmp_path):
    """The lease asks the rule for "done" right after claiming: a shard another process
    finished since the plan is given back, its claim gone; an undone one is handed out."""
    src = tmp_path / "a.parquet"
    src.write_bytes(b"x")
    (tmp_path / "out.parquet").write_bytes(b"y")
    shard = Shard(str(src), "a.parquet", "out.parquet")
    todo = Shard(str(src), "b.parquet", "b-out.parquet")
    book = _book(tmp_path)
    done = ShardRecord(shard, ShardStatus.DONE, "fp", **input_identity(str(src)))
    book.manifest.write(done)
    lease = Lease([shard, todo], book, readers=0)
    lease.start()
    try:
        assert lease.feed.next() == 1 and lease.feed.next() is None
    finally:
        lease.close()
    assert not _path(book, shard).exists() and _path(book, todo).exists()
    assert lease.taken == {1}
    lease.release_all()
    assert not _path(book, todo).exists()


def test_a_run_clears_the_claim_a_kill_left_on_a_done_shard(tmp_path, tiny_model):
    """Killed after a shard's record but before its claim's release: the rerun, which has nothing
    left to do for that shard, still deletes the dead owner's claim; a live owner's stays."""
    from tests.conftest import run_ok, tiny_texts, write_shard

    write_shard(tmp_path / "in" / "a.parquet", tiny_texts(8))
    write_shard(tmp_path / "in" / "b.parquet", tiny_texts(8, seed=1))
    out = tmp_path / "out"
    run_ok(tmp_path / "in", out, tiny_model)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    storage = open_storage(out)
    left = ClaimBook(Manifest(storage), "fp", owner=Owner(pid=dead.pid, started=1))
    live = ClaimBook(Manifest(storage), "fp")  # this test's own process: alive
    a, b = (Shard(str(tmp_path / "in" / n), n, n) for n in ("a.parquet", "b.parquet"))
    assert left._create(a) and live._create(b)
    assert run_ok(tmp_path / "in", out, tiny_model)["shards_skipped"] == 2
    assert not storage.exists(left.key(a))
    assert storage.exists(live.key(b))


def test_a_claim_attempt_that_raises_ends_the_feed_instead_of_leaving_readers_waiting(tmp_path):
    """Whatever goes wrong in claiming (the store, a bug), the readers get an answer: no
    more shards for this worker; the claim it made before the failure is released."""

    def broken(shard) -> None:
        raise RuntimeError("the store went away")

    book = _book(tmp_path)
    other = Shard("/in/b.parquet", "b.parquet", "b.parquet")
    lease = Lease([SHARD, other], book, readers=0, on_taken=broken)
    lease.start()
    answers = []
    reader = threading.Thread(target=lambda: answers.extend([lease.feed.next(), lease.feed.next()]))
    try:
        reader.start()
        reader.join(timeout=60)
    finally:
        lease.close()
    assert not reader.is_alive() and answers == [None, None]
    lease.release_all()
    assert not _path(book, SHARD).exists() and not _path(book, other).exists()
