"""Shards as the unit of work: resume, reruns, refusals, status, plan and partitions."""

from __future__ import annotations

import json
import os

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from etl import OutputConflictError, run_job
from etl.contract import ShardStatus
from etl.inputs import discover, partition
from etl.state.job_record import read_job
from etl.state.manifest import Manifest
from etl.storage import open_storage
from jobs.cli import cli
from tests.conftest import job_config, records, tiny_texts, write_shard


@pytest.fixture
def corpus3(tmp_path):
    for i in range(3):
        write_shard(
            tmp_path / "in" / f"p{i}.parquet",
            tiny_texts(20, seed=i),
            ids=range(i * 20, i * 20 + 20),
        )
    return tmp_path / "in"


def _cfg(tmp_path, tiny_model, inputs, **kw):
    return job_config(inputs, tmp_path / "out", tiny_model, **kw)


class EncoderSpy:
    """Counts model loads and batches through the real encoder."""

    def __init__(self, monkeypatch):
        import etl.stages.compute.encoder

        self.loads = 0
        self.batches = 0
        real_init, real_forward = (
            etl.stages.compute.encoder.Encoder.__init__,
            etl.stages.compute.encoder.Encoder.forward,  # every forward pass, in flight or not
        )

        def init(encoder, *a, **kw):
            self.loads += 1
            real_init(encoder, *a, **kw)

        def forward(encoder, batch):
            self.batches += 1
            return real_forward(encoder, batch)

        monkeypatch.setattr(etl.stages.compute.encoder.Encoder, "__init__", init)
        monkeypatch.setattr(etl.stages.compute.encoder.Encoder, "forward", forward)


def test_rerun_does_zero_work_and_does_not_load_the_model(
    tmp_path, tiny_model, corpus3, monkeypatch
):
    first = run_job(_cfg(tmp_path, tiny_model, corpus3))
    assert first.to_dict()["shards_done"] == 3
    spy = EncoderSpy(monkeypatch)
    again = run_job(_cfg(tmp_path, tiny_model, corpus3)).to_dict()
    assert (again["shards_done"], again["shards_skipped"], again["rows"]) == (0, 3, 0)
    assert spy.loads == 0 and spy.batches == 0


def test_changed_or_deleted_shards_are_redone_and_only_they(
    tmp_path, tiny_model, corpus3, monkeypatch
):
    run_job(_cfg(tmp_path, tiny_model, corpus3))
    write_shard(corpus3 / "p1.parquet", tiny_texts(7, seed=9), ids=range(500, 507))  # input changed
    (tmp_path / "out" / "p2.parquet").unlink()  # output lost
    write_shard(corpus3 / "p3.parquet", tiny_texts(5), ids=range(900, 905))  # new input
    spy = EncoderSpy(monkeypatch)
    summary = run_job(_cfg(tmp_path, tiny_model, corpus3)).to_dict()
    assert sorted(s["input"] for s in summary["shards"]) == [
        "p1.parquet",
        "p2.parquet",
        "p3.parquet",
    ]
    assert summary["shards_skipped"] == 1 and spy.loads == 1 and spy.batches > 0
    assert pq.read_table(tmp_path / "out" / "p1.parquet").column("id").to_pylist() == list(
        range(500, 507)
    )


def test_other_options_into_the_same_output_are_refused_unless_overwrite(
    tmp_path, tiny_model, corpus3
):
    run_job(_cfg(tmp_path, tiny_model, corpus3))
    with pytest.raises(OutputConflictError, match=r"normalize: false -> true.*--overwrite"):
        run_job(_cfg(tmp_path, tiny_model, corpus3, normalize=True))
    with pytest.raises(OutputConflictError, match=r"columns: .*emb_cls"):
        run_job(_cfg(tmp_path, tiny_model, corpus3, poolings=("cls",)))
    summary = run_job(_cfg(tmp_path, tiny_model, corpus3, normalize=True, overwrite=True)).to_dict()
    assert summary["shards_done"] == 3
    meta = pq.read_schema(tmp_path / "out" / "p0.parquet").metadata
    assert meta[b"embed_etl.normalize"] == b"true"
    assert read_job(open_storage(tmp_path / "out"))["identity"]["normalize"] is True


def test_output_of_other_options_without_manifest_is_refused(tmp_path, tiny_model, corpus3):
    run_job(_cfg(tmp_path, tiny_model, corpus3))
    Manifest(open_storage(tmp_path / "out")).clear()
    with pytest.raises(OutputConflictError, match=r"p0\.parquet was made with other options"):
        run_job(_cfg(tmp_path, tiny_model, corpus3, max_length=16))


def test_status_only_failed_and_exit_codes(tmp_path, tiny_model, corpus3):
    bad = corpus3 / "p9.parquet"
    bad.write_bytes(b"this is not parquet")
    runner = CliRunner()
    args = [
        "run",
        str(corpus3),
        "-o",
        str(tmp_path / "out"),
        "--model",
        str(tiny_model),
        "--num-workers",
        "0",
    ]
    first = runner.invoke(cli, args)
    assert first.exit_code == 3, first.output
    assert json.loads(first.stdout)["shards_failed"] == 1

    status = runner.invoke(cli, ["status", "-o", str(tmp_path / "out"), "--json"])
    assert status.exit_code == 3
    report = json.loads(status.stdout)
    assert (report["done"], report["failed"], report["pending"]) == (3, 1, 0)
    assert report["failed_shards"][0]["input"] == "p9.parquet"
    assert "p9.parquet" in report["failed_shards"][0]["error"]
    human = runner.invoke(cli, ["status", "-o", str(tmp_path / "out")])
    assert "1 failed" in human.stdout and "--only-failed" in human.stdout

    write_shard(corpus3 / "p9.parquet", tiny_texts(4), ids=range(90, 94))  # fixed
    write_shard(corpus3 / "p8.parquet", tiny_texts(4))  # new, pending: not touched by --only-failed
    again = runner.invoke(cli, [*args, "--only-failed"])
    assert again.exit_code == 0, again.output
    summary = json.loads(again.stdout)
    assert [s["input"] for s in summary["shards"]] == ["p9.parquet"]
    status = runner.invoke(cli, ["status", "-o", str(tmp_path / "out"), "--json"])
    assert status.exit_code == 4  # p8 pending
    assert json.loads(status.stdout)["pending"] == 1


def test_status_of_a_directory_without_a_job_is_a_usage_error(tmp_path):
    result = CliRunner().invoke(cli, ["status", "-o", str(tmp_path)])
    assert result.exit_code == 2 and "no embed-etl job found" in result.stderr


def test_partitions_are_disjoint_and_cover_everything(tmp_path):
    for i in range(11):
        write_shard(tmp_path / "in" / f"s{i:02d}.parquet", ["x"])
    shards = discover((str(tmp_path / "in"),), str(tmp_path / "out"))
    parts = partition(shards, 4)
    names = [s.rel_name for part in parts for s in part]
    assert sorted(names) == sorted(s.rel_name for s in shards) and len(set(names)) == 11
    assert [len(p) for p in parts] == [3, 3, 3, 2]
    assert partition(list(reversed(shards)), 4) == parts  # deterministic

    result = CliRunner().invoke(cli, ["plan", str(tmp_path / "in"), "--num-shards", "4", "--json"])
    assert result.exit_code == 0
    plan = json.loads(result.stdout)
    assert [p["inputs"] for p in plan["parts"]] == [[s.rel_name for s in p] for p in parts]


def test_shard_index_runs_only_its_part(tmp_path, tiny_model, corpus3):
    runs = [
        run_job(_cfg(tmp_path, tiny_model, corpus3, shard_index=i, num_shards=2)).to_dict()
        for i in range(2)
    ]
    done = [[s["input"] for s in r["shards"]] for r in runs]
    assert done == [["p0.parquet", "p2.parquet"], ["p1.parquet"]]
    assert sorted(os.listdir(tmp_path / "out")) == [
        "_embed_etl",
        "p0.parquet",
        "p1.parquet",
        "p2.parquet",
    ]


def test_manifest_record_says_what_was_done(tmp_path, tiny_model, corpus3):
    run_job(_cfg(tmp_path, tiny_model, corpus3))
    record = records(tmp_path / "out")[0]
    assert record.status == ShardStatus.DONE and record.rows_in == record.rows_out == 20
    st = os.stat(corpus3 / "p0.parquet")
    assert (record.input_size, record.input_mtime_ns) == (st.st_size, st.st_mtime_ns)
    assert record.fingerprint == read_job(open_storage(tmp_path / "out"))["fingerprint"]
    assert record.seconds > 0 and record.tokens > 0 and record.pid == os.getpid()
    assert record.started_at <= record.finished_at and record.host
    raw = json.loads((tmp_path / "out" / "_embed_etl" / "shards" / "p0.parquet.json").read_text())
    for key in ("fingerprint", "seconds", "started_at", "finished_at", "tokens", "host", "pid"):
        assert key in raw  # the JSON on disk, for other tools
