"""The CUDA path: as the CPU in float32, close in half precision; batches in flight as the
synchronous path. Skipped without a GPU.

EMBED_ETL_TEST_DEVICE=cpu runs the same checks with the device forced to the CPU (what
`make bench-gpu --smoke` does), so that they cannot rot until a GPU is lent.
"""

from __future__ import annotations

import os

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from etl import run_job
from tests.conftest import job_config, records, run_ok, tiny_texts, write_shard

DEVICE = os.environ.get("EMBED_ETL_TEST_DEVICE", "cuda")
ON_CUDA = DEVICE.startswith("cuda")
# In flight against waited for: the same kernels on the same inputs. The CPU gives the same
# bits; on a GPU a race (a copy before its compute, a reused buffer) differs by far more than
# this, which leaves room for a library choosing another kernel for the same shapes.
TIGHT = 1e-6 if ON_CUDA else 0.0

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(
        ON_CUDA and not torch.cuda.is_available(), reason="no CUDA device on this machine"
    ),
]


def _vectors(tmp_path, model, name, **kw):
    run_ok(tmp_path / "in", tmp_path / name, model, normalize=True, **kw)
    table = pq.read_table(tmp_path / name / "s.parquet")
    (column,) = [c for c in table.column_names if c.startswith("emb_")]
    return np.array(table.column(column).to_pylist())


@pytest.mark.parametrize("model_name", ["tiny", "real"])
def test_cuda_matches_cpu(tmp_path, tiny_model, real_model, model_name):
    model = tiny_model if model_name == "tiny" else real_model
    write_shard(tmp_path / "in" / "s.parquet", tiny_texts(300, seed=5))
    cpu = _vectors(tmp_path, model, "cpu", device="cpu")
    gpu32 = _vectors(tmp_path, model, "gpu32", device=DEVICE, dtype="float32", num_workers=2)
    np.testing.assert_allclose(gpu32, cpu, atol=1e-4)
    for dtype in ("float16", "bfloat16"):
        half = _vectors(tmp_path, model, f"gpu-{dtype}", device=DEVICE, dtype=dtype)
        assert (half * cpu).sum(1).min() >= 0.99, dtype


@pytest.mark.skipif(not ON_CUDA, reason="auto picks float32 on the CPU")
def test_auto_picks_cuda_and_half_precision(tmp_path, real_model):
    write_shard(tmp_path / "in" / "s.parquet", tiny_texts(10))
    run_job(job_config(tmp_path / "in", tmp_path / "o"))
    meta = pq.read_schema(tmp_path / "o" / "s.parquet").metadata
    assert meta[b"embed_etl.dtype"] in (b"bfloat16", b"float16")


def test_batches_in_flight_match_the_synchronous_encoder(tiny_model):
    """Batches of different shapes submitted ahead, collected in order with a batch's buffers
    reused by a later one, as the runner does: each equals encode() alone. On a GPU a copy that
    ran before its batch's compute, or into a buffer still being read, would show here."""
    from etl.contract import Batch
    from etl.model.facts import read_model_info
    from etl.spec import build_output_spec
    from etl.stages.compute.encoder import Encoder

    info = read_model_info(tiny_model, "tiny")
    generator = torch.Generator().manual_seed(0)
    for dtype in ("float32", "bfloat16"):
        cfg = job_config("x", "y", tiny_model, poolings=("mean", "cls", "tokens"), layers=(-1, 1))
        encoder = Encoder(build_output_spec(cfg, info, dtype), cfg, torch.device(DEVICE))
        flight, flying, checked = encoder.in_flight, [], 0
        for rows, length in [(64, 60), (3, 5), (200, 12), (1, 64), (17, 33)] * 3:
            ids = torch.randint(5, 17, (rows, length), generator=generator)
            mask = (torch.rand(rows, length, generator=generator) > 0.2).long()
            mask[:, 0] = 1
            batch = Batch(0, 0, torch.arange(rows), ids, mask)
            if ON_CUDA:
                batch = batch.pin_memory()
            flying.append(flight.submit(batch))
            while len(flying) > flight.depth:
                submitted = flying.pop(0)
                got = flight.collect(submitted)
                want = encoder.encode(submitted.batch)
                for name, values in want.items():
                    np.testing.assert_allclose(got[name], values.numpy(), rtol=0, atol=TIGHT)
                assert (submitted.device_seconds > 0) == ON_CUDA
                flight.release(submitted)
                checked += 1
        assert checked == 15 - flight.depth
        assert len(flight.free) + len(flying) <= flight.depth + 1  # buffers were reused
        for submitted in flying:
            flight.release(submitted)


def test_the_job_with_batches_in_flight_writes_what_the_synchronous_job_writes(
    tmp_path, tiny_model, monkeypatch
):
    """Two shards of many windows, token vectors and pooled ones, forked readers (pinned inputs
    on a GPU): the same files as with every batch waited for; the GPU's time is recorded."""
    from tests.test_in_flight import Synchronous, _same_outputs

    for i in range(2):
        write_shard(tmp_path / "in" / f"s{i}.parquet", tiny_texts(400, seed=i))
    options = dict(device=DEVICE, poolings=("tokens", "mean"), batch_tokens=512, sort_window=128)
    with monkeypatch.context() as patch:
        patch.setattr("etl.stages.compute.encoder.InFlight", Synchronous)
        run_ok(tmp_path / "in", tmp_path / "sync", tiny_model, num_workers=2, **options)
    summary = run_ok(tmp_path / "in", tmp_path / "flight", tiny_model, num_workers=2, **options)
    if TIGHT:
        for name in ("s0.parquet", "s1.parquet"):
            for column in ("emb_tokens", "emb_mean"):
                want = pq.read_table(tmp_path / "sync" / name).column(column).to_pylist()
                got = pq.read_table(tmp_path / "flight" / name).column(column).to_pylist()
                for a, b in zip(got, want, strict=True):
                    np.testing.assert_allclose(np.array(a), np.array(b), rtol=0, atol=TIGHT)
    else:
        _same_outputs(tmp_path / "sync", tmp_path / "flight")
    assert summary["shards_done"] == 2
    for record in records(tmp_path / "flight"):  # unrounded
        assert (record.device_seconds > 0) == ON_CUDA
        assert record.device_seconds <= record.seconds
