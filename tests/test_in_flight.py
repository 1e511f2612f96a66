"""Batches in flight (etl.stages.compute.inflight, etl.worker.batches), on the CPU device, which
runs the same objects as a GPU with no stream: the outputs are those of the synchronous path the
job had before (each batch computed and copied out at once, into fresh arrays), batches really
are in flight and their host buffers recycled, a shard that fails with batches in flight fails
alone, and an interrupted run leaves no batch behind."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from etl import run_job
from etl.contract import Batch, ShardStatus
from etl.stages.compute import encoder as encoder_module
from etl.stages.compute.inflight import DEPTH, InFlight
from tests.conftest import job_config, records, run_ok, tiny_texts, write_shard

STATS = ("rows_in", "null_rows", "chunked_rows", "tokens", "padded_tokens", "texts_embedded")


@dataclass
class Done:
    """A batch the synchronous reference has computed already."""

    batch: Batch
    vectors: dict = field(default_factory=dict)
    device_seconds: float = 0.0


class Synchronous:
    """What the job did before: compute, wait, copy to fresh CPU arrays; nothing in flight."""

    depth = 0

    def __init__(self, forward, device) -> None:
        self.forward = forward

    def submit(self, batch: Batch) -> Done:
        if not batch.size:
            return Done(batch)
        return Done(batch, {n: v.to("cpu").numpy() for n, v in self.forward(batch).items()})

    def collect(self, done: Done) -> dict:
        return done.vectors

    def release(self, done: Done) -> None:
        pass


def watching(monkeypatch, fail=None) -> list:
    """Make the job's encoder use an InFlight that counts what it does (and calls ``fail(stage,
    batch)`` first, which may raise); the list gets the instance."""
    made = []

    class Watched(InFlight):
        def __init__(self, forward, device) -> None:
            super().__init__(forward, device)
            self.slots = self.flying = self.most = self.submitted = self.collected = 0
            self.dropped = 0  # released without being collected
            made.append(self)

        def submit(self, batch):
            if fail is not None:
                fail("submit", batch)
            new_slot = batch.size and not self.free
            submitted = super().submit(batch)
            self.slots += bool(new_slot)
            self.flying += 1
            self.most = max(self.most, self.flying)
            self.submitted += batch.size > 0 and batch.shard_index >= 0  # not the warm-up
            return submitted

        def collect(self, submitted):
            if fail is not None:
                fail("collect", submitted.batch)
            self.collected += 1
            submitted.watched_collect = True
            return super().collect(submitted)

        def release(self, submitted):
            if submitted.slot is not None or not submitted.batch.size:
                self.flying -= 1
                self.dropped += not getattr(submitted, "watched_collect", False)
            super().release(submitted)

    monkeypatch.setattr(encoder_module, "InFlight", Watched)
    return made


def _shards(folder: Path) -> Path:
    """Three shards of many windows, with a null text and repeated texts (reused vectors). No
    text is in two shards: whether a later shard finds an earlier one's segment published is
    timing, and the records' counts are compared."""
    rng = random.Random(3)
    for i in range(3):
        texts = [f"shard{i} {text}" for text in tiny_texts(300, seed=10 + i)]
        texts += [rng.choice(texts) for _ in range(60)]
        texts.insert(50, None)
        write_shard(folder / f"s{i}.parquet", texts)
    return folder


def _long(folder: Path) -> Path:
    write_shard(folder / "long.parquet", tiny_texts(200, seed=7, longest=60))
    return folder


SMALL = {"batch_tokens": 128, "sort_window": 64}
CASES = {
    "shards": (_shards, {"poolings": ("mean", "cls"), "layers": (-1, 1), **SMALL}),
    "dtypes": (_shards, {"output_dtypes": ("float32", "float16", "binary"), **SMALL}),
    "readers": (_shards, {"poolings": ("max",), "num_workers": 2, **SMALL}),
    "no_reuse": (_shards, {"poolings": ("mean",), "no_reuse": True, **SMALL}),
    "tokens": (_shards, {"poolings": ("tokens", "mean"), **SMALL}),
    "chunk": (
        _long,
        {"poolings": ("mean", "max"), "max_length": 16, "long_text": "chunk", "chunk_overlap": 2},
    ),
    "chunk_tokens": (
        _long,
        {"poolings": ("tokens",), "max_length": 16, "long_text": "chunk", "chunk_overlap": 3},
    ),
}


def _same_outputs(a: Path, b: Path, names: list[str] | None = None, counts: bool = True) -> None:
    """The same files; with ``counts`` the same counts in the shard records too (not after a
    failure or a rerun: vectors reused from other shards and runs change what is embedded)."""
    names = names or sorted(p.name for p in a.glob("*.parquet"))
    assert names and sorted(p.name for p in b.glob("*.parquet")) == names
    for name in names:
        left, right = pq.read_table(a / name), pq.read_table(b / name)
        assert left.equals(right, check_metadata=True), name
    if counts:
        stats = {r.shard.rel_name: [getattr(r, s) for s in STATS] for r in records(a)}
        assert {r.shard.rel_name: [getattr(r, s) for s in STATS] for r in records(b)} == stats


@pytest.mark.parametrize("case", sorted(CASES))
def test_in_flight_outputs_are_the_synchronous_ones(tmp_path, tiny_model, monkeypatch, case):
    make, options = CASES[case]
    inputs = make(tmp_path / "in")
    options = {"batch_tokens": 64, "sort_window": 40, **options}
    with monkeypatch.context() as patch:
        patch.setattr(encoder_module, "InFlight", Synchronous)
        reference = run_ok(inputs, tmp_path / "sync", tiny_model, **options)
    made = watching(monkeypatch)
    updates = []
    monkeypatch.setattr("etl.worker.progress.Progress.update", lambda _, *a: updates.append(a))
    summary = run_ok(inputs, tmp_path / "flight", tiny_model, **options)
    (flight,) = made

    _same_outputs(tmp_path / "sync", tmp_path / "flight")
    if case == "shards":
        assert summary["rows_reused"] > 0 and summary["null_rows"] == 3
    if case.startswith("chunk"):
        assert summary["chunked_rows"] > 0
    # Batches were in flight, their buffers recycled, all of them given back at the end.
    assert flight.most == DEPTH + 1
    assert flight.submitted > 3 * flight.slots and flight.slots <= DEPTH + 1
    assert flight.flying == 0 and len(flight.free) == flight.slots and flight.dropped == 0
    # The bar moved once per batch collected, and counted every row once.
    assert len(updates) == flight.collected - 1  # the warm-up batch is no row
    assert sum(rows for rows, _ in updates) == summary["rows"] == reference["rows"]
    assert summary["device_seconds"] == 0  # no CUDA events on a CPU


def _failing(stage: str, shard: int, nth: int, error: type[BaseException] = RuntimeError):
    """fail(stage, batch) that raises at the nth batch with rows of one shard, at one stage."""
    seen = []

    def fail(where: str, batch: Batch) -> None:
        if where == stage and batch.shard_index == shard and batch.size:
            seen.append(batch)
            if len(seen) == nth:
                raise error(f"injected failure at {stage}")

    return fail


@pytest.mark.parametrize("where", ["submit", "collect", "reader"])
def test_a_shard_failing_with_batches_in_flight_fails_alone(
    tmp_path, tiny_model, monkeypatch, where
):
    inputs = _shards(tmp_path / "in")
    options = dict(poolings=("mean",), max_length=48, long_text="error", **SMALL)
    run_ok(inputs, tmp_path / "sync", tiny_model, **options)
    fail = _failing(where, shard=1, nth=5)
    if where == "reader":  # the reader stops s1 after several windows were sent
        texts = pq.read_table(inputs / "s1.parquet").column("text").to_pylist()
        texts[200] = " ".join(["cat"] * 60)
        write_shard(inputs / "s1.parquet", texts)
        fail = None
    made = watching(monkeypatch, fail)
    summary = run_job(job_config(inputs, tmp_path / "flight", tiny_model, **options)).to_dict()
    (flight,) = made

    assert (summary["shards_done"], summary["shards_failed"]) == (2, 1)
    failed = [s for s in summary["shards"] if s["status"] == "failed"]
    assert [s["input"] for s in failed] == ["s1.parquet"]
    assert not (tmp_path / "flight" / "s1.parquet").exists()
    assert flight.flying == 0 and len(flight.free) == flight.slots
    assert flight.dropped > 0  # s1 had batches in flight when it failed
    _same_outputs(tmp_path / "sync", tmp_path / "flight", ["s0.parquet", "s2.parquet"], False)
    if where != "reader":
        # Once the failure is gone, a rerun does s1 only, and every output is the reference's.
        monkeypatch.undo()
        again = run_ok(inputs, tmp_path / "flight", tiny_model, **options)
        assert (again["shards_done"], again["shards_skipped"]) == (1, 2)
        _same_outputs(tmp_path / "sync", tmp_path / "flight", counts=False)


def test_an_interrupt_with_batches_in_flight_drops_them_and_a_rerun_finishes(
    tmp_path, tiny_model, monkeypatch
):
    """SIGTERM reaches the job as KeyboardInterrupt (jobs.cli), here while a batch is awaited."""
    inputs = _shards(tmp_path / "in")
    options = dict(poolings=("mean",), **SMALL)
    run_ok(inputs, tmp_path / "sync", tiny_model, **options)
    made = watching(monkeypatch, _failing("collect", 2, nth=3, error=KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        run_job(job_config(inputs, tmp_path / "flight", tiny_model, **options))
    (flight,) = made
    assert flight.flying == 0 and len(flight.free) == flight.slots  # every batch let go
    assert flight.dropped > 0
    assert not list((tmp_path / "flight").glob("s2*"))  # nothing of the interrupted shard
    monkeypatch.undo()
    again = run_ok(inputs, tmp_path / "flight", tiny_model, **options)
    assert again["shards_done"] + again["shards_skipped"] == 3 and again["shards_done"] >= 1
    _same_outputs(tmp_path / "sync", tmp_path / "flight", counts=False)
    assert all(r.status == ShardStatus.DONE for r in records(tmp_path / "flight"))


def test_collected_vectors_are_views_until_release_then_the_buffers_are_reused(tiny_model):
    """The contract the runner relies on: a slot is reused only after release."""
    import torch

    from etl.model.facts import read_model_info
    from etl.spec import build_output_spec
    from etl.stages.compute.encoder import Encoder

    cfg = job_config("x", "y", tiny_model, poolings=("mean",))
    spec = build_output_spec(cfg, read_model_info(tiny_model, "tiny"), "float32")
    encoder = Encoder(spec, cfg, torch.device("cpu"))
    flight = encoder.in_flight
    ids = torch.tensor([[2, 5, 6, 3], [2, 7, 3, 0]])
    batch = Batch(0, 0, torch.arange(2), ids, (ids > 0).long())
    first = flight.submit(batch)
    second = flight.submit(batch)  # the first's slot is not free yet
    slot = first.slot
    assert slot is not None and slot is not second.slot
    got = flight.collect(first)["emb_mean"]
    np.testing.assert_array_equal(got, encoder.encode(batch)["emb_mean"].numpy())
    flight.release(first)
    flight.release(first)  # twice is harmless
    assert flight.free.count(slot) == 1
    third = flight.submit(batch)
    assert third.slot is slot and not flight.free
    assert np.shares_memory(flight.collect(third)["emb_mean"], got)  # the first's buffer
