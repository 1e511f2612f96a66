"""Embed each text once: repeats within a shard, across shards and across runs.

Every test compares with a --no-reuse run of the same inputs: the same rows in the same order,
vectors within 1e-5, and fewer texts through the model, counted exactly.
"""

from __future__ import annotations

import json
import random

import numpy as np
import pyarrow.parquet as pq
import pytest

from etl.reuse.hashing import text_hashes
from tests.conftest import job_config, run_ok, write_shard
from tests.models import texts as sentences


def heavy_tailed(distinct: list[str], rows: int, seed: int) -> list[str]:
    """Rows drawn from the texts with Zipf-like counts: a few repeat very often."""
    rng = random.Random(seed)
    weights = [1.0 / (rank + 1) ** 1.1 for rank in range(len(distinct))]
    return rng.choices(distinct, weights=weights, k=rows)


def _vectors(path, column="emb_mean") -> list:
    return pq.read_table(path).column(column).to_pylist()


def _close(a: list, b: list, tolerance: float = 1e-5) -> None:
    assert [x is None for x in a] == [x is None for x in b]
    pairs = [(x, y) for x, y in zip(a, b, strict=True) if x is not None]
    assert pairs
    worst = max(float(np.abs(np.asarray(x) - np.asarray(y)).max()) for x, y in pairs)
    assert worst <= tolerance, worst


def _same_as_no_reuse(reused, plain) -> None:
    """The same rows, token counts and truncation as a --no-reuse output; vectors within 1e-5."""
    a, b = pq.read_table(reused), pq.read_table(plain)
    for column in ("id", "n_tokens", "truncated"):
        assert a.column(column).equals(b.column(column))
    _close(a.column("emb_mean").to_pylist(), b.column("emb_mean").to_pylist())


def test_each_distinct_text_of_a_shard_goes_through_the_model_once(tmp_path, tiny_model):
    texts = heavy_tailed(sentences(120, seed=3), 2000, seed=1)
    texts[7] = texts[900] = None
    write_shard(tmp_path / "in" / "a.parquet", texts)
    reused = run_ok(tmp_path / "in", tmp_path / "out", tiny_model, sort_window=256)
    plain = run_ok(tmp_path / "in", tmp_path / "plain", tiny_model, sort_window=256, no_reuse=True)
    distinct = len({t for t in texts if t is not None})
    assert reused["texts_embedded"] == distinct < 2000  # windows of 256 rows: across windows too
    assert reused["rows_reused_from"] == {"shard": 1998 - distinct, "job": 0, "earlier": 0}
    assert plain["texts_embedded"] == 1998 and plain["rows_reused"] == 0
    _same_as_no_reuse(tmp_path / "out" / "a.parquet", tmp_path / "plain" / "a.parquet")
    record = json.loads(next((tmp_path / "out" / "_embed_etl" / "shards").iterdir()).read_text())
    assert (
        record["texts_embedded"] == distinct and record["rows_reused"]["shard"] == 1998 - distinct
    )


@pytest.mark.parametrize("block_rows", [256, 512])
def test_a_shard_of_many_blocks_embeds_each_text_once_with_the_counts_of_no_reuse(
    tmp_path, tiny_model, monkeypatch, block_rows
):
    """A shard is hashed a block at a time (65,536 rows; smaller here): texts repeated across
    blocks copy their vector and token count, window after window, wherever the block ends."""
    import etl.stages.read.loader as loader

    monkeypatch.setattr(loader, "BLOCK_ROWS", block_rows)
    texts = heavy_tailed(sentences(150, seed=5), 2000, seed=2)
    texts[300] = None
    write_shard(tmp_path / "in" / "a.parquet", texts)
    reused = run_ok(tmp_path / "in", tmp_path / "out", tiny_model, sort_window=128)
    run_ok(tmp_path / "in", tmp_path / "plain", tiny_model, sort_window=128, no_reuse=True)
    assert reused["status"] == "ok" and reused["texts_embedded"] == len(set(texts) - {None})
    _same_as_no_reuse(tmp_path / "out" / "a.parquet", tmp_path / "plain" / "a.parquet")


@pytest.mark.parametrize("dtypes", [("float16",), ("int8", "binary")])
def test_rows_of_one_text_are_stored_alike_in_every_output_dtype(tmp_path, tiny_model, dtypes):
    texts = heavy_tailed(sentences(40, seed=4), 600, seed=2)
    write_shard(tmp_path / "in" / "a.parquet", texts)
    run_ok(tmp_path / "in", tmp_path / "out", tiny_model, output_dtypes=dtypes, normalize=True)
    table = pq.read_table(tmp_path / "out" / "a.parquet")
    for name in table.column_names:
        if not name.startswith("emb_"):
            continue
        by_text: dict[str, list] = {}
        for text, value in zip(texts, table.column(name).to_pylist(), strict=True):
            by_text.setdefault(text, []).append(value)
        assert all(all(v == values[0] for v in values) for values in by_text.values())


def test_a_later_shard_copies_what_an_earlier_one_embedded(tmp_path, tiny_model):
    pool = sentences(80, seed=5)
    write_shard(tmp_path / "in" / "a.parquet", pool)
    write_shard(
        tmp_path / "in" / "b.parquet", random.Random(0).sample(pool, 60), ids=range(80, 140)
    )
    summary = run_ok(tmp_path / "in", tmp_path / "out", tiny_model)
    shards = {s["input"]: s for s in summary["shards"]}
    distinct = len(set(pool))
    assert shards["a.parquet"]["texts_embedded"] == distinct
    assert shards["b.parquet"]["texts_embedded"] == 0
    assert shards["b.parquet"]["rows_reused"]["job"] == 60
    run_ok(tmp_path / "in", tmp_path / "plain", tiny_model, no_reuse=True)
    _close(_vectors(tmp_path / "out" / "b.parquet"), _vectors(tmp_path / "plain" / "b.parquet"))


def _day_two(day_one: list[str], seed: int) -> tuple[list[str], set[str]]:
    """Last night's rows again: 5% edited, 1% deleted, 1% new, shuffled. The new texts too."""
    rng = random.Random(seed)
    rows = list(day_one)
    count = len(rows)
    for i in rng.sample(range(count), count // 20):
        rows[i] = f"{rows[i]} edited {i}"
    for i in sorted(rng.sample(range(count), count // 100), reverse=True):
        del rows[i]
    rows += [f"brand new text {i} about pets" for i in range(count // 100)]
    rng.shuffle(rows)
    return rows, set(rows) - set(day_one)


def test_a_next_day_re_export_embeds_only_what_is_new(tmp_path, tiny_model):
    day_one = heavy_tailed(sentences(900, seed=6), 3000, seed=3)
    for i in range(3):
        write_shard(tmp_path / "day1" / f"part-{i}.parquet", day_one[i * 1000 : (i + 1) * 1000])
    run_ok(tmp_path / "day1", tmp_path / "out1", tiny_model)
    day_two, new = _day_two(day_one, seed=4)
    for i in range(4):  # another number of files, other names
        chunk = day_two[i * 750 : (i + 1) * 750] if i < 3 else day_two[2250:]
        write_shard(
            tmp_path / "day2" / f"export-{i}.parquet",
            chunk,
            ids=range(i * 750, i * 750 + len(chunk)),
        )
    summary = run_ok(
        tmp_path / "day2", tmp_path / "out2", tiny_model, reuse=(str(tmp_path / "out1"),)
    )
    assert summary["texts_embedded"] <= len(new) + len(day_two) // 100
    assert summary["texts_embedded"] >= len(new)  # what is new cannot be found anywhere
    assert summary["rows_reused_from"]["earlier"] > 0.9 * len(day_two)
    run_ok(tmp_path / "day2", tmp_path / "plain2", tiny_model, no_reuse=True)
    for i in range(4):
        name = f"export-{i}.parquet"
        a, b = pq.read_table(tmp_path / "out2" / name), pq.read_table(tmp_path / "plain2" / name)
        assert a.column("id").equals(b.column("id"))  # every row once, in input order
        _close(a.column("emb_mean").to_pylist(), b.column("emb_mean").to_pylist())


def test_a_rerun_takes_every_vector_from_the_store(tmp_path, tiny_model):
    write_shard(tmp_path / "in" / "a.parquet", sentences(50, seed=7))
    first = run_ok(tmp_path / "in", tmp_path / "out", tiny_model)
    again = run_ok(tmp_path / "in", tmp_path / "out", tiny_model, overwrite=True)
    assert (
        again["texts_embedded"] == 0
        and again["rows_reused_from"]["earlier"] == first["texts_embedded"]
    )


def test_no_reuse_embeds_every_row_and_keeps_no_store(tmp_path, tiny_model):
    write_shard(tmp_path / "in" / "a.parquet", ["same text"] * 30)
    summary = run_ok(tmp_path / "in", tmp_path / "out", tiny_model, no_reuse=True)
    assert summary["texts_embedded"] == 30 and summary["rows_reused"] == 0
    assert not (tmp_path / "out" / "_embed_etl" / "vectors").exists()


def test_a_long_text_chunked_counts_as_one_text(tmp_path, tiny_model):
    long = " ".join(["the cat sat on a mat"] * 40)  # over the tiny model's 64 positions
    write_shard(tmp_path / "in" / "a.parquet", [long, "a dog", long, long, "a dog"])
    kw = dict(long_text="chunk", max_length=32)
    reused = run_ok(tmp_path / "in", tmp_path / "out", tiny_model, **kw)
    plain = run_ok(tmp_path / "in", tmp_path / "plain", tiny_model, no_reuse=True, **kw)
    assert reused["texts_embedded"] == 2 and reused["chunked_rows"] == plain["chunked_rows"] == 3
    _close(_vectors(tmp_path / "out" / "a.parquet"), _vectors(tmp_path / "plain" / "a.parquet"))


def test_token_vectors_are_never_stored(tmp_path, tiny_model):
    from etl.errors import ConfigError

    write_shard(tmp_path / "in" / "a.parquet", ["same text"] * 5)
    summary = run_ok(tmp_path / "in", tmp_path / "out", tiny_model, poolings=("tokens",))
    assert summary["texts_embedded"] == 5
    with pytest.raises(ConfigError, match="--pooling tokens --reuse"):
        job_config(tmp_path / "in", tmp_path / "o", tiny_model, poolings=("tokens",), reuse=("x",))


def test_reuse_of_another_recipe_or_of_nothing_is_refused_naming_why(tmp_path, tiny_model):
    from etl import run_job
    from etl.errors import ConfigError

    write_shard(tmp_path / "in" / "a.parquet", sentences(20, seed=8))
    run_ok(tmp_path / "in", tmp_path / "cls", tiny_model, poolings=("cls",))
    with pytest.raises(ConfigError, match=r"another recipe \(columns: .*cls.* -> .*mean"):
        run_job(
            job_config(
                tmp_path / "in", tmp_path / "out", tiny_model, reuse=(str(tmp_path / "cls"),)
            )
        )
    with pytest.raises(ConfigError, match="neither an embed-etl output nor a vector store"):
        run_job(
            job_config(tmp_path / "in", tmp_path / "out", tiny_model, reuse=(str(tmp_path / "in"),))
        )
    run_ok(tmp_path / "in", tmp_path / "bare", tiny_model, no_reuse=True)
    with pytest.raises(ConfigError, match="that job kept no vectors"):
        run_job(
            job_config(
                tmp_path / "in", tmp_path / "out", tiny_model, reuse=(str(tmp_path / "bare"),)
            )
        )
    assert not (tmp_path / "out").exists()  # refused before anything was written


def test_a_text_hash_is_of_the_prompt_and_the_text():
    a, b = text_hashes(["passage: x"]), text_hashes(["x"], prompt="passage: ")
    assert a.tobytes() == b.tobytes() and text_hashes(["x"]).tobytes() != a.tobytes()
    assert text_hashes(["é"]).dtype.itemsize == 16 and len(text_hashes([])) == 0


def test_two_workers_and_two_jobs_on_one_store_give_one_process_vectors(tmp_path, tiny_model):
    import subprocess
    import sys

    from tests.conftest import REPO

    pool = sentences(200, seed=11)
    for i in range(4):
        write_shard(
            tmp_path / "in" / f"p{i}.parquet",
            heavy_tailed(pool, 400, seed=20 + i),
            ids=range(i * 400, (i + 1) * 400),
        )
    run_ok(tmp_path / "in", tmp_path / "one", tiny_model, no_reuse=True)
    workers = run_ok(tmp_path / "in", tmp_path / "workers", tiny_model, workers=2, threads=1)
    assert len(workers["workers"]) == 2
    store = str(tmp_path / "shared-store")
    args = lambda out: [  # noqa: E731
        sys.executable, "-m", "jobs.cli", "run", str(tmp_path / "in"), "-o", str(out),
        "--model", str(tiny_model), "--store", store, "--threads", "1", "--no-progress",
    ]  # fmt: skip
    jobs = [
        subprocess.Popen(
            args(tmp_path / f"job{k}"),
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for k in range(2)
    ]
    summaries = []
    for job in jobs:
        stdout, stderr = job.communicate(timeout=300)
        assert job.returncode == 0, stderr
        summaries.append(json.loads(stdout))
    distinct = len({t for i in range(4) for t in heavy_tailed(pool, 400, seed=20 + i)})
    assert sum(s["texts_embedded"] for s in summaries) >= distinct  # nothing got lost
    for out in ("workers", "job0", "job1"):
        for i in range(4):
            a, b = (
                pq.read_table(tmp_path / out / f"p{i}.parquet"),
                pq.read_table(tmp_path / "one" / f"p{i}.parquet"),
            )
            assert a.column("id").equals(b.column("id"))
            _close(a.column("emb_mean").to_pylist(), b.column("emb_mean").to_pylist())
    assert not (tmp_path / "job0" / "_embed_etl" / "vectors").exists()  # the shared one instead
    assert list((tmp_path / "shared-store" / "segments").glob("*.seg"))


def test_verify_recompute_passes_a_true_store_and_catches_a_false_one(tmp_path, tiny_model):
    """A store whose records hold these texts' hashes under the job's recipe, with other
    vectors and valid checksums, is believed (nothing structural is wrong); verify
    --recompute catches it."""
    from etl import verify_job
    from etl.reuse.plan import open_store

    texts = sentences(30, seed=12)
    write_shard(tmp_path / "in" / "a.parquet", texts)
    run_ok(tmp_path / "in", tmp_path / "out1", tiny_model)
    good = verify_job(str(tmp_path / "out1"), recompute=20)
    assert good.ok and good.recompute.rows == 20 and good.recompute.columns[0].min_cosine > 0.99999
    store = open_store("--reuse", str(tmp_path / "out1"))
    (item,) = _live(store)
    segment = store.open(item.name, item.size)
    (records,) = store.read_all(segment, segment.rows)
    layout = store.layout
    n_tokens, _ = layout.unpack(records)
    other = np.random.default_rng(0).normal(size=(segment.rows, 32))
    forged = layout.pack(layout.hashes(records), n_tokens, {"emb_mean": other})
    path = tmp_path / "out1" / "_embed_etl" / "vectors" / segment.key
    path.write_bytes(forged.tobytes() + path.read_bytes()[forged.nbytes :])
    summary = run_ok(
        tmp_path / "in", tmp_path / "out2", tiny_model, reuse=(str(tmp_path / "out1"),)
    )
    assert summary["texts_embedded"] == 0  # it believed the store
    bad = verify_job(str(tmp_path / "out2"), recompute=20)
    assert bad.shards[0].problems == []  # every structural check passes
    assert not bad.ok and not bad.recompute.ok and bad.recompute.columns[0].min_cosine < 0.9


def _live(store) -> list:
    from etl.reuse.view import StoreView

    return StoreView(store.journal).load()


def test_segments_are_checksummed_records_with_their_hashes(tmp_path, tiny_model):
    """A segment: records (hash, token count, vector, CRC-32 seeded with the store's recipe),
    then the index of the same hashes, each text of the shard once."""
    import zlib

    from etl.reuse.plan import open_store
    from etl.reuse.segment import MAGIC

    texts = sentences(25, seed=13)
    write_shard(tmp_path / "in" / "a.parquet", texts)
    run_ok(tmp_path / "in", tmp_path / "out", tiny_model)
    (path,) = (tmp_path / "out" / "_embed_etl" / "vectors" / "segments").glob("*.seg")
    data = path.read_bytes()
    assert data.endswith(MAGIC)
    rows, size = len(set(texts)), 16 + 4 + 4 * 32 + 4
    records = [data[i * size : (i + 1) * size] for i in range(rows)]
    store = json.loads((tmp_path / "out" / "_embed_etl" / "vectors" / "store.json").read_text())
    seed = zlib.crc32(store["recipe"].encode())
    assert all(zlib.crc32(r[:-4], seed) == int.from_bytes(r[-4:], "little") for r in records)
    assert not any(zlib.crc32(r[:-4]) == int.from_bytes(r[-4:], "little") for r in records)
    index = [data[rows * size + 16 * i : rows * size + 16 * (i + 1)] for i in range(rows)]
    assert index == [r[:16] for r in records]
    assert sorted(index) == sorted(
        text_hashes(sorted(set(texts))).tobytes()[i : i + 16] for i in range(0, rows * 16, 16)
    )
    store = open_store("--reuse", str(tmp_path / "out"))
    (item,) = _live(store)
    assert item.rows == rows and store.segment_key(item.name).endswith(path.name)


def test_a_shard_the_writer_fails_leaves_nothing_for_the_next_to_depend_on(
    tmp_path, tiny_model, monkeypatch
):
    """b repeats a's texts; a fails while it is written (here: a write error), after the
    reader has moved on to b. b embeds them itself, and is right."""
    from etl import run_job
    from etl.stages.write import sink

    pool = sentences(60, seed=14)
    write_shard(tmp_path / "in" / "a.parquet", pool)
    write_shard(tmp_path / "in" / "b.parquet", pool[::-1], ids=range(60, 120))
    real = sink.ShardWriter._write

    def failing(self, window):
        if self.shard.rel_name == "a.parquet":
            raise OSError("disk full")
        return real(self, window)

    monkeypatch.setattr(sink.ShardWriter, "_write", failing)
    summary = run_job(job_config(tmp_path / "in", tmp_path / "out", tiny_model)).to_dict()
    shards = {s["input"]: s for s in summary["shards"]}
    assert shards["a.parquet"]["status"] == "failed" and shards["b.parquet"]["status"] == "done"
    assert shards["b.parquet"]["texts_embedded"] == len(set(pool))
    monkeypatch.setattr(sink.ShardWriter, "_write", real)
    run_ok(tmp_path / "in", tmp_path / "plain", tiny_model, no_reuse=True)
    _close(_vectors(tmp_path / "out" / "b.parquet"), _vectors(tmp_path / "plain" / "b.parquet"))
