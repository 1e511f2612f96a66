import pytest

from etl.errors import ConfigError
from etl.inputs import discover
from tests.conftest import write_shard


def test_directory_keeps_relative_names_and_skips_hidden(tmp_path):
    src = tmp_path / "in"
    write_shard(src / "a.parquet", ["x"])
    write_shard(src / "sub" / "b.parquet", ["y"])
    write_shard(src / "_tmp" / "c.parquet", ["z"])
    write_shard(src / ".d.parquet", ["z"])
    shards = discover((str(src),), str(tmp_path / "out"))
    assert [s.rel_name for s in shards] == ["a.parquet", "sub/b.parquet"]
    assert shards[1].output_key == "sub/b.parquet"  # under --output, the input's tree


def test_glob_and_file_inputs(tmp_path):
    write_shard(tmp_path / "in" / "p1.parquet", ["x"])
    write_shard(tmp_path / "in" / "p2.parquet", ["x"])
    by_glob = discover((str(tmp_path / "in" / "p*.parquet"),), str(tmp_path / "out"))
    assert [s.rel_name for s in by_glob] == ["p1.parquet", "p2.parquet"]
    by_file = discover((str(tmp_path / "in" / "p2.parquet"),), str(tmp_path / "out"))
    assert [s.rel_name for s in by_file] == ["p2.parquet"]


def test_output_inside_input_is_not_read_back(tmp_path):
    write_shard(tmp_path / "a.parquet", ["x"])
    write_shard(tmp_path / "out" / "a.parquet", ["old output"])
    shards = discover((str(tmp_path),), str(tmp_path / "out"))
    assert [s.rel_name for s in shards] == ["a.parquet"]


def test_clashing_names_and_missing_inputs_are_usage_errors(tmp_path):
    write_shard(tmp_path / "x" / "p.parquet", ["x"])
    write_shard(tmp_path / "y" / "p.parquet", ["x"])
    with pytest.raises(ConfigError, match="would both be written"):
        discover((str(tmp_path / "x" / "p.parquet"), str(tmp_path / "y" / "p.parquet")), "out")
    with pytest.raises(ConfigError, match="no such file"):
        discover((str(tmp_path / "nope.parquet"),), "out")
    with pytest.raises(ConfigError, match="no Parquet files"):
        discover((str(tmp_path / "*.csv"),), "out")


def test_symlinked_files_and_directories_keep_their_names_under_input(tmp_path):
    """A corpus directory of links to shards stored elsewhere: names are those of the links."""
    store = tmp_path / "store"
    write_shard(store / "real-0.parquet", ["x"])
    write_shard(store / "more" / "real-1.parquet", ["y"])
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "p0.parquet").symlink_to(store / "real-0.parquet")
    (corpus / "extra").symlink_to(store / "more", target_is_directory=True)
    for spec in (str(corpus), str(corpus / "*")):
        shards = discover((spec,), str(tmp_path / "out"))
        assert [s.rel_name for s in shards] == ["extra/real-1.parquet", "p0.parquet"], spec
        assert shards[1].input_path.endswith("p0.parquet")
        assert shards[1].output_key == "p0.parquet"
    # A link back up the tree is not followed twice.
    (corpus / "extra" / "loop").symlink_to(corpus, target_is_directory=True)
    names = [s.rel_name for s in discover((str(corpus),), str(tmp_path / "out"))]
    assert names == ["extra/real-1.parquet", "p0.parquet"]
