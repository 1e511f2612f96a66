"""Real crashes and real concurrency: SIGKILL mid-run, reruns, two processes on one output."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from etl.contract import ShardStatus
from tests.conftest import (
    REPO,
    job_args,
    kill_group,
    records,
    start_job,
    tiny_texts,
    wait_until,
    write_shard,
)

SHARDS = 5
ROWS = 3000
SLOW = pytest.mark.slow


@pytest.fixture
def corpus(tmp_path):
    for i in range(SHARDS):
        write_shard(
            tmp_path / "in" / f"p{i}.parquet",
            tiny_texts(ROWS, seed=i),
            ids=range(i * ROWS, (i + 1) * ROWS),
        )
    return tmp_path / "in"


_STARTED: list[subprocess.Popen] = []


@pytest.fixture(autouse=True)
def _no_job_outlives_its_test():
    """A failing test must not leave a job running (it would slow every later test)."""
    yield
    while _STARTED:
        proc = _STARTED.pop()
        if proc.poll() is None:
            _kill(proc)


def _start(tiny_model, inputs, output, *extra) -> subprocess.Popen:
    """The job as users run it, slowed by tiny batches so that it can be caught mid-shard."""
    proc = start_job(job_args(tiny_model, inputs, output, "--batch-size", "4", *extra))
    _STARTED.append(proc)
    return proc


_kill = kill_group  # the whole group: main process and its workers


def _temp_files(output: Path) -> list[Path]:
    return list(output.glob(".*inprogress*"))


def _done(output: Path) -> int:
    return sum(1 for r in records(output) if r.status == ShardStatus.DONE)


def _marked(output: Path) -> int:
    """Shards done by the job's own rule: a record and then its marker (a kill between the two
    leaves the shard to be redone)."""
    from etl.state.manifest import Manifest
    from etl.storage.local import LocalStorage

    return sum(1 for found in Manifest(LocalStorage(output)).done_index().markers.values() if found)


def _assert_final_files_complete(output: Path) -> None:
    """Every file under a final name is whole: readable, every row of its input, no nulls."""
    for path in output.glob("p*.parquet"):
        table = pq.read_table(path)
        i = int(path.stem[1:])
        assert table.column("id").to_pylist() == list(range(i * ROWS, (i + 1) * ROWS)), path
        assert table.column("emb_mean").null_count == 0


def test_sigkill_at_several_points_then_rerun_is_exactly_once(tmp_path, tiny_model, corpus):
    out = tmp_path / "out"
    # 1: mid-way through the first shard, nothing done yet
    proc = _start(tiny_model, corpus, out)
    wait_until(proc, lambda: _temp_files(out) and _done(out) == 0, "first shard in progress")
    _kill(proc)
    _assert_final_files_complete(out)
    assert _done(out) == 0 and _temp_files(out)  # the killed run left its temporary file

    # 2: after a rerun has finished two shards, while it writes the next
    proc = _start(tiny_model, corpus, out)
    wait_until(proc, lambda: _done(out) >= 2 and _temp_files(out), "third shard in progress")
    _kill(proc)
    _assert_final_files_complete(out)
    done_before = _done(out)

    # 3: as soon as one more shard is recorded, between shards or just into the next
    proc = _start(tiny_model, corpus, out)
    wait_until(proc, lambda: _done(out) > done_before, "one more shard done")
    _kill(proc)
    _assert_final_files_complete(out)
    done_before = _marked(out)
    assert done_before < SHARDS

    # the rerun finishes, redoing only what was not done
    proc = _start(tiny_model, corpus, out)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr
    summary = json.loads(stdout)
    assert summary["shards_skipped"] == done_before
    assert summary["shards_done"] == SHARDS - done_before
    assert summary["rows"] == (SHARDS - done_before) * ROWS

    _assert_final_files_complete(out)
    ids = [
        i for p in sorted(out.glob("p*.parquet")) for i in pq.read_table(p).column("id").to_pylist()
    ]
    assert sorted(ids) == list(range(SHARDS * ROWS))  # every row exactly once
    assert not _temp_files(out)
    assert not list((out / "_embed_etl" / "claims").glob("*.claim"))


def test_two_processes_on_one_output_do_every_shard_once(tmp_path, tiny_model, corpus):
    out = tmp_path / "out"
    # One core each: two processes with a thread per core each would oversubscribe the CPU.
    procs = [_start(tiny_model, corpus, out, "--threads", "1") for _ in range(2)]
    summaries = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, stderr
        summaries.append(json.loads(stdout))
    done = [
        {s["input"] for s in summary["shards"] if s["status"] == "done"} for summary in summaries
    ]
    assert not done[0] & done[1], f"both processes did {done[0] & done[1]}"
    assert done[0] | done[1] == {f"p{i}.parquet" for i in range(SHARDS)}
    _assert_final_files_complete(out)
    assert len(list(out.glob("p*.parquet"))) == SHARDS
    assert all(done), "one process did no shard at all: the test did not exercise concurrency"
    done = records(out)
    assert {r.pid for r in done} == {p.pid for p in procs}
    assert all(r.status == ShardStatus.DONE for r in done) and len(done) == SHARDS


def _leftovers(output: Path) -> list[Path]:
    """What an interrupted run must not leave: temporary files (hidden names) and claims."""
    return [
        p
        for p in output.rglob("*")
        if p.is_file()
        and ((p.name.startswith(".") and p.name != ".swap.lock") or p.suffix == ".claim")
    ]


def _outputs(output: Path) -> int:
    return len(list(output.glob("p*.parquet")))


@pytest.mark.parametrize(
    "uploads", [pytest.param(2, id="2-uploads"), pytest.param(20, id="20-uploads", marks=SLOW)]
)
def test_sigterm_at_any_point_of_a_shard_leaves_nothing_behind(
    tmp_path, tiny_model, corpus, uploads
):
    """SIGTERM when the job is recorded, at a claim, the instant an upload file appears (polled
    every 0.5 ms; twice in `make test`, 20 times in `make test-slow`), when an output is published
    and when a shard is recorded done: every time the job exits 130 having removed its temporary
    files and claims, and a rerun finishes the job."""
    out = tmp_path / "out"

    def points():
        claims = out / "_embed_etl" / "claims"
        yield "the job is recorded", lambda: (out / "_embed_etl" / "job.json").exists()
        yield "a claim is taken", lambda: claims.is_dir() and any(claims.glob("*.claim"))
        for _ in range(uploads):
            yield "an upload appears", lambda: bool(_temp_files(out))
        n = _outputs(out)
        yield "an output is published", lambda: _outputs(out) > n
        n = _done(out)
        yield "a shard is recorded done", lambda: _done(out) > n

    for i, (what, reached) in enumerate(points()):
        # Half the runs read and tokenize in a DataLoader process (the GPU default), the others
        # in a thread of the job (the CPU default).
        proc = _start(tiny_model, corpus, out, *(("--num-workers", "1") if i % 2 else ()))
        _signal_when(proc, reached, what)
        assert not _leftovers(out), (what, _leftovers(out))
    _assert_final_files_complete(out)
    done_before = _done(out)
    assert done_before < SHARDS

    rerun = subprocess.run(  # default batching: the tiny batches above only slow a run down
        job_args(tiny_model, corpus, out), cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert rerun.returncode == 0, rerun.stderr
    assert json.loads(rerun.stdout)["shards_done"] == SHARDS - done_before
    _assert_final_files_complete(out)
    ids = [
        i for p in sorted(out.glob("p*.parquet")) for i in pq.read_table(p).column("id").to_pylist()
    ]
    assert sorted(ids) == list(range(SHARDS * ROWS))  # every row exactly once
    assert not _leftovers(out)


def _signal_when(proc: subprocess.Popen, reached, what: str) -> None:
    """SIGTERM the job the moment ``reached()`` holds, then check that it unwound cleanly."""
    deadline = time.monotonic() + 300
    while not reached():
        if proc.poll() is not None:
            pytest.fail(f"job ended before {what}: {proc.stderr.read()}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.0005)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=300)  # a loaded machine may take a while to unwind
    assert proc.returncode == 130, (what, proc.returncode, stderr)
    assert "rerun the same command" in stderr and "Traceback" not in stderr, stderr
