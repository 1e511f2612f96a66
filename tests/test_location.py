"""A location parsed once: its parts, a glob's '?' against a query's, names under a prefix."""

from __future__ import annotations

import pytest

from etl.storage.location import Location
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
