"""Outputs, stores and models made by someone else: what they may not decide on this machine."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.conftest import REPO, run_cli, write_shard
from tests.models import CASES, save_sentence_transformer, texts
from tests.test_s3 import _keys

BERT = next(c for c in CASES if c.arch == "bert")


@pytest.fixture(scope="module")
def custom_model(tmp_path_factory):
    """A tiny BERT mapped (auto_map) to its own module, which touches a marker when imported."""
    root = tmp_path_factory.mktemp("custom")
    model = save_sentence_transformer(BERT, root / "model")
    marker = root / "imported"
    config = json.loads((model / "config.json").read_text())
    config["auto_map"] = {"AutoModel": "modeling_custom.CustomBert"}
    config["architectures"] = ["CustomBert"]
    (model / "config.json").write_text(json.dumps(config))
    (model / "modeling_custom.py").write_text(
        "import pathlib\n"
        "from transformers import BertModel\n\n"
        f"pathlib.Path({str(marker)!r}).touch()\n\n\n"
        "class CustomBert(BertModel):\n    pass\n"
    )
    return model, marker


def _verify(tmp_path, out, *extra):
    """`embed-etl verify --recompute 5` by another user: a fresh process and modules cache."""
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "verifier-modules")}
    env.pop("EMBED_ETL_TRUST_REMOTE_CODE", None)
    return _cli(env, "verify", "-o", str(out), "--recompute", "5", "--device", "cpu", *extra)


def _cli(env, *args):
    """`embed-etl ARGS` in a process of its own, with this environment."""
    return subprocess.run(
        [sys.executable, "-m", "jobs.cli", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_verify_recompute_runs_a_models_code_only_with_the_verifiers_consent(
    tmp_path, custom_model, monkeypatch
):
    model, marker = custom_model
    write_shard(tmp_path / "in" / "s.parquet", texts(8))
    monkeypatch.setenv("HF_MODULES_CACHE", str(tmp_path / "owner-modules"))
    owner = run_cli(tmp_path, model, "--trust-remote-code")
    assert owner.exit_code == 0, owner.output
    assert marker.exists()  # the owner's run imported the model's code
    marker.unlink()
    job = json.loads((tmp_path / "out" / "_embed_etl" / "job.json").read_text())
    assert job["options"]["trust_remote_code"] is True  # the record says so; it is not enough

    refused = _verify(tmp_path, tmp_path / "out")
    assert refused.returncode == 1, refused.stderr
    assert "--trust-remote-code" in refused.stderr and str(model) in refused.stderr
    assert "Traceback" not in refused.stderr
    assert not marker.exists()

    trusted = _verify(tmp_path, tmp_path / "out", "--trust-remote-code")
    assert trusted.returncode == 0, trusted.stderr + trusted.stdout
    assert "recomputed 5 sampled rows" in trusted.stdout and "DIFFERS" not in trusted.stdout
    assert marker.exists()


def test_verify_recompute_with_a_local_copy_of_the_model_and_with_another_model(
    tmp_path, custom_model, tiny_model, monkeypatch
):
    model, _ = custom_model
    write_shard(tmp_path / "in" / "s.parquet", texts(8))
    monkeypatch.setenv("HF_MODULES_CACHE", str(tmp_path / "owner-modules"))
    assert run_cli(tmp_path, model, "--trust-remote-code").exit_code == 0
    copy = shutil.copytree(model, tmp_path / "verifier-copy")
    same = _verify(tmp_path, tmp_path / "out", "--trust-remote-code", "--model", str(copy))
    assert same.returncode == 0, same.stderr
    other = _verify(tmp_path, tmp_path / "out", "--model", str(tiny_model))
    assert other.returncode == 2 and f"--model {tiny_model} is not the job's model" in (
        other.stderr
    )
    alone = _verify(tmp_path, tmp_path / "out", "--model", str(copy))
    assert alone.returncode == 1 and "--trust-remote-code" in alone.stderr


@pytest.mark.parametrize("option", [["--model", "m"], ["--trust-remote-code"]])
def test_verify_refuses_model_options_without_recompute(tmp_path, option):
    from click.testing import CliRunner

    from jobs.cli import cli

    result = CliRunner().invoke(cli, ["verify", "-o", str(tmp_path), *option])
    assert result.exit_code == 2 and f"{option[0]}: only with --recompute N" in result.stderr


def test_a_torch_older_than_2_6_stops_the_job_before_any_model_is_read(
    tmp_path, tiny_model, monkeypatch
):
    import torch

    write_shard(tmp_path / "in" / "s.parquet", texts(3))
    monkeypatch.setattr(torch, "__version__", "2.5.1+cpu")
    result = run_cli(tmp_path, tiny_model)
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "torch 2.5.1+cpu" in lines[0] and "torch>=2.6" in lines[0]
    assert not (tmp_path / "out").exists()


class _Planted:
    """A pickle that runs code when unpickled without weights_only: it touches a file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_bin_weights_are_read_with_weights_only_and_safetensors_win(tmp_path, monkeypatch):
    import pyarrow.parquet as pq
    import torch

    model = save_sentence_transformer(BERT, tmp_path / "model")
    write_shard(tmp_path / "in" / "s.parquet", texts(6))
    args = ("--backend", "transformers")
    assert run_cli(tmp_path, model, *args).exit_code == 0
    expected = pq.read_table(tmp_path / "out" / "s.parquet").column("emb_model")

    # Beside the safetensors, a .bin whose weights are all wrong: never read.
    from safetensors.torch import load_file

    state = {k: torch.zeros_like(v) for k, v in load_file(model / "model.safetensors").items()}
    torch.save(state, model / "pytorch_model.bin")
    both = run_cli(tmp_path, model, *args, "--output", str(tmp_path / "both"))
    assert both.exit_code == 0, both.output
    got = pq.read_table(tmp_path / "both" / "s.parquet").column("emb_model")
    assert got.to_pylist() == expected.to_pylist()

    # Only a .bin, and it carries a pickle that would run code: refused, nothing ran.
    (model / "model.safetensors").unlink()
    marker = tmp_path / "ran"
    torch.save({"planted": _Planted(marker)}, model / "pytorch_model.bin")
    planted = run_cli(tmp_path, model, *args, "--output", str(tmp_path / "planted"))
    assert planted.exit_code != 0
    assert not marker.exists()
    assert str(model) in planted.stderr


SECRET = "SeCrEt-kEy-4242"
TOKEN = "ToKeN-sEcReT-7777"


def test_credentials_in_uris_reach_no_record_log_or_error(tmp_path, tiny_model, s3_server):
    """Input and output URIs carry the only credentials (userinfo, a session token in the
    query): the job uses them, and no object it writes, no log line and no error line holds
    either secret."""
    import uuid

    import boto3
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tests.conftest import tiny_texts

    s3 = boto3.client("s3")
    bucket = f"trust-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    for i in range(2):
        path = write_shard(tmp_path / f"p{i}.parquet", tiny_texts(20, seed=i))
        s3.put_object(Bucket=bucket, Key=f"in/p{i}.parquet", Body=path.read_bytes())
    bad = tmp_path / "bad.parquet"  # no text column: that shard fails, naming its input
    pq.write_table(pa.table({"id": [1], "body": ["x"]}), bad)
    s3.put_object(Bucket=bucket, Key="in/p9.parquet", Body=bad.read_bytes())

    auth = f"AKIDTRUST:{SECRET}@{bucket}"
    query = f"?region=us-east-1&session_token={TOKEN}"
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("AWS_") or k == "AWS_ENDPOINT_URL"
    }

    def cli(*args):
        return _cli(env, *args)

    out = f"s3://{auth}/out{query}"
    common = ("--model", str(tiny_model), "--verbose", "--no-progress", "--num-workers", "1")
    run = cli("run", f"s3://{auth}/in/{query}", "-o", out, *common)
    assert run.returncode == 3, run.stderr  # two shards done, one failed
    assert "p9.parquet" in run.stderr and "<redacted>" in run.stderr + run.stdout
    keys = _keys(s3, bucket, "out/")
    assert "out/p0.parquet" in keys and "out/p1.parquet" in keys
    assert any(k.startswith("out/_embed_etl/") for k in keys)
    status = cli("status", "-o", out, "--json")
    verify = cli("verify", "-o", out)  # the recorded inputs lost their credentials
    assert verify.returncode == 2 and "give INPUT again" in verify.stderr
    unknown = cli("run", f"s3://{auth}/in/?region=x&sig={TOKEN}", "-o", out, *common)
    assert unknown.returncode == 2 and "'sig'" in unknown.stderr
    written = [s3.get_object(Bucket=bucket, Key=k)["Body"].read() for k in keys]
    said = [p.stdout + p.stderr for p in (run, status, verify, unknown)]
    for secret in (SECRET, TOKEN):
        assert not [k for k, data in zip(keys, written, strict=True) if secret.encode() in data]
        assert not [text for text in said if secret in text]


@pytest.mark.parametrize(
    "text, expected",
    [
        ("INPUT s3://K:S@b/in/?t=S: none", "INPUT s3://<redacted>@b/in/?<redacted>: none"),
        ('{"p": "https://h/x?X-Amz-Signature=S"}', '{"p": "https://h/x?<redacted>"}'),
        ("s3://b/p?.parquet and /local/a?b=1", "s3://b/p?.parquet and /local/a?b=1"),
        ("ValueError('az://u:S@acct/c')", "ValueError('az://<redacted>@acct/c')"),
        ("abfss://container@acct.dfs/p", "abfss://container@acct.dfs/p"),  # a name, kept
    ],
)
def test_redact_hides_userinfo_and_queries_and_keeps_globs(text, expected):
    from etl.redact import redact

    assert redact(text) == expected


@pytest.mark.parametrize("folder", ["/etc", "../elsewhere", "1_Pooling/../../elsewhere", "link"])
def test_a_models_modules_stay_inside_its_directory(tmp_path, folder):
    model = save_sentence_transformer(BERT, tmp_path / "model")
    (tmp_path / "elsewhere").mkdir()
    (model / "link").symlink_to(tmp_path / "elsewhere")
    modules = json.loads((model / "modules.json").read_text())
    modules[1]["path"] = folder
    (model / "modules.json").write_text(json.dumps(modules))
    write_shard(tmp_path / "in" / "s.parquet", texts(3))
    result = run_cli(tmp_path, model)
    assert result.exit_code == 2, result.output
    assert f"has the path {folder!r}, outside the model's directory" in result.stderr
    assert not (tmp_path / "out").exists()


def _run(*args):
    from click.testing import CliRunner

    from jobs.cli import cli

    result = CliRunner().invoke(cli, ["run", *args, "--no-progress"])
    assert "Traceback" not in result.output
    return result


def test_object_keys_that_would_share_an_output_or_leave_it_are_refused(
    tmp_path, tiny_model, s3_server
):
    import uuid

    import boto3

    s3 = boto3.client("s3")
    bucket = f"keys-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    data = write_shard(tmp_path / "s.parquet", texts(3)).read_bytes()
    for key in ("twice/a//b.parquet", "twice/a/b.parquet", "up/x/../y.parquet"):
        s3.put_object(Bucket=bucket, Key=key, Body=data)
    model = ("--model", str(tiny_model))
    twice = _run(f"s3://{bucket}/twice/", "-o", str(tmp_path / "o1"), *model)
    assert twice.exit_code == 2 and "same relative name 'a/b.parquet'" in twice.stderr
    up = _run(f"s3://{bucket}/up/", "-o", str(tmp_path / "o2"), *model)
    assert up.exit_code == 2 and "'..' in its key" in up.stderr
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists()


def test_a_shard_named_like_a_glob_beside_another_with_two_workers(tmp_path, tiny_model):
    import pyarrow.parquet as pq

    from tests.conftest import tiny_texts

    write_shard(tmp_path / "in" / "*.parquet", tiny_texts(40, seed=1), ids=range(40))
    write_shard(tmp_path / "in" / "a.parquet", tiny_texts(40, seed=2), ids=range(40, 80))
    both = _run(
        str(tmp_path / "in"),
        "-o",
        str(tmp_path / "out"),
        "--model",
        str(tiny_model),
        "--workers",
        "2",
    )
    assert both.exit_code == 0, both.output
    for i, name in enumerate(("*.parquet", "a.parquet")):
        alone = tmp_path / f"alone-{i}"
        (alone / "in").mkdir(parents=True)
        (alone / "in" / name).write_bytes((tmp_path / "in" / name).read_bytes())
        assert (
            _run(str(alone / "in"), "-o", str(alone / "out"), "--model", str(tiny_model)).exit_code
            == 0
        )
        got = pq.ParquetFile(tmp_path / "out" / name).read()  # a literal name, no glob
        want = pq.ParquetFile(alone / "out" / name).read()
        assert got.column("id").to_pylist() == want.column("id").to_pylist()
        assert got.column("emb_mean").to_pylist() == want.column("emb_mean").to_pylist()


def test_a_link_out_of_the_output_directory_is_not_followed(tmp_path, tiny_model):
    write_shard(tmp_path / "in" / "sub" / "x.parquet", texts(3))
    write_shard(tmp_path / "in" / "y.parquet", texts(3))
    (tmp_path / "out").mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "out" / "sub").symlink_to(tmp_path / "elsewhere")
    result = _run(str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--model", str(tiny_model))
    assert result.exit_code == 1, result.output  # found when the plan looks for the outputs
    assert f"leads to {tmp_path / 'elsewhere'}" in result.stderr
    assert "remove the link" in result.stderr
    assert list((tmp_path / "elsewhere").iterdir()) == []
