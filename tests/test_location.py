"""A location parsed once: its parts, a glob's '?' against a query's, names under a prefix, and
inputs discovered under a store's prefix, glob or object through the same parts."""

from __future__ import annotations

import pytest

from etl.errors import ConfigError
from etl.inputs import discover
from etl.storage import Location, open_storage
from etl.storage.s3_uri import parse_s3_uri

TEXTS = (
    "s3://bucket/corpus/",
    "s3://KEY:SE%2FCRET@bucket/corpus/p[0-2].parquet?region=eu-west-1&session_token=t",
    "abfss://container@account.dfs.core.windows.net/a/b.parquet",
    "memory://",
    "s3://bucket",
    "relative/p?.parquet",
    "/abs/path/x.parquet",
)


@pytest.mark.parametrize("text", TEXTS)
def test_the_text_round_trips(text):
    assert str(Location.parse(text)) == text
    assert Location.parse(Location.parse(text)) == Location.parse(text)


def test_parts_of_a_uri_with_credentials_and_options():
    where = Location.parse(TEXTS[1])
    assert (where.scheme, where.host, where.key) == ("s3", "bucket", "corpus/p[0-2].parquet")
    assert where.userinfo == "KEY:SE/CRET"
    assert where.options == {"region": "eu-west-1", "session_token": "t"}
    assert where.is_glob and not where.is_folder
    assert where.redacted == "s3://<redacted>@bucket/corpus/p[0-2].parquet?<redacted>"
    assert str(where.root) == "s3://KEY:SE%2FCRET@bucket?region=eu-west-1&session_token=t"
    assert str(where.glob_root()) == "s3://KEY:SE%2FCRET@bucket/corpus?" + TEXTS[1].split("?")[1]
    assert where.identity == "s3://bucket/corpus/p[0-2].parquet"
    assert parse_s3_uri(TEXTS[1]) == (
        "bucket",
        "corpus/p[0-2].parquet",
        {
            "region_name": "eu-west-1",
            "aws_session_token": "t",
            "aws_access_key_id": "KEY",
            "aws_secret_access_key": "SE/CRET",
        },
    )


def test_a_question_mark_with_no_option_is_a_wildcard():
    where = Location.parse("s3://bucket/p?.parquet")
    assert where.query == "" and where.is_glob and where.key == "p?.parquet"
    assert not Location.parse("s3://bucket/p.parquet?region=x").is_glob
    assert Location.parse("relative/p?.parquet").is_glob
    assert not Location.parse("C://not/a/scheme").is_uri  # a Windows drive letter


def test_names_under_a_prefix_drop_empty_and_dot_parts():
    root = Location.parse("s3://b/corpus/?region=x")
    assert root.child("corpus/a//b/./c.parquet").relative_to(root) == "a/b/c.parquet"
    assert str(root.child("corpus/p.parquet")) == "s3://b/corpus/p.parquet?region=x"
    assert Location.parse("s3://b/x/y.parquet").relative_to(Location.parse("s3://b")) == (
        "x/y.parquet"
    )


@pytest.fixture
def corpus():
    store = open_storage("memory://loc-corpus")
    for key in (
        "in/p0.parquet",
        "in/p1.parquet",
        "in/sub/q.parquet",
        "in/_tmp/x.parquet",
        "in/notes.txt",
        "in/out/old.parquet",
        "bad/../d.parquet",
    ):
        store.put(key, b"x")
    yield "memory://loc-corpus"
    store.delete_prefix("")


def test_remote_prefix_glob_and_object_give_relative_names(corpus):
    names = [s.rel_name for s in discover((f"{corpus}/in/",), f"{corpus}/in/out")]
    assert names == ["p0.parquet", "p1.parquet", "sub/q.parquet"]
    shards = discover((f"{corpus}/in/p[1].parquet",), None)
    assert [(s.input_path, s.rel_name) for s in shards] == [
        (f"{corpus}/in/p1.parquet", "p1.parquet")
    ]
    assert [s.rel_name for s in discover((f"{corpus}/in/sub/q.parquet",), None)] == ["q.parquet"]
    with pytest.raises(ConfigError, match=f"INPUT {corpus}/none: no such memory:// object"):
        discover((f"{corpus}/none",), None)
    with pytest.raises(ConfigError, match="in its key would put its output outside"):
        discover((f"{corpus}/bad/",), None)


def test_a_uri_with_options_globs_and_leaves_its_output_out(corpus, monkeypatch):
    """The options go to the store, not into names: a glob matches, --output is recognised."""
    from etl.storage import files

    monkeypatch.setattr(files, "_storage", lambda root, settings: open_storage(corpus))
    spec = "memory://loc-corpus/in/p*.parquet?opt=1"
    shards = discover((spec,), None)
    assert [s.input_path for s in shards] == [
        "memory://loc-corpus/in/p0.parquet?opt=1",
        "memory://loc-corpus/in/p1.parquet?opt=1",
    ]
    names = [s.rel_name for s in discover(("memory://loc-corpus/in/?opt=1",), f"{corpus}/in/out")]
    assert names == ["p0.parquet", "p1.parquet", "sub/q.parquet"]
