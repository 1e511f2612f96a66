"""The CUDA path: as the CPU in float32, close in half precision. Skipped without a GPU.

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
from tests.conftest import job_config, run_ok, tiny_texts, write_shard

DEVICE = os.environ.get("EMBED_ETL_TEST_DEVICE", "cuda")
ON_CUDA = DEVICE.startswith("cuda")

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
