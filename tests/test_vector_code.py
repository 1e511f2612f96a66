"""The code that computes the vectors is part of their identity: a resumed job or a vector store
of another vector-code version is never mixed with this one's; a store's recipe is checked
against what it describes, in store.json and in every segment."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from etl.model.digests import recipe_digest
from etl.reuse.segment import TAIL, parse_tail
from tests.conftest import run_cli, run_ok, write_shard
from tests.models import texts


def _bump(monkeypatch) -> int:
    """This process now runs the next vector-code version, as a release that changes vectors."""
    from etl import version

    monkeypatch.setattr(version, "VECTOR_CODE_VERSION", version.VECTOR_CODE_VERSION + 1)
    return version.VECTOR_CODE_VERSION


def _store(output: Path) -> Path:
    return output / "_embed_etl" / "vectors"


def test_the_identity_names_the_vector_code_and_the_libraries_that_ran(tmp_path, tiny_model):
    import tokenizers

    from etl.version import VECTOR_CODE_VERSION

    write_shard(tmp_path / "in" / "a.parquet", texts(6))
    run_ok(tmp_path / "in", tmp_path / "out", tiny_model)
    job = json.loads((tmp_path / "out" / "_embed_etl" / "job.json").read_text())
    code = job["identity"]["code"]
    assert code["vectors"] == VECTOR_CODE_VERSION
    assert code["tokenizers"] == tokenizers.__version__
    # The tiny BERT runs in plain torch with `tokenizers`: transformers ran nothing here.
    assert job["identity"]["backend"] == "plain-bert, tokenizers" and "transformers" not in code


def test_a_resumed_job_after_a_vector_code_bump_is_refused_in_one_line(
    tmp_path, tiny_model, monkeypatch
):
    write_shard(tmp_path / "in" / "a.parquet", texts(6))
    assert run_cli(tmp_path, tiny_model).exit_code == 0
    write_shard(tmp_path / "in" / "b.parquet", texts(6, seed=1))
    new = _bump(monkeypatch)
    result = run_cli(tmp_path, tiny_model)
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if "error" in line]
    assert len(lines) == 1 and lines[0].startswith("embed-etl: error: "), result.output
    assert f"code.vectors: {new - 1} -> {new}" in lines[0] and str(tmp_path / "out") in lines[0]
    assert not (tmp_path / "out" / "b.parquet").exists()


def test_reuse_of_a_store_of_another_vector_code_embeds_anew_and_says_so_once(
    tmp_path, tiny_model, monkeypatch
):
    shared = texts(12, seed=3)
    write_shard(tmp_path / "old" / "a.parquet", shared)
    run_ok(tmp_path / "old", tmp_path / "last-month", tiny_model)
    new = _bump(monkeypatch)
    write_shard(tmp_path / "in" / "a.parquet", shared)
    result = run_cli(tmp_path, tiny_model, "--reuse", str(tmp_path / "last-month"))
    assert result.exit_code == 0, result.output
    said = [line for line in result.output.splitlines() if "not used" in line]
    assert len(said) == 1 and f"code.vectors: {new - 1} -> {new}" in said[0], result.output
    summary = json.loads(result.output.strip().splitlines()[-1])
    (note,) = summary["stores_not_used"]
    assert note.startswith(str(tmp_path / "last-month")) and "vector code" in note
    assert summary["rows_reused_from"]["earlier"] == 0
    assert summary["texts_embedded"] == len(set(shared))


def test_every_segment_and_store_json_carry_the_whole_recipe_digest(tmp_path, tiny_model):
    write_shard(tmp_path / "in" / "a.parquet", texts(10))
    run_ok(tmp_path / "in", tmp_path / "out", tiny_model)
    described = json.loads((_store(tmp_path / "out") / "store.json").read_text())
    assert described["recipe"] == recipe_digest(described["identity"])  # 256 bits, not a cut
    assert len(described["recipe"]) == 64
    segments = list((_store(tmp_path / "out") / "segments").glob("*.seg"))
    assert segments
    for path in segments:
        data = path.read_bytes()
        segment, _ = parse_tail(path.name, len(data), data[-max(len(data), TAIL.size) :])
        assert segment.recipe == described["recipe"]


@pytest.mark.parametrize("edit", ["identity", "recipe", "both"])
def test_a_store_that_does_not_hold_together_is_not_believed(tmp_path, tiny_model, edit):
    """A vendor's store of other vectors (cls pooling) whose store.json is edited to claim this
    job's recipe: in its identity only, in its digest only, or in both (then every segment's
    trailer still names its own): no vector of it is served, `store check` names the part."""
    from click.testing import CliRunner

    from jobs.cli import cli

    shared = texts(12, seed=4)
    write_shard(tmp_path / "theirs" / "a.parquet", shared)
    run_ok(tmp_path / "theirs", tmp_path / "vendor", tiny_model, poolings=("cls",))
    write_shard(tmp_path / "in" / "a.parquet", shared)
    run_ok(tmp_path / "in", tmp_path / "probe", tiny_model, no_reuse=True)
    ours = json.loads((tmp_path / "probe" / "_embed_etl" / "job.json").read_text())["identity"]
    file = _store(tmp_path / "vendor") / "store.json"
    described = json.loads(file.read_text())
    claimed = {k: v for k, v in ours.items() if k in described["identity"]}
    if edit in ("identity", "both"):
        described["identity"] = claimed
    if edit in ("recipe", "both"):
        described["recipe"] = recipe_digest(claimed)
    file.write_text(json.dumps(described))

    reuse = (str(tmp_path / "vendor"),)
    summary = run_ok(tmp_path / "in", tmp_path / "out", tiny_model, reuse=reuse)
    assert summary["rows_reused_from"]["earlier"] == 0
    assert summary["texts_embedded"] == len(set(shared))
    if edit == "both":  # store.json holds together; the segments' trailers do not agree
        assert summary["stores_not_used"] == []
    else:
        (note,) = summary["stores_not_used"]
        assert "edited or damaged" in note

    check = CliRunner().invoke(cli, ["store", "check", str(tmp_path / "vendor")])
    assert check.exit_code == 3, check.output
    assert ("trailer" if edit == "both" else "store.json") in check.output


def test_a_worker_with_other_vector_code_stops_in_one_line(tmp_path, tiny_model):
    """The code versions are fixed where the job is planned; a worker elsewhere (a Ray node, a
    machine of --shard-index) with other versions would make other vectors under the same
    fingerprint: it stops before loading the model."""
    import dataclasses
    from types import SimpleNamespace

    import torch

    from etl.errors import ModelError
    from etl.plan import plan_job
    from etl.stages.compute.encoder import Encoder
    from tests.conftest import job_config

    write_shard(tmp_path / "in" / "a.parquet", texts(4))
    spec = plan_job(job_config(tmp_path / "in", tmp_path / "out", tiny_model)).spec
    settings = SimpleNamespace(threads=1, trust_remote_code=False)
    Encoder(spec, settings, torch.device("cpu"))  # the same code: loads
    other = dataclasses.replace(spec, code={**spec.code, "tokenizers": "0.0.1"})
    with pytest.raises(ModelError, match=r"tokenizers \S+ here, 0.0.1 for the job") as err:
        Encoder(other, settings, torch.device("cpu"))
    assert "\n" not in str(err.value)
