"""Shared fixtures: a tiny seeded BERT built here, the packaged real model, the shared corpus."""

from __future__ import annotations

import ast
import contextlib
import os
import signal
import subprocess
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no test may reach the network
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]


# The shared corpus lives beside the checkout (../shared/corpus/pydocs), or where
# EMBED_ETL_CORPUS says; tests that need it take the `corpus` fixture, which skips without it.
CORPUS = Path(os.environ.get("EMBED_ETL_CORPUS") or REPO.parent / "shared" / "corpus" / "pydocs")

TINY_WORDS = ["the", "cat", "dog", "sat", "on", "a", "mat", "ran", "far", "away", "big", "red"]
TINY_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *TINY_WORDS]
TINY_LAYERS = 3


@pytest.fixture(scope="session", autouse=True)
def _digest_cache(tmp_path_factory):
    """Remembered file digests go to this session's own folder, not the user's cache."""
    os.environ["EMBED_ETL_CACHE_DIR"] = str(tmp_path_factory.mktemp("embed-etl-cache"))
    yield


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A 3-layer BERT, hidden size 32, seeded, saved and loaded back like any real model."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny-bert"))


def build_tiny_model(path: Path) -> Path:
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(TINY_VOCAB),
        hidden_size=32,
        num_hidden_layers=TINY_LAYERS,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
        initializer_range=0.5,  # large weights, so that layers differ visibly
    )
    BertModel(config).eval().save_pretrained(path)
    tokenizer = BertTokenizerFast(
        vocab={w: i for i, w in enumerate(TINY_VOCAB)}, do_lower_case=True
    )
    ids = tokenizer("the cat sat")["input_ids"]
    assert ids == [2, 5, 6, 8, 3], f"tiny tokenizer ignored its vocabulary: {ids}"
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def real_model() -> Path:
    from etl.model.locate import default_model_path

    return default_model_path()


@pytest.fixture(scope="session")
def corpus() -> Path:
    if not CORPUS.is_dir():
        pytest.skip(f"shared corpus not found at {CORPUS} (set EMBED_ETL_CORPUS)")
    return CORPUS


def tiny_texts(n: int, seed: int = 0, longest: int = 40) -> list[str]:
    """Sentences of very different lengths from the tiny vocabulary."""
    import random

    rng = random.Random(seed)
    lengths = [rng.choice([1, 2, 3, longest // 2, longest]) for _ in range(n)]
    return [" ".join(rng.choice(TINY_WORDS) for _ in range(k)) for k in lengths]


def write_shard(path: Path, texts: list, ids: list | None = None, **extra) -> Path:
    """Write a Parquet shard with id, text and any extra columns."""
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = {"id": pa.array(ids if ids is not None else range(len(texts)), pa.int64())}
    columns["text"] = pa.array(texts, pa.string())
    columns.update(extra)
    pq.write_table(pa.table(columns), path)
    return path


@contextlib.contextmanager
def set_environment(settings: dict[str, str]):
    """These environment variables while the block runs; what was there before, after."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in settings.items():
            patch.setenv(name, value)
        yield


def without_row(table: pa.Table, row: int) -> bytes:
    """A Parquet file of ``table`` with one row cut out, its metadata kept: a planted fault."""
    import io

    cut = pa.concat_tables([table.slice(0, row), table.slice(row + 1)])
    buffer = io.BytesIO()
    pq.write_table(cut.replace_schema_metadata(table.schema.metadata), buffer)
    return buffer.getvalue()


def wait_until(proc, condition, what: str, timeout: float = 300, poll: float = 0.005) -> None:
    """Poll the job's state (not the clock) until ``condition()`` holds; fail if the job ends
    first or it takes over ``timeout`` seconds."""
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            pytest.fail(f"job ended before {what}: {proc.stderr.read()}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(poll)


def start_job(args: list[str], **popen) -> subprocess.Popen:
    """A job in a process group of its own (its readers and workers with it), output piped
    unless ``popen`` says otherwise: kill_group stops all of it."""
    options = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True, **popen}
    return subprocess.Popen(args, cwd=REPO, start_new_session=True, **options)


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the job's whole process group, as a crash would, and reap it."""
    with contextlib.suppress(ProcessLookupError):  # the group may be gone already
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def kill_when(proc: subprocess.Popen, reached, what: str, **wait) -> None:
    """wait_until ``reached()``, then kill_group, whatever happened."""
    try:
        wait_until(proc, reached, what, **wait)
    finally:
        kill_group(proc)


def job_args(model: Path, inputs: Path, output: Path, *extra: str) -> list[str]:
    """`embed-etl run INPUTS -o OUTPUT --model MODEL --no-progress ...` for a process of its
    own (the tests that kill or signal a job)."""
    import sys

    return [
        sys.executable,
        "-m",
        "jobs.cli",
        "run",
        str(inputs),
        "-o",
        str(output),
        "--model",
        str(model),
        "--no-progress",
        *extra,
    ]


def run_cli(tmp_path: Path, model: Path, *extra: str):
    """`embed-etl run <tmp>/in -o <tmp>/out --model MODEL` in-process; never a traceback."""
    from click.testing import CliRunner

    from jobs.cli import cli

    args = [
        "run",
        str(tmp_path / "in"),
        "-o",
        str(tmp_path / "out"),
        "--model",
        str(model),
        "--num-workers",
        "0",
        "--no-progress",
        *extra,
    ]
    result = CliRunner().invoke(cli, args)
    assert "Traceback" not in result.output
    return result


@pytest.fixture(scope="session")
def s3_server():
    """A real S3 API server (moto) on 127.0.0.1, for this test session; the job and boto3 find
    it through the standard AWS environment variables only."""
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    pytest.importorskip("moto")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # Small multipart parts, so that tiny test shards go up in several parts.
    env = {**os.environ, "S3_UPLOAD_PART_MIN_SIZE": "1024"}
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:  # wait until it answers
        try:
            urllib.request.urlopen(url, timeout=1).close()
            break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                pytest.fail("the S3 server (moto) did not start")
            time.sleep(0.05)
    aws = {
        "AWS_ENDPOINT_URL": url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "EMBED_ETL_PART_SIZE": "65536",
    }
    with set_environment(aws):
        yield aws
    server.terminate()
    server.wait(timeout=30)


def job_config(inputs, output, model=None, **kw):
    """The JobConfig every test builds: quiet, readers in-process unless asked otherwise."""
    from etl import JobConfig

    inputs = (inputs,) if isinstance(inputs, (str, Path)) else inputs
    if "output_dtype" in kw:  # one encoding, as most tests want
        kw["output_dtypes"] = (kw.pop("output_dtype"),)
    return JobConfig(
        inputs=tuple(str(i) for i in inputs),
        output_dir=str(output),
        model=str(model) if model is not None else None,
        progress=False,
        **{"num_workers": 0, **kw},
    )


def run_ok(inputs, output, model=None, **kw) -> dict:
    """Run a job in this process; assert it succeeded; its summary as a dict."""
    from etl import run_job

    summary = run_job(job_config(inputs, output, model, **kw)).to_dict()
    assert summary["status"] == "ok", summary
    return summary


def records(output) -> list:
    """The manifest records (ShardRecord) of an output location."""
    from etl.state.manifest import Manifest
    from etl.storage import open_storage

    return Manifest(open_storage(output)).records()


def code_strings(tree: ast.Module) -> list[str]:
    """The module's string constants that are code, not docstrings (f-string pieces included)."""
    docstrings = {
        id(n.body[0].value)
        for n in ast.walk(tree)
        if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))
        and n.body
        and isinstance(n.body[0], ast.Expr)
        and isinstance(n.body[0].value, ast.Constant)
    }
    return [
        n.value
        for n in ast.walk(tree)
        if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docstrings
    ]
