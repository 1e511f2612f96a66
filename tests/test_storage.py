"""The storage seam: every operation does what object stores promise too, and nothing it was
in the middle of writing survives an interrupt."""

from __future__ import annotations

import pickle
import threading
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from etl.storage import open_storage


def test_create_only_if_absent_and_put_replaces(tmp_path):
    storage = open_storage(tmp_path / "out")
    assert storage.create("a/b.json", b"first")
    assert not storage.create("a/b.json", b"second")  # someone was first: theirs stays
    assert storage.read("a/b.json") == b"first"
    storage.put("a/b.json", b"third")
    assert storage.read("a/b.json") == b"third"
    assert storage.read("a/missing.json") is None and not storage.exists("a/missing.json")
    storage.delete("a/b.json")
    storage.delete("a/b.json")  # deleting what is gone is fine
    assert storage.read("a/b.json") is None


def test_of_many_concurrent_creates_exactly_one_wins(tmp_path):
    storage = open_storage(tmp_path)
    wins = []
    barrier = threading.Barrier(8)

    def race(i: int) -> None:
        barrier.wait()
        if storage.create("claim", str(i).encode()):
            wins.append(i)

    threads = [threading.Thread(target=race, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1 and storage.read("claim") == str(wins[0]).encode()


def test_swap_replaces_only_what_was_read(tmp_path):
    storage = open_storage(tmp_path)
    assert storage.swap("k", None, b"v1")  # absent: created
    assert not storage.swap("k", None, b"v2")  # no longer absent
    assert not storage.swap("k", b"stale", b"v2")
    assert storage.swap("k", b"v1", b"v2") and storage.read("k") == b"v2"


def test_list_gives_objects_under_a_prefix_without_temporaries(tmp_path):
    storage = open_storage(tmp_path)
    for key in ("p/x.json", "p/sub/y.json", "q/z.json"):
        storage.put(key, b"{}")
    upload = storage.upload("p/w.parquet")
    Path(upload.target).touch()  # being written: not listed
    assert [e.key for e in storage.list("p")] == ["p/sub/y.json", "p/x.json"]
    assert storage.list("nothing") == []


def test_an_upload_appears_only_when_published(tmp_path):
    storage = open_storage(tmp_path)
    upload = storage.upload("d/part.parquet")
    pq.write_table(pa.table({"a": [1, 2]}), upload.target)
    assert not storage.exists("d/part.parquet")
    upload.publish()
    assert storage.exists("d/part.parquet")
    with storage.open("d/part.parquet") as handle:
        assert pq.read_table(handle).num_rows == 2
    assert [p.name for p in (tmp_path / "d").iterdir()] == ["part.parquet"]


def test_temporaries_are_known_before_they_exist_and_discarded(tmp_path):
    storage = open_storage(tmp_path)
    never_written = storage.upload("a.parquet")  # registered; the file was never created
    half_written = storage.upload("b.parquet")
    Path(half_written.target).write_bytes(b"PAR1 half")
    storage.discard_temporaries()  # as on the way out of an interrupted run
    assert list(tmp_path.rglob("*")) == []
    assert never_written.target != half_written.target


def test_stale_uploads_of_dead_processes_are_removed_but_not_ours(tmp_path):
    storage = open_storage(tmp_path)
    dead = tmp_path / ".part.parquet.inprogress-999999"
    dead.write_bytes(b"left by a killed run")
    ours = storage.upload("part.parquet")
    Path(ours.target).write_bytes(b"ours")
    storage.discard_stale_uploads("part.parquet")
    assert not dead.exists()
    assert Path(ours.target).read_bytes() == b"ours"


def test_storage_pickles_without_this_process_temporaries(tmp_path):
    storage = open_storage(tmp_path)
    storage.upload("a.parquet")
    copy = pickle.loads(pickle.dumps(storage))
    assert copy.uri("x") == storage.uri("x")
    assert copy._temporaries == set()  # each process cleans up only what it started
