"""Beyond one process: --workers, Ray, and what the Airflow DAG consumes. Same files every way."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from etl import run_job
from etl.contract import ShardStatus
from jobs.cli import cli
from jobs.scheduling import check_complete, part_commands
from tests.conftest import REPO, job_args, job_config, records, run_ok, tiny_texts, write_shard

SHARDS = 6


@pytest.fixture
def corpus(tmp_path) -> Path:
    for i in range(SHARDS):
        write_shard(
            tmp_path / "in" / f"p{i}.parquet",
            tiny_texts(40, seed=i),
            ids=range(i * 40, i * 40 + 40),
        )
    return tmp_path / "in"


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray for the session, bound to loopback only."""
    ray = pytest.importorskip("ray")
    os.environ.pop("RAY_ADDRESS", None)
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # advertise 127.0.0.1, not the NIC
    ray.init(
        address="local",  # a Ray of its own, even if another one runs on this machine
        num_cpus=4,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        log_to_driver=False,
        configure_logging=False,
    )
    yield ray
    ray.shutdown()


def _run(tmp_path, tiny_model, corpus, out, **kw):
    summary = run_ok(corpus, tmp_path / out, tiny_model, **kw)
    assert summary["shards_done"] == SHARDS
    return summary


def _assert_same_outputs(a: Path, b: Path) -> None:
    for i in range(SHARDS):
        ta, tb = pq.read_table(a / f"p{i}.parquet"), pq.read_table(b / f"p{i}.parquet")
        assert ta.schema.equals(tb.schema, check_metadata=False)
        assert (
            ta.schema.metadata[b"embed_etl.fingerprint"]
            == tb.schema.metadata[b"embed_etl.fingerprint"]
        )
        assert ta.column("id").to_pylist() == tb.column("id").to_pylist()
        np.testing.assert_allclose(
            np.array(ta.column("emb_mean").to_pylist()),
            np.array(tb.column("emb_mean").to_pylist()),
            atol=1e-5,
            rtol=0,
        )


def test_two_local_workers_match_one_process(tmp_path, tiny_model, corpus):
    _run(tmp_path, tiny_model, corpus, "single", normalize=True)
    double = _run(tmp_path, tiny_model, corpus, "double", normalize=True, workers=2)
    _assert_same_outputs(tmp_path / "single", tmp_path / "double")
    loaded = {w["pid"] for w in double["workers"]}
    assert len(loaded) == 2 and os.getpid() not in loaded  # two worker processes loaded the model
    assert {w["device"] for w in double["workers"]} == {"cpu"}
    # Which worker claims which shard is a race (tiny shards take milliseconds), but only they did.
    assert {r.pid for r in records(tmp_path / "double")} <= loaded


def test_k_processes_on_one_device_write_the_bytes_of_one(tmp_path, tiny_model, corpus):
    """--workers K on one device (K processes share it, as K per GPU do): every vector
    bit for bit what one process writes, given the same threads each."""
    _run(tmp_path, tiny_model, corpus, "one", workers=1, threads=1)
    _run(tmp_path, tiny_model, corpus, "three", workers=3, threads=1)
    for i in range(SHARDS):
        a, b = (pq.read_table(tmp_path / d / f"p{i}.parquet") for d in ("one", "three"))
        assert a.equals(b), f"p{i}"  # ids, counts and every vector


def test_ray_engine_matches_one_process(tmp_path, tiny_model, corpus, ray_local):
    _run(tmp_path, tiny_model, corpus, "single", normalize=True)
    on_ray = _run(
        tmp_path, tiny_model, corpus, "ray", normalize=True, engine="ray", workers=2, threads=1
    )
    _assert_same_outputs(tmp_path / "single", tmp_path / "ray")
    actors = {w["pid"] for w in on_ray["workers"]}
    assert len(actors) == 2 and os.getpid() not in actors
    assert {r.pid for r in records(tmp_path / "ray")} <= actors


def test_ray_engine_embeds_a_sparse_model_every_row_once_as_encode_does(tmp_path, ray_local):
    from tests import sparse_models as sm

    model = sm.build_splade_max(tmp_path / "splade")
    texts = sm.texts(30, seed=2)
    for i in range(SHARDS):
        write_shard(tmp_path / "in" / f"p{i}.parquet", texts, ids=range(i * 100, i * 100 + 30))
    run_ok(tmp_path / "in", tmp_path / "ray", model, engine="ray", workers=2, threads=1)
    reference = sm.sparse_reference(model, texts)
    for i in range(SHARDS):
        table = pq.read_table(tmp_path / "ray" / f"p{i}.parquet")
        assert table.column("id").to_pylist() == list(range(i * 100, i * 100 + 30))
        for row, (index, values) in zip(
            table.column("emb_sparse").to_pylist(), reference, strict=True
        ):
            assert [p["index"] for p in row] == index.tolist()
            np.testing.assert_allclose([p["value"] for p in row], values, atol=1e-4)


def test_ray_and_local_runs_fill_one_output_together(tmp_path, tiny_model, corpus, ray_local):
    """Half the parts on Ray, the rest locally: one job, every shard once, resumable."""
    out = "mixed"
    first = job_config(
        corpus, tmp_path / out, tiny_model, engine="ray", threads=1, shard_index=0, num_shards=2
    )
    assert run_job(first).ok
    rest = run_job(job_config(corpus, tmp_path / out, tiny_model)).to_dict()
    assert (rest["shards_skipped"], rest["shards_done"]) == (SHARDS // 2, SHARDS - SHARDS // 2)
    _run(tmp_path, tiny_model, corpus, "single")
    _assert_same_outputs(tmp_path / "single", tmp_path / out)


def _four_shards(folder: Path, rows: int) -> None:
    for i in range(4):
        write_shard(
            folder / f"p{i}.parquet", tiny_texts(rows, seed=i), ids=range(i * rows, (i + 1) * rows)
        )


def _claimant(claims: Path, running, why) -> int:
    """Poll the claims (the job's state, not the clock) until one is held: its holder's pid."""
    deadline = time.monotonic() + 300
    while True:
        assert running(), why()
        assert time.monotonic() < deadline, "no claim was ever taken"
        for claim in claims.glob("*.claim") if claims.is_dir() else ():
            try:
                return json.loads(claim.read_text())["pid"]
            except (OSError, ValueError, KeyError):
                continue
        time.sleep(0.005)


def test_killing_one_worker_still_finishes_every_shard_once(tmp_path, tiny_model):
    rows = 2500
    _four_shards(tmp_path / "in", rows)
    out = tmp_path / "out"
    args = job_args(tiny_model, tmp_path / "in", out, "--workers", "2", "--batch-size", "4")
    proc = subprocess.Popen(
        args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        _kill_one_worker_and_finish(proc, args, out, rows)
    finally:  # a failing test must not leave the job and its workers running
        if proc.poll() is None:
            for process in [*psutil.Process(proc.pid).children(recursive=True), proc]:
                process.kill()
            proc.wait()


def _kill_one_worker_and_finish(proc, args, out, rows):
    claims = out / "_embed_etl" / "claims"
    # Wait until a worker holds a shard, then kill that worker.
    victim = _claimant(claims, lambda: proc.poll() is None, lambda: proc.stderr.read())
    assert victim in {c.pid for c in psutil.Process(proc.pid).children()}
    os.kill(victim, signal.SIGKILL)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr
    summary = json.loads(stdout)
    # The dead worker was replaced and the job finished in this run: nothing for a rerun.
    assert (summary["shards_done"], summary["shards_failed"]) == (4, 0), stderr
    assert summary["worker_restarts"] == 1
    loaded = [w["pid"] for w in summary["workers"]]
    assert len(loaded) == 3 and victim in loaded  # two at the start, then one replacement
    assert {r.pid for r in records(out)} <= set(loaded)
    ids = [
        i for p in sorted(out.glob("p*.parquet")) for i in pq.read_table(p).column("id").to_pylist()
    ]
    assert sorted(ids) == list(range(4 * rows))  # every row exactly once
    assert not list(out.glob(".*inprogress*"))


def test_plan_output_feeds_the_dag_and_status_feeds_its_check(tmp_path, tiny_model, corpus):
    runner = CliRunner()
    plan = json.loads(
        runner.invoke(cli, ["plan", str(corpus), "--num-shards", "4", "--json"]).stdout
    )
    commands = part_commands(plan, [str(corpus)], str(tmp_path / "out"), "--normalize")
    assert len(commands) == 4
    assert commands[0].endswith("--shard-index 0 --num-shards 4 --normalize")
    empty = json.loads(
        runner.invoke(cli, ["plan", str(corpus), "--num-shards", "9", "--json"]).stdout
    )
    assert len(part_commands(empty, [str(corpus)], "out")) == SHARDS  # empty parts get no task

    for command in commands[:3]:  # three of the four tasks ran
        args = [*command.split()[1:], "--model", str(tiny_model), "--num-workers", "0"]
        assert runner.invoke(cli, args).exit_code == 0
    status = json.loads(
        runner.invoke(cli, ["status", "-o", str(tmp_path / "out"), "--json"]).stdout
    )
    with pytest.raises(RuntimeError, match="pending"):
        check_complete(status, SHARDS)
    args = [*commands[3].split()[1:], "--model", str(tiny_model), "--num-workers", "0"]
    assert runner.invoke(cli, args).exit_code == 0
    status = json.loads(
        runner.invoke(cli, ["status", "-o", str(tmp_path / "out"), "--json"]).stdout
    )
    assert check_complete(status, SHARDS).startswith(f"{SHARDS} shards")


@pytest.fixture(scope="module")
def two_node_cluster():
    """A real two-node Ray cluster on this machine, one CPU per node, on 127.0.0.1 only."""
    pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # nodes advertise 127.0.0.1
    cluster = Cluster(
        initialize_head=True,
        connect=False,
        head_node_args={"num_cpus": 1, "include_dashboard": False},
    )
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    yield cluster
    cluster.shutdown()


def _cli(*args: str) -> subprocess.CompletedProcess:
    """The job as a user runs it, in its own process (its own Ray driver)."""
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    env.pop("RAY_ADDRESS", None)
    return subprocess.run(
        [sys.executable, "-m", "jobs.cli", "run", *args, "--no-progress"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_joining_a_two_node_cluster_gives_the_files_of_a_local_run(
    tmp_path, tiny_model, corpus, two_node_cluster
):
    _run(tmp_path, tiny_model, corpus, "single", normalize=True)
    address = two_node_cluster.address
    proc = _cli(
        str(corpus),
        "-o",
        str(tmp_path / "ray"),
        "--model",
        str(tiny_model),
        "--normalize",
        "--engine",
        "ray",
        "--workers",
        "2",
        "--ray-address",
        address,
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["shards_done"] == SHARDS
    assert len({w["pid"] for w in summary["workers"]}) == 2  # one actor on each 1-CPU node
    _assert_same_outputs(tmp_path / "single", tmp_path / "ray")


def test_actors_that_fit_no_node_are_a_clear_error_not_a_hang(
    tmp_path, tiny_model, corpus, two_node_cluster
):
    address = two_node_cluster.address
    base = [str(corpus), "--model", str(tiny_model), "--engine", "ray", "--ray-address", address]
    # Bigger than any node: refused before any actor starts.
    too_big = _cli(*base, "-o", str(tmp_path / "big"), "--threads", "2")
    assert too_big.returncode == 2, too_big.stderr
    assert "--threads 2" in too_big.stderr and "largest node offers 1" in too_big.stderr
    assert "Traceback" not in too_big.stderr
    assert not (tmp_path / "big").exists()
    # More actors than the nodes hold: the ones left over are never placed; a clear error
    # after --ray-timeout, and nothing written.
    too_many = _cli(*base, "-o", str(tmp_path / "many"), "--workers", "3", "--ray-timeout", "8")
    assert too_many.returncode == 1, too_many.stderr
    assert "1 of 3 actors" in too_many.stderr and "--ray-timeout 8" in too_many.stderr
    assert "Traceback" not in too_many.stderr
    assert not (tmp_path / "many").exists()


def test_under_ray_each_shard_result_reaches_the_driver_as_it_finishes(
    tmp_path, tiny_model, corpus, ray_local
):
    """One actor, several shards: the first shard's record is in the driver's hands before
    the last shard was even finished (the actor stamps finished_at when it records it), so
    progress and the ETA move while the job runs."""
    from etl.engines.ray import RayActors
    from etl.plan import plan_job

    cfg = job_config(corpus, tmp_path / "out", tiny_model, engine="ray", workers=1, threads=1)
    with RayActors(cfg) as engine:
        plan = plan_job(cfg)
        engine.start(plan)
        got = engine.run(plan)
    assert len(got) == SHARDS and all(r.status == ShardStatus.DONE for r in got)
    assert [name for name, _ in engine.arrivals] == [r.shard.rel_name for r in got]
    first_arrived = engine.arrivals[0][1]
    last_finished = max(r.finished_at for r in got)
    assert first_arrived < last_finished
    assert {r.shard.rel_name for r in got} == {f"p{i}.parquet" for i in range(SHARDS)}


def test_the_driver_hands_each_shard_to_one_worker_and_a_dead_ones_first():
    """The driver's side of --workers and Ray (etl.engines.handout): each shard once; one
    another process held, once more after all the others; the shards a worker that died was
    handed go first to the others; a dead worker's last question is not answered."""
    from etl.contract import Shard, ShardRecord
    from etl.engines.handout import Ask, Declined, Dispatch, Result

    shards = [Shard(f"/in/p{i}.parquet", f"p{i}.parquet", f"p{i}.parquet") for i in range(4)]
    answers = []
    dispatch = Dispatch(shards, lambda worker, shard: answers.append((worker, shard)))
    for worker in (0, 1, 0):
        dispatch.handle(Ask(worker))
    assert answers == [(0, 0), (1, 1), (0, 2)]
    dispatch.handle(Declined(0, 2, held=True))  # another job holds p2
    assert dispatch.handle(Result(1, ShardRecord(shards[1], ShardStatus.DONE))).shard == shards[1]
    dispatch.lost(0)  # worker 0 died holding p0
    dispatch.handle(Ask(0))  # asked before it died: nobody hears the answer
    for _ in range(3):
        dispatch.handle(Ask(2))  # its replacement
    assert answers[3:] == [(2, 0), (2, 3), (2, 2)]  # p0 first, p3, then p2 once more
    dispatch.handle(Declined(2, 2, held=True))  # still held: not offered a third time
    dispatch.handle(Result(2, ShardRecord(shards[0], ShardStatus.DONE)))
    assert dispatch.left()  # p3 is out
    dispatch.handle(Result(2, ShardRecord(shards[3], ShardStatus.FAILED)))
    dispatch.handle(Ask(2))
    assert answers[-1] == (2, None) and not dispatch.left()


def test_a_ray_actor_killed_mid_shard_is_run_again_and_every_row_is_done_once(
    tmp_path, tiny_model, ray_local
):
    """SIGKILL the actor's process while it holds a claim: Ray restarts it, the driver runs
    it again and gives it back the shards the dead one held; it takes over the dead one's
    claim, and the job ends with every shard done and every row once."""
    import threading

    rows = 2500
    _four_shards(tmp_path / "in", rows)
    out = tmp_path / "out"
    cfg = job_config(
        tmp_path / "in", out, tiny_model, engine="ray", workers=1, threads=1, batch_size=4
    )
    summaries = []
    job = threading.Thread(target=lambda: summaries.append(run_job(cfg).to_dict()), daemon=True)
    job.start()
    claims = out / "_embed_etl" / "claims"
    victim = _claimant(claims, job.is_alive, lambda: "the job ended")  # the actor holds a shard
    assert victim != os.getpid()  # the actor's process, not the driver
    os.kill(victim, signal.SIGKILL)
    job.join(timeout=300)
    assert not job.is_alive(), "the job did not end after its actor was killed"
    (summary,) = summaries
    assert (summary["shards_done"], summary["shards_failed"]) == (4, 0)
    assert summary["worker_restarts"] == 1
    ids = [
        i for p in sorted(out.glob("p*.parquet")) for i in pq.read_table(p).column("id").to_pylist()
    ]
    assert sorted(ids) == list(range(4 * rows))  # every row exactly once
    assert not list(claims.glob("*.claim"))


def test_ray_engine_writes_the_late_passages_of_one_process(tmp_path, tiny_model, ray_local):
    """Passages through Ray actors (the batches' spans travel with them): --chunking late in
    the nested layout, the same tables as one process writes."""
    texts = [" ".join(["the cat sat on the mat"] * (1 + i % 7)) for i in range(40)]
    for i in range(SHARDS):
        write_shard(tmp_path / "in" / f"p{i}.parquet", texts, ids=range(i * 100, i * 100 + 40))
    options = dict(chunk_tokens=6, chunking="late", chunk_layout="nested", threads=1)
    run_ok(tmp_path / "in", tmp_path / "one", tiny_model, **options)
    run_ok(tmp_path / "in", tmp_path / "ray", tiny_model, engine="ray", workers=2, **options)
    for i in range(SHARDS):
        one = pq.read_table(tmp_path / "one" / f"p{i}.parquet")
        assert one.num_rows == 40 and one.equals(pq.read_table(tmp_path / "ray" / f"p{i}.parquet"))
