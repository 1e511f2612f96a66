"""The vector store at scale: its journal, its index, checksums, compaction, gc, check, stats.

Every job-level test compares with a --no-reuse run of the same inputs: the same rows in the
same order and vectors within 1e-5, with fewer texts through the model, counted exactly.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from etl.reuse.hashing import HASH_DTYPE, text_hashes
from tests.conftest import REPO, kill_when, run_ok, start_job, write_shard


def _texts(n: int, tag: str) -> list[str]:
    """n distinct texts (the tiny vocabulary makes most of them the same tokens: that is fine,
    the store keys texts, not tokens)."""
    words = ["the", "cat", "dog", "sat", "on", "a", "mat", "ran", "far", "away"]
    return [f"{tag} {words[i % 10]} {words[(i // 10) % 10]} {i}" for i in range(n)]


def _shards(folder: Path, texts: list[str], count: int, first_id: int = 0) -> None:
    size = -(-len(texts) // count)
    for i in range(-(-len(texts) // size)):
        part = texts[i * size : (i + 1) * size]
        start = first_id + i * size
        write_shard(folder / f"p{i:03d}.parquet", part, ids=range(start, start + len(part)))


def _store(uri):
    from etl.reuse.plan import open_store

    return open_store("--reuse", str(uri))


def _live(store):
    from etl.reuse.view import StoreView

    return StoreView(store.journal).load()


def _same_as_plain(out: Path, plain: Path) -> None:
    """Every output file equals the --no-reuse run's: ids, token counts, vectors within 1e-5."""
    names = sorted(p.name for p in plain.glob("*.parquet"))
    assert names and names == sorted(p.name for p in out.glob("*.parquet"))
    for name in names:
        a, b = pq.read_table(out / name), pq.read_table(plain / name)
        for column in ("id", "n_tokens"):
            assert a.column(column).equals(b.column(column)), name
        x = np.asarray(a.column("emb_mean").to_pylist(), np.float32)
        y = np.asarray(b.column("emb_mean").to_pylist(), np.float32)
        assert x.shape == y.shape and float(np.abs(x - y).max(initial=0.0)) <= 1e-5, name


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "jobs.cli", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )


# The index: 48 bits of a hash find a candidate; the record's own hash decides.


def test_the_index_finds_every_text_of_many_files_and_nothing_else():
    from etl.reuse.memory import FileRef, MemoryIndex

    class Store:
        uri = "mem"

    rng = np.random.default_rng(0)
    index, files = MemoryIndex(), []
    for f in range(12):  # enough to merge every part's overflow several times
        hashes = rng.integers(0, 256, (20_000, 16), dtype=np.uint8).view(HASH_DTYPE)[:, 0]
        number = index.register(FileRef(Store, f"f{f}", len(hashes), "run"))
        index.insert([(number, hashes, None)])
        files.append(hashes)
    probe = np.concatenate([files[3][:500], files[11][-500:], files[0][:1]])
    unknown = rng.integers(0, 256, (1000, 16), dtype=np.uint8).view(HASH_DTYPE)[:, 0]
    queries = np.sort(np.concatenate([probe, unknown]))
    where, row = index.find(queries)
    for q, w, r in zip(queries, where, row, strict=True):
        if w >= 0:
            assert files[w][r] == q
    assert (where >= 0).sum() == len(probe)
    # Stored texts whose hashes share 40 bits (the key) are told apart by the next byte.
    twins = np.zeros((3, 16), np.uint8)
    twins[:, 0], twins[:, 5], twins[:, 15] = 7, [1, 2, 3], 9
    twins = twins.view(HASH_DTYPE)[:, 0]
    number = index.register(FileRef(Store, "twins", 3, "run"))
    index.insert([(number, twins, None)])
    where, row = index.find(twins)
    assert (where == number).all() and row.tolist() == [0, 1, 2]
    index.kill(3)  # a file found gone: never served from again
    where, _ = index.find(np.sort(files[3][:10]))
    assert (where < 0).all()


def test_a_namesake_sharing_48_bits_is_found_then_refused_by_its_record(tmp_path, tiny_model):
    """A text whose hash shares its first 6 bytes with a stored one: the index offers the
    stored record, the record's own hash refuses it, and the text is embedded."""
    from etl.reuse.lookup import Lookup

    write_shard(tmp_path / "in" / "a.parquet", _texts(20, "one"))
    run_ok(tmp_path / "in", tmp_path / "out", tiny_model)
    store = _store(tmp_path / "out")
    stored = text_hashes(_texts(20, "one"))
    raw = stored.view(np.uint8).reshape(-1, 16).copy()
    raw[:, 6:] ^= 0xFF  # same first 48 bits, another text
    namesakes = np.sort(raw.view(HASH_DTYPE)[:, 0])
    lookup = Lookup((store,), "another run")
    found = lookup.find(namesakes)
    assert (found.where >= 0).all()  # candidates, all of them
    _, ok, _ = lookup.fetch(found, np.arange(len(namesakes)), namesakes)
    assert not ok.any() and lookup.damaged == 0  # refused, and not damage
    truth = np.sort(stored)
    _, ok, _ = lookup.fetch(lookup.find(truth), np.arange(20), truth)
    assert ok.all()


# Checksums: every damaged part is found by `store check`, skipped by jobs, embedded again.


def _flip(path: Path, offset: int, mask: int = 0x10) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= mask
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("part", ["records", "index", "trailer", "entry"])
def test_a_flipped_bit_is_found_by_check_skipped_by_jobs_and_embedded_again(
    tmp_path, tiny_model, part
):
    from etl.reuse.audit import check_store
    from etl.reuse.compact import compact
    from etl.reuse.segment import INDEX_BLOCK, TAIL

    texts = _texts(INDEX_BLOCK + 300, "day")  # two index blocks
    _shards(tmp_path / "in", texts, 2)
    run_ok(tmp_path / "in", tmp_path / "day1", tiny_model)
    if part != "entry":  # the index and trailer are read for a compacted segment
        compact(_store(tmp_path / "day1"), force=True)
    store = _store(tmp_path / "day1")
    item = _live(store)[0]
    segment = store.open(item.name, item.size)
    path = tmp_path / "day1" / "_embed_etl" / "vectors" / segment.key
    size = segment.record_bytes
    if part == "records":  # a mantissa bit of record 7's first vector value
        _flip(path, 7 * size + 20 + 1)
        lost = 1
    elif part == "index":  # a bit of the hash of record 9: its whole first block is lost
        _flip(path, segment.index_offset + 9 * 16 + 3)
        lost = INDEX_BLOCK
    elif part == "trailer":  # a byte of the trailer's JSON: the segment is lost
        _flip(path, segment.size - TAIL.size - 10)
        lost = segment.rows
    else:  # a byte of the journal entry that names a segment and carries its hashes
        (entry,) = (tmp_path / "day1" / "_embed_etl" / "vectors" / "log").iterdir()
        _flip(entry, 40)
        lost = len(texts)
    report = check_store(_store(tmp_path / "day1"))
    assert not report.ok and {d.part for d in report.damage} == {part}
    assert all(part == "entry" or d.key == segment.key for d in report.damage)
    checked = _cli("store", "check", str(tmp_path / "day1"))
    assert checked.returncode == 3 and "damaged parts" in checked.stdout
    assert all(d.describe() in checked.stdout for d in report.damage)  # each named, by its key
    summary = run_ok(
        tmp_path / "in", tmp_path / "day2", tiny_model, reuse=(str(tmp_path / "day1"),)
    )
    assert summary["texts_embedded"] == lost
    run_ok(tmp_path / "in", tmp_path / "plain", tiny_model, no_reuse=True)
    _same_as_plain(tmp_path / "day2", tmp_path / "plain")


def test_check_and_stats_of_a_whole_store(tmp_path, tiny_model):
    _shards(tmp_path / "in", _texts(60, "x") * 2, 3)
    run_ok(tmp_path / "in", tmp_path / "out", tiny_model)
    checked = _cli("store", "check", str(tmp_path / "out"), "--json")
    assert checked.returncode == 0, checked.stderr
    report = json.loads(checked.stdout)
    assert report["status"] == "ok" and report["records"] == 60 and report["damage"] == []
    stats = _cli("store", "stats", str(tmp_path / "out"), "--json")
    assert stats.returncode == 0, stats.stderr
    found = json.loads(stats.stdout)
    assert found["records"] == 60 and found["runs"] == 1 and found["recent_runs"][0]["stored"] == 60
    assert "records in" in _cli("store", "stats", str(tmp_path / "out")).stdout
    wrong = _cli("store", "stats", str(tmp_path / "in"))
    assert (
        wrong.returncode == 2 and "neither an embed-etl output nor a vector store" in wrong.stderr
    )
    assert "Traceback" not in wrong.stderr


# Compaction: small segments into larger ones, in the order written, each text once.


def test_compaction_merges_small_segments_in_order_and_serves_the_same(tmp_path, tiny_model):
    from etl.reuse.compact import compact

    texts = _texts(240, "small")
    _shards(tmp_path / "in", texts, 30)
    run_ok(tmp_path / "in", tmp_path / "day1", tiny_model)
    store = _store(tmp_path / "day1")
    before = _live(store)
    assert len(before) == 30
    order = np.concatenate([f.hashes for f in before])
    report = compact(store, grace=3600)
    assert (report.merged, report.written, report.records) == (30, 1, 240)
    (merged,) = _live(store)
    segment = store.open(merged.name, merged.size)
    (records,) = store.read_all(segment, segment.rows)
    assert (store.layout.hashes(records) == order).all()  # the order they were written in
    assert len(store.listed()) == 31  # the replaced ones stay for the grace period
    summary = run_ok(
        tmp_path / "in", tmp_path / "day2", tiny_model, reuse=(str(tmp_path / "day1"),)
    )
    assert summary["texts_embedded"] == 0 and summary["rows_reused_from"]["earlier"] == 240
    again = compact(store, grace=0)  # nothing to merge; the replaced ones are past it now
    assert again.merged == 0 and again.deleted == 30 and len(store.listed()) == 1
    run_ok(tmp_path / "in", tmp_path / "plain", tiny_model, no_reuse=True)
    _same_as_plain(tmp_path / "day2", tmp_path / "plain")


def test_a_job_that_leaves_many_small_segments_compacts_them(tmp_path, tiny_model, monkeypatch):
    from etl.reuse import compact

    monkeypatch.setattr(compact, "AUTO_FILES", 5)
    _shards(tmp_path / "in", _texts(80, "auto"), 10)
    run_ok(tmp_path / "in", tmp_path / "out", tiny_model)
    (merged,) = _live(_store(tmp_path / "out"))
    assert merged.rows == 80 and len(merged.sources) == 10


# gc: what the last runs stored or served stays; the rest goes.


def test_gc_keeps_what_the_last_runs_stored_or_served(tmp_path, tiny_model):
    from etl.reuse.collect import collect

    store = str(tmp_path / "store")
    old, kept, new = _texts(50, "old"), _texts(50, "kept"), _texts(30, "new")
    _shards(tmp_path / "a", old + kept, 2)
    _shards(tmp_path / "b", kept + new, 2)  # serves `kept`, stores `new`
    _shards(tmp_path / "c", old, 1)
    run_ok(tmp_path / "a", tmp_path / "out-a", tiny_model, store=store)
    run_ok(tmp_path / "b", tmp_path / "out-b", tiny_model, store=store)
    report = collect(_store(store), keep_runs=1, grace=0)
    assert (report.runs, report.runs_kept) == (2, 1)
    assert (report.records_before, report.records_after) == (130, 80)
    assert _store(store).description() is not None
    checked = _cli("store", "check", store)
    assert checked.returncode == 0, checked.stdout
    # `old` went, `kept` and `new` stay
    summary = run_ok(tmp_path / "c", tmp_path / "out-c", tiny_model, store=store)
    assert summary["texts_embedded"] == 50
    summary = run_ok(tmp_path / "b", tmp_path / "out-b2", tiny_model, store=store)
    assert summary["texts_embedded"] == 0
    run_ok(tmp_path / "b", tmp_path / "plain", tiny_model, no_reuse=True)
    _same_as_plain(tmp_path / "out-b2", tmp_path / "plain")


def test_gc_rules_pick_runs_by_count_and_by_age():
    import time

    from etl.reuse.collect import RunUse, kept_runs

    now = time.time()
    runs = {
        name: RunUse(name, now - days * 86_400, now - days * 86_400)
        for name, days in (("a", 30), ("b", 9), ("c", 2), ("d", 0.1))
    }
    assert kept_runs(runs, 2, None) == {"c", "d"}
    assert kept_runs(runs, None, 10) == {"b", "c", "d"}
    assert kept_runs(runs, 1, 5) == {"c", "d"}


def test_gc_needs_a_rule(tmp_path, tiny_model):
    write_shard(tmp_path / "in" / "a.parquet", _texts(5, "r"))
    run_ok(tmp_path / "in", tmp_path / "out", tiny_model)
    result = _cli("store", "gc", str(tmp_path / "out"))
    assert result.returncode == 2 and "--keep-runs" in result.stderr


def test_a_day_two_re_export_after_compact_and_gc_embeds_only_what_is_new(tmp_path, tiny_model):
    day1 = _texts(300, "doc")
    _shards(tmp_path / "day1", day1, 6)
    run_ok(tmp_path / "day1", tmp_path / "out1", tiny_model)
    day2 = day1[30:] + _texts(20, "fresh")
    _shards(tmp_path / "day2", day2, 4)
    run_ok(tmp_path / "day2", tmp_path / "plain2", tiny_model, no_reuse=True)
    for command in (["compact"], ["gc", "--keep-runs", "1"]):
        result = _cli("store", *command, str(tmp_path / "out1"))
        assert result.returncode == 0, result.stderr
        said = {"compact": "small segments merged into", "gc": "runs used:"}[command[0]]
        assert result.stdout.startswith(str(tmp_path / "out1")) and said in result.stdout
        out = tmp_path / f"out2-{command[0]}"
        summary = run_ok(tmp_path / "day2", out, tiny_model, reuse=(str(tmp_path / "out1"),))
        assert summary["texts_embedded"] == 20
        _same_as_plain(out, tmp_path / "plain2")


# Kills during compaction and gc, and both beside a running job.

HOLD = """
import os, sys, time
from pathlib import Path
import etl.reuse.rewrite as rewrite
import etl.reuse.store as store

marker, point = Path(os.environ["HOLD_MARKER"]), os.environ["HOLD_POINT"]

def hold():
    marker.write_text("held")
    time.sleep(600)  # until the test kills the process

publish, delete = store.VectorStore.publish, store.VectorStore.delete
checkpoint = rewrite.checkpoint_entry

def held_publish(self, name, chunks, size_hint=0):
    def first_then_hold():
        for chunk in chunks:
            yield chunk
            if point == "writing":
                hold()  # half a segment in its upload
    return publish(self, name, first_then_hold())

def held_checkpoint(*args, **kwargs):
    if point == "committing":  # the new segments are published, the checkpoint not written
        hold()
    return checkpoint(*args, **kwargs)

def held_delete(self, name):
    if point == "deleting":  # the checkpoint is written; what it replaced is being deleted
        hold()
    return delete(self, name)

store.VectorStore.publish = held_publish
rewrite.checkpoint_entry = held_checkpoint
store.VectorStore.delete = held_delete
from jobs.cli import main
sys.argv = ["embed-etl", *sys.argv[1:]]
main()
"""


def _killed_at(point: str, args: list[str], tmp_path: Path) -> None:
    import os

    marker = tmp_path / f"held-{point}-{args[1]}"
    env = {**os.environ, "HOLD_MARKER": str(marker), "HOLD_POINT": point}
    proc = start_job([sys.executable, "-c", HOLD, *args], env=env)
    kill_when(proc, marker.exists, f"the hold at {point}")


@pytest.mark.parametrize("command", ["compact", "gc"])
def test_sigkill_at_three_points_of_compact_and_gc_then_jobs_and_a_rerun(
    tmp_path, tiny_model, command
):
    """Kill the command while it writes a segment, before its checkpoint and while it deletes
    what it replaced; after each kill a job reading the store gets the vectors of a --no-reuse
    run, `store check` finds nothing damaged, and running the command again finishes."""
    store = tmp_path / "store"
    first, second = _texts(120, "first"), _texts(120, "second")
    _shards(tmp_path / "a", first, 12)
    _shards(tmp_path / "b", first[:60] + second, 12)
    run_ok(tmp_path / "a", tmp_path / "out-a", tiny_model, store=str(store))
    grace = ["--grace", "0"]
    # Something to delete at the third point: segments replaced by an earlier compaction.
    assert _cli("store", "compact", str(store), *grace).returncode == 0
    run_ok(tmp_path / "b", tmp_path / "out-b", tiny_model, store=str(store))
    if command == "compact":
        args = ["store", "compact", str(store), *grace]
    else:  # keeps the second run's texts: the first run's segment is rewritten
        args = ["store", "gc", str(store), "--keep-runs", "1", *grace]
    run_ok(tmp_path / "b", tmp_path / "plain", tiny_model, no_reuse=True)
    for point in ("writing", "committing", "deleting"):
        _killed_at(point, args, tmp_path)
        checked = _cli("store", "check", str(store))
        assert checked.returncode == 0, (point, checked.stdout)
        out = tmp_path / f"after-{point}"
        summary = run_ok(tmp_path / "b", out, tiny_model, reuse=(str(store),), no_reuse=False)
        assert summary["texts_embedded"] == 0  # whatever the kill interrupted
        _same_as_plain(out, tmp_path / "plain")
        verified = _cli("verify", "-o", str(out), "--recompute", "10", "--json")
        assert verified.returncode == 0, verified.stdout
    rerun = _cli(*args)
    assert rerun.returncode == 0, rerun.stderr
    assert _cli("store", "check", str(store)).returncode == 0
    hidden = [p.name for p in (store / "segments").iterdir() if p.name.startswith(".")]
    assert hidden == []  # no half-written segment left behind
    final = run_ok(tmp_path / "b", tmp_path / "final", tiny_model, reuse=(str(store),))
    assert final["texts_embedded"] == 0
    _same_as_plain(tmp_path / "final", tmp_path / "plain")


def test_compact_and_gc_beside_a_job_that_reads_and_writes_the_store(tmp_path, tiny_model):
    """A job embeds into a shared store while compact and gc (grace 0: what they replace is
    deleted at once) run again and again beside it: its outputs are a --no-reuse run's."""
    from etl.reuse.collect import collect
    from etl.reuse.compact import compact
    from tests.conftest import wait_until

    store = tmp_path / "store"
    first = _texts(400, "first")
    _shards(tmp_path / "a", first, 40)
    run_ok(tmp_path / "a", tmp_path / "out-a", tiny_model, store=str(store))
    texts = first[::2] + _texts(600, "later")
    _shards(tmp_path / "b", texts, 60)
    args = ["run", str(tmp_path / "b"), "-o", str(tmp_path / "out-b"), "--model", str(tiny_model)]
    args += ["--store", str(store), "--no-progress", "--batch-size", "2", "--threads", "1"]
    job = subprocess.Popen(
        [sys.executable, "-m", "jobs.cli", *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_until(job, lambda: len(list((tmp_path / "out-b").glob("p*.parquet"))) >= 3, "outputs")
    rounds = 0
    while job.poll() is None:
        compact(_store(store), grace=0, force=True)
        collect(_store(store), keep_runs=2, grace=0)
        rounds += 1
    stdout, stderr = job.communicate(timeout=300)
    assert job.returncode == 0, stderr
    assert rounds >= 1 and json.loads(stdout)["rows"] == len(texts)  # both ran beside it
    run_ok(tmp_path / "b", tmp_path / "plain", tiny_model, no_reuse=True)
    _same_as_plain(tmp_path / "out-b", tmp_path / "plain")
    assert _cli("store", "check", str(store)).returncode == 0


def test_a_segment_deleted_under_a_job_costs_an_embedding_not_the_shard(tmp_path, tiny_model):
    texts = _texts(50, "gone")
    _shards(tmp_path / "in", texts, 2)
    run_ok(tmp_path / "in", tmp_path / "out1", tiny_model)
    for path in (tmp_path / "out1" / "_embed_etl" / "vectors" / "segments").glob("*.seg"):
        path.unlink()
    summary = run_ok(
        tmp_path / "in", tmp_path / "out2", tiny_model, reuse=(str(tmp_path / "out1"),)
    )
    assert summary["texts_embedded"] == 50
    shutil.rmtree(tmp_path / "out1")


def test_journal_writers_that_race_each_get_their_own_entry_and_a_damaged_one_is_skipped(
    tmp_path,
):
    from etl.reuse.journal import Journal, StoredFile, add_entry
    from etl.reuse.view import StoreView
    from etl.storage import open_storage

    journal = Journal(open_storage(str(tmp_path / "store")))

    def entry(name: str):
        hashes = text_hashes([name])
        return add_entry("run", "w", [StoredFile(name, 1, 100, "run", 0.0, (), hashes)], hashes[:0])

    numbers = [journal.append(entry(f"s{i}"), start=0) for i in range(40)]  # all guess 0
    assert numbers == list(range(40)) and journal.end(0) == 40 and journal.end(17) == 40
    (tmp_path / "store" / journal.key(7)).write_bytes(b"EMBLOG01 damaged")
    view = StoreView(journal)
    names = {f.name for f in view.load()}
    assert names == {f"s{i}" for i in range(40)} - {"s7"}
    assert view.skipped == [journal.key(7)]
    assert view.follow() == []  # nothing new: one look at number 40
    journal.append(entry("late"), start=3)
    assert [f.name for f in view.follow()] == ["late"]


def test_a_long_job_compacts_its_store_as_it_goes(tmp_path, tiny_model, monkeypatch):
    """Every COMPACT_EVERY journal entries the worker that wrote one compacts the store beside
    its work (here: an entry a shard, a compaction every 4), not only at the end."""
    from etl.reuse import compact, journal, publish
    from etl.reuse.collect import history

    monkeypatch.setattr(journal, "FLUSH_SECONDS", 0.0)
    monkeypatch.setattr(publish, "FLUSH_SECONDS", 0.0)
    monkeypatch.setattr(publish, "COMPACT_EVERY", 4)
    monkeypatch.setattr(compact, "AUTO_FILES", 2)
    monkeypatch.setattr(compact, "AUTO_ENTRIES", 10_000)
    _shards(tmp_path / "in", _texts(120, "long"), 12)
    run_ok(tmp_path / "in", tmp_path / "out", tiny_model)
    store = _store(tmp_path / "out")
    _, _, checkpoints, _ = history(store.journal)
    assert len(checkpoints) >= 2  # during the run, and at its end
    assert sum(f.rows for f in _live(store)) == 120
    assert _cli("store", "check", str(tmp_path / "out")).returncode == 0


def test_a_fetch_that_costs_more_than_embedding_is_not_made(tmp_path, tiny_model, monkeypatch):
    """Where one ranged read takes longer than embedding its texts (measured: here set), the
    texts are embedded instead and the summary says how many."""
    from etl.reuse.lookup import Lookup

    write_shard(tmp_path / "in" / "a.parquet", _texts(20, "cost"))
    run_ok(tmp_path / "in", tmp_path / "out", tiny_model)
    store = _store(tmp_path / "out")
    lookup = Lookup((store,), "another run")
    hashes = np.sort(text_hashes(_texts(20, "cost")))
    found = lookup.find(hashes)
    lookup._latency[store.uri] = 0.05  # a slow store: 50 ms a read
    lookup.cost_per_text = 0.001  # a fast model: 20 texts cost 20 ms
    _, ok, skipped = lookup.fetch(found, np.arange(20), hashes)
    assert skipped.all() and not ok.any()
    lookup.cost_per_text = 0.01  # a slow model: 200 ms, the read wins
    _, ok, skipped = lookup.fetch(found, np.arange(20), hashes)
    assert ok.all() and not skipped.any()
    monkeypatch.setattr(Lookup, "worth_fetching", lambda self, uri, texts, nbytes: False)
    summary = run_ok(
        tmp_path / "in", tmp_path / "again", tiny_model, reuse=(str(tmp_path / "out"),)
    )
    assert summary["texts_not_fetched"] == 20 and summary["texts_embedded"] == 20
    run_ok(tmp_path / "in", tmp_path / "plain", tiny_model, no_reuse=True)
    _same_as_plain(tmp_path / "again", tmp_path / "plain")


# Races and gaps: a losing checkpoint changes nothing; readers and writers behind gc catch up.


def test_of_two_checkpoints_from_one_view_the_second_changes_nothing(tmp_path, tiny_model):
    from etl.reuse.rewrite import commit
    from etl.reuse.view import StoreView

    _shards(tmp_path / "in", _texts(40, "race"), 4)
    run_ok(tmp_path / "in", tmp_path / "out", tiny_model)
    store = _store(tmp_path / "out")
    first, second = StoreView(store.journal), StoreView(store.journal)
    first.load(), second.load()
    assert commit(store, first, set(), [], 3600) == []
    assert commit(store, second, {f.name for f in _live(store)}, [], 0) is None
    assert len(_live(store)) == 4  # the loser removed nothing


def test_a_compaction_that_loses_to_a_gc_leaves_the_store_as_the_gc_made_it(
    tmp_path, tiny_model, monkeypatch
):
    from etl.reuse import compact as compaction
    from etl.reuse.collect import collect

    store_dir = tmp_path / "store"
    _shards(tmp_path / "a", _texts(40, "a"), 4)
    _shards(tmp_path / "b", _texts(40, "b"), 4)
    run_ok(tmp_path / "a", tmp_path / "out-a", tiny_model, store=str(store_dir))
    run_ok(tmp_path / "b", tmp_path / "out-b", tiny_model, store=str(store_dir))
    merge = compaction.merge

    def merge_then_gc(store, group, report):
        made = merge(store, group, report)
        collect(_store(store_dir), keep_runs=1, grace=0)  # lands first
        return made

    monkeypatch.setattr(compaction, "merge", merge_then_gc)
    report = compaction.compact(_store(store_dir), grace=0)
    assert report.raced and report.written == 0
    assert sum(f.rows for f in _live(_store(store_dir))) == 40  # the gc's: run b's texts
    merged = [p for p in (store_dir / "segments").glob("*.seg") if "-" not in p.name]
    assert merged == []  # the loser's compacted segment is deleted (gc kept run b's whole)
    assert _cli("store", "check", str(store_dir)).returncode == 0
    again = run_ok(tmp_path / "b", tmp_path / "again", tiny_model, reuse=(str(store_dir),))
    assert again["texts_embedded"] == 0


def test_readers_and_writers_behind_a_gc_that_truncated_the_journal_catch_up(tmp_path, tiny_model):
    from etl.reuse.collect import collect
    from etl.reuse.publish import Publisher
    from etl.reuse.store import StoreTarget
    from etl.reuse.view import StoreView

    store_dir = tmp_path / "store"
    for run in "abc":
        _shards(tmp_path / run, _texts(30, run), 1)
    run_ok(tmp_path / "a", tmp_path / "out-a", tiny_model, store=str(store_dir))
    reader = StoreView(_store(store_dir).journal)
    reader.load()  # it read run a's entry
    run_ok(tmp_path / "b", tmp_path / "out-b", tiny_model, store=str(store_dir))
    run_ok(tmp_path / "c", tmp_path / "out-c", tiny_model, store=str(store_dir))
    report = collect(_store(store_dir), keep_runs=1, grace=0)  # deletes run a's and b's entries
    assert report.entries_deleted == 2
    reader.follow()  # its next entry is gone: it finds the checkpoint
    assert sum(f.rows for f in reader.files.values()) == 30 and reader.checkpoint >= 0
    store = _store(store_dir)
    publisher = Publisher(StoreTarget(store, "late", "out", "w1"))
    publisher._next = 1  # a writer that last wrote before the gc: that number is free again
    publisher._used.append(text_hashes(["x"]))
    publisher.close()
    view = StoreView(store.journal)
    view.load()
    assert view.next > reader.checkpoint + 1  # its entry went after the checkpoint, where read


def test_a_reader_moves_to_the_compacted_segment_and_serves_after_its_sources_go(
    tmp_path, tiny_model
):
    from etl.reuse.compact import compact
    from etl.reuse.lookup import Lookup

    texts = _texts(60, "moved")
    _shards(tmp_path / "in", texts, 6)
    run_ok(tmp_path / "in", tmp_path / "out", tiny_model)
    store = _store(tmp_path / "out")
    lookup = Lookup((store,), "reader")
    hashes = np.sort(text_hashes(texts))
    assert (lookup.find(hashes).where >= 0).all()
    compact(store, grace=0)
    compact(store, grace=0, force=True)  # the sources are past the grace: deleted
    assert len(list((tmp_path / "out" / "_embed_etl" / "vectors" / "segments").glob("*"))) == 1
    lookup._polled = 0.0  # as if 5 s had passed
    found = lookup.find(hashes)
    _, ok, _ = lookup.fetch(found, np.arange(len(hashes)), hashes)
    assert ok.all()
