"""`plan --estimate`: the job's tokens from a sample, what the stores hold, and (--calibrate)
hours from a timed run of the sample; the progress bar counts tokens."""

from __future__ import annotations

import json
import random

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from jobs.cli import cli
from tests.conftest import TINY_WORDS, run_cli, run_ok, write_shard


def _corpus(root, shards: int = 6, rows: int = 300, group: int = 100) -> None:
    """Shards whose rows differ in length from shard to shard (a row-count ETA would lie),
    some null, in row groups of ``group`` rows."""
    rng = random.Random(1)
    for s in range(shards):
        longest = 4 + 12 * s  # later shards hold longer rows (some over --max-length 64)
        texts = [
            None if i % 37 == 0 else " ".join(rng.choices(TINY_WORDS, k=rng.randint(1, longest)))
            for i in range(rows)
        ]
        path = write_shard(root / f"part-{s:02d}.parquet", texts, range(s * rows, (s + 1) * rows))
        pq.write_table(pq.read_table(path), path, row_group_size=group)


def _estimate(*args: str) -> dict:
    result = CliRunner().invoke(cli, ["plan", *args, "--estimate", "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    "options",
    [[], ["--long-text", "chunk", "--chunk-overlap", "8"], ["--prompt", "the cat: "]],
    ids=["truncate", "chunk", "prompt"],
)
def test_a_sample_of_every_row_counts_the_jobs_own_tokens(tmp_path, tiny_model, options):
    """Sampling every row, the estimate is the job's own count exactly: the same tokenizer,
    truncation, windows, prompt and special tokens."""
    _corpus(tmp_path / "in")
    common = ["--model", str(tiny_model), *options]
    found = _estimate(str(tmp_path / "in"), *common, "--sample-rows", "100000")
    assert found["sample_rows"] == 6 * 300 and found["rows"] == 6 * 300
    kw = {"long_text": "chunk", "chunk_overlap": 8} if "chunk" in options else {}
    if "--prompt" in options:
        kw["prompt"] = "the cat: "
    summary = run_ok(tmp_path / "in", tmp_path / "out", tiny_model, no_reuse=True, **kw)
    assert found["tokens"] == summary["tokens"]
    assert 0 < found["long_share"] < 1  # some rows are over the tiny model's 64 tokens


def test_a_small_sample_is_close_and_nothing_is_written(tmp_path, tiny_model):
    _corpus(tmp_path / "in", shards=12, group=50)
    out = tmp_path / "out"
    found = _estimate(
        str(tmp_path / "in"), "-o", str(out), "--model", str(tiny_model), "--sample-rows", "600"
    )
    assert found["sample_rows"] <= 12 * 4 * 13 and found["sample_groups"] == 12 * 4
    assert not out.exists()  # an estimate writes nothing under --output
    summary = run_ok(tmp_path / "in", out, tiny_model)
    assert abs(found["tokens"] / summary["tokens"] - 1) < 0.05, (found, summary["tokens"])


def test_the_share_the_stores_hold(tmp_path, tiny_model):
    """Half the shards embedded before: a --reuse of that output holds half the texts; an
    output whose shards are all done has nothing to estimate."""
    _corpus(tmp_path / "in")
    half = tmp_path / "half"
    half.mkdir()
    for path in sorted((tmp_path / "in").iterdir())[::2]:
        (half / path.name).write_bytes(path.read_bytes())
    run_ok(half, tmp_path / "first", tiny_model)
    model = ["--model", str(tiny_model)]
    found = _estimate(
        str(tmp_path / "in"), *model, "--reuse", str(tmp_path / "first"), "--sample-rows", "100000"
    )
    held = set(pq.read_table(half, columns=["text"]).column(0).drop_null().to_pylist())
    every = pq.read_table(tmp_path / "in", columns=["text"]).column(0).drop_null().to_pylist()
    expected = sum(t in held for t in every) / len(every)  # short texts repeat across shards
    assert 0.5 <= expected < 0.6
    assert found["stores_hold"]["rows"] == pytest.approx(expected, abs=1e-4)
    assert 0 < found["tokens_to_embed"] < found["tokens"]
    none_held = _estimate(str(tmp_path / "in"), *model, "--sample-rows", "100000")
    assert none_held["stores_hold"] == {"rows": 0.0, "tokens": 0.0}
    done = _estimate(str(half), "-o", str(tmp_path / "first"), *model)
    assert done["rows"] == 0 and done["shards_done"] == 3


def test_calibrate_times_the_sample_and_projects_hours(tmp_path, tiny_model):
    _corpus(tmp_path / "in")
    result = CliRunner().invoke(
        cli,
        [
            "plan",
            str(tmp_path / "in"),
            "--estimate",
            "--calibrate",
            "--model",
            str(tiny_model),
            "--num-workers",
            "0",
            "--fleet",
            "4",
            "-o",
            str(tmp_path / "out"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "tokens/s" in result.stdout and "device-hours" in result.stdout
    assert not (tmp_path / "out").exists()
    found = _estimate(
        str(tmp_path / "in"),
        "--calibrate",
        "--model",
        str(tiny_model),
        "--num-workers",
        "0",
        "--calibrate-rows",
        "500",
    )
    timing, when = found["calibration"], found["time"]
    assert timing["rows"] == 500 and timing["tokens"] > 0 and timing["tokens_per_s"] > 0
    expected = timing["startup_s"] + found["tokens_to_embed"] / timing["tokens_per_s"]
    assert when["seconds"] == pytest.approx(expected, rel=0.01, abs=0.06)
    assert when["seconds_fleet"] < when["seconds_one_device"] == when["seconds"]


def test_plan_without_estimate_still_needs_its_parts(tmp_path, tiny_model):
    _corpus(tmp_path / "in", shards=2)
    result = CliRunner().invoke(cli, ["plan", str(tmp_path / "in")])
    assert result.exit_code == 2
    assert "--num-shards: required" in result.output and "Traceback" not in result.output
    result = CliRunner().invoke(cli, ["plan", str(tmp_path / "in"), "--num-shards", "2"])
    assert result.exit_code == 0 and "part 1:" in result.output
    for option in (["--model", str(tiny_model)], ["--calibrate"], ["--fleet", "4"]):
        result = CliRunner().invoke(
            cli, ["plan", str(tmp_path / "in"), "--num-shards", "2", *option]
        )
        assert result.exit_code == 2 and f"{option[0]}: only with --estimate" in result.output
    result = CliRunner().invoke(
        cli, ["plan", str(tmp_path / "in"), "--estimate", "--model", str(tmp_path / "nothing")]
    )
    assert result.exit_code != 0 and "nothing" in result.output


def test_the_progress_bar_counts_tokens(tmp_path, tiny_model):
    """Shown, the bar's total is the job's tokens (estimated), its rows beside them; at the
    end it stands at the tokens the job counted."""
    _corpus(tmp_path / "in")
    result = run_cli(tmp_path, tiny_model, "--progress")  # the last flag given wins
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    last = result.stderr.replace("\r", "\n").strip().splitlines()
    final = [line for line in last if "1,800/1,800 rows" in line]
    assert final, result.stderr[-2000:]
    assert "100%" in final[-1] and "tok" in final[-1]
    assert summary["tokens"] > 0


def test_a_sample_of_huge_texts_reads_a_bounded_amount(tmp_path, tiny_model, monkeypatch):
    """The rows read for a sample are bounded by their text bytes (the footers say how many a
    row group's rows hold), not by a row count: huge texts give fewer rows, not more memory."""
    import etl.sampling as sampling
    from etl.model.locate import resolve_model
    from etl.spec import build_output_spec
    from tests.conftest import job_config

    big = " ".join(["the cat sat on the mat"] * 5000)  # 110 KB a row
    for s in range(2):
        write_shard(tmp_path / "in" / f"part-{s}.parquet", [big] * 200)
    cfg = job_config(tmp_path / "in", tmp_path / "out", tiny_model)
    spec = build_output_spec(cfg, resolve_model(str(tiny_model), None, None), "float32", "cpu")
    tokenizer, layout = sampling.tokenizer_of(spec, False)
    from etl.inputs import discover

    shards = tuple(discover(cfg.inputs, cfg.output_dir))
    monkeypatch.setattr(sampling, "SAMPLE_BYTES", 2 << 20)  # a quarter of the texts
    sample = sampling.draw_sample(shards, spec, tokenizer, layout, rows=1000)
    read = sum(len(t.encode()) for t in sample.table.column(0).to_pylist())
    assert 0 < read <= (2 << 20) + 2 * sampling.READ_ROWS * len(big), read  # 2 groups
    from etl.plan import column_bytes

    footers = sum(column_bytes(pq.read_metadata(s.input_path), "text") for s in shards)
    assert sample.tokens(400, footers) == pytest.approx(400 * 64, rel=0.01)  # cut at 64


@pytest.mark.parametrize("chunking", ["naive", "late"])
def test_passages_are_counted_as_the_job_counts_them(tmp_path, tiny_model, chunking):
    """Naive: each passage with its special tokens; late: each text's pass (or windows)."""
    _corpus(tmp_path / "in")
    options = ["--chunk-tokens", "12", "--chunk-overlap", "3", "--chunking", chunking]
    found = _estimate(
        str(tmp_path / "in"), "--model", str(tiny_model), *options, "--sample-rows", "100000"
    )
    summary = run_ok(
        tmp_path / "in",
        tmp_path / "out",
        tiny_model,
        chunk_tokens=12,
        chunk_overlap=3,
        chunking=chunking,
        no_reuse=True,
    )
    assert found["tokens"] == summary["tokens"]
    assert found["long_share"] > 0.3  # rows cut into several passages


def test_shards_of_other_text_types_and_an_all_null_calibration(tmp_path, tiny_model):
    """A sample across string, large_string and dictionary shards; --calibrate on texts that
    are all null says so in one line."""
    import pyarrow as pa

    texts = ["the cat sat on the mat", "a big red dog ran far away"] * 20
    for name, array in [
        ("a", pa.array(texts, pa.string())),
        ("b", pa.array(texts, pa.large_string())),
        ("c", pa.array(texts).dictionary_encode()),
    ]:
        (tmp_path / "in").mkdir(exist_ok=True)
        table = pa.table({"id": pa.array(range(40), pa.int64()), "text": array})
        pq.write_table(table, tmp_path / "in" / f"{name}.parquet")
    found = _estimate(str(tmp_path / "in"), "--model", str(tiny_model))
    assert found["sample_rows"] == 120 and found["tokens"] > 0
    write_shard(tmp_path / "nulls" / "a.parquet", [None] * 10)
    result = CliRunner().invoke(
        cli,
        ["plan", str(tmp_path / "nulls"), "--estimate", "--calibrate", "--model", str(tiny_model)],
    )
    assert result.exit_code == 1 and "no text to time" in result.output
    assert "Traceback" not in result.output


def test_with_passages_the_stores_are_asked_for_passages(tmp_path, tiny_model):
    _corpus(tmp_path / "in", shards=2)
    run_ok(tmp_path / "in", tmp_path / "first", tiny_model, chunk_tokens=12)
    found = _estimate(
        str(tmp_path / "in"),
        "--model",
        str(tiny_model),
        "--chunk-tokens",
        "12",
        "--reuse",
        str(tmp_path / "first"),
        "--sample-rows",
        "100000",
    )
    assert found["stores_hold"]["rows"] == 1.0 and found["tokens_to_embed"] == 0


def test_no_room_for_a_late_passage_is_refused_not_looped(tmp_path, tiny_model):
    """A prompt that leaves a window no room for a late passage and its overlap is refused in
    one line by the estimate too (its windows would never end), as by a run."""
    write_shard(tmp_path / "in" / "a.parquet", ["the cat sat on the mat " * 30])
    prompt = "the cat sat on the mat " * 20  # 120 of the tiny model's 128 tokens
    args = ["plan", str(tmp_path / "in"), "--estimate", "--model", str(tiny_model)]
    args += ["--chunk-tokens", "4", "--chunking", "late", "--prompt", prompt]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2 and "--chunking late --chunk-tokens 4" in result.output
    assert "Traceback" not in result.output
