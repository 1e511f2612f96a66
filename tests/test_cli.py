"""The command line: thin, quick to answer, one clear line per user error, documented exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from jobs.cli import cli
from tests.conftest import REPO, tiny_texts, write_shard

BIN = Path(sys.executable).parent


def _run(args, env=None):
    return CliRunner().invoke(cli, args, env=env, catch_exceptions=False)


def test_help_lists_every_option_with_its_env_var():
    result = _run(["run", "--help"])
    assert result.exit_code == 0
    for option in (
        "--output",
        "--model",
        "--text-column",
        "--id-column",
        "--keep-column",
        "--pooling",
        "--layer",
        "--normalize",
        "--max-length",
        "--batch-size",
        "--batch-tokens",
        "--device",
        "--dtype",
        "--num-workers",
    ):
        assert option in result.output
        env = "EMBED_ETL_" + option[2:].upper().replace("-", "_")
        assert env in result.output, env
    assert "Exit codes" in result.output


def test_cli_module_does_not_import_torch():
    code = "import sys, jobs.cli; print('torch' in sys.modules, 'transformers' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True
    )
    assert out.stdout.split() == ["False", "False"]


def test_run_prints_one_json_summary_and_exits_0(tmp_path, tiny_model):
    write_shard(tmp_path / "in" / "s.parquet", tiny_texts(6))
    result = _run(
        [
            "run",
            str(tmp_path / "in"),
            "-o",
            str(tmp_path / "out"),
            "--model",
            str(tiny_model),
            "--num-workers",
            "0",
            "--no-progress",
        ]
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["rows"] == 6 and summary["shards_done"] == 1 and summary["status"] == "ok"


def test_options_come_from_environment_variables(tmp_path, tiny_model):
    write_shard(tmp_path / "in" / "s.parquet", tiny_texts(4))
    env = {
        "EMBED_ETL_MODEL": str(tiny_model),
        "EMBED_ETL_POOLING": "cls max",
        "EMBED_ETL_OUTPUT": str(tmp_path / "out"),
        "EMBED_ETL_NUM_WORKERS": "0",
    }
    result = _run(["run", str(tmp_path / "in"), "--no-progress"], env=env)
    assert result.exit_code == 0, result.output
    names = pq.read_schema(tmp_path / "out" / "s.parquet").names
    assert names == ["id", "n_tokens", "truncated", "emb_cls", "emb_max"]


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--pooling", "pooler", "--layer", "2"], "pooler exists only on top of the last layer"),
        (["--layer", "9"], "--layer 9"),
        (["--text-column", "body"], "no column 'body' (--text-column)"),
        (["--batch-size", "0"], "--batch-size"),
        (["--device", "cuda:7"], "--device cuda:7"),
    ],
)
def test_usage_errors_exit_2_with_one_line_and_write_nothing(tmp_path, tiny_model, extra, message):
    if extra == ["--device", "cuda:7"]:
        import torch

        if torch.cuda.device_count() > 7:
            pytest.skip("this machine has 8 GPUs")
    write_shard(tmp_path / "in" / "s.parquet", tiny_texts(3))
    result = _run(
        [
            "run",
            str(tmp_path / "in"),
            "-o",
            str(tmp_path / "out"),
            "--model",
            str(tiny_model),
            *extra,
        ]
    )
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


def test_missing_column_message_names_file_and_its_columns(tmp_path, tiny_model):
    shard = write_shard(tmp_path / "in" / "s.parquet", tiny_texts(3))
    result = _run(
        [
            "run",
            str(shard),
            "-o",
            str(tmp_path / "out"),
            "--model",
            str(tiny_model),
            "--id-column",
            "key",
        ]
    )
    assert result.exit_code == 2
    assert str(shard) in result.stderr and "the file has: id, text" in result.stderr


def test_bad_model_directory_is_a_clear_error(tmp_path):
    write_shard(tmp_path / "in" / "s.parquet", tiny_texts(3))
    (tmp_path / "model").mkdir()
    result = _run(
        [
            "run",
            str(tmp_path / "in"),
            "-o",
            str(tmp_path / "out"),
            "--model",
            str(tmp_path / "model"),
        ]
    )
    assert result.exit_code == 1
    assert "config.json not found" in result.stderr and "Traceback" not in result.output


def test_console_script_embeds_the_sample_corpus(tmp_path):
    """What `make embed` runs: the installed entry point, the default model, the shipped sample."""
    out = tmp_path / "out"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [str(BIN / "embed-etl"), "run", "jobs/sample/corpus", "--output", str(out)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["rows"] == 50 and summary["shards_done"] == 2
    assert pq.read_schema(out / "part-00000.parquet").field("emb_model").type.list_size == 384
