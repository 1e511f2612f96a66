"""Options as people type them (comma lists, repeatables left empty) build the JobConfig the
CLI builds, from Python too."""

from __future__ import annotations

import pytest

from etl import ConfigError, JobConfig, config_from_options
from etl.options import comma_list


def test_comma_lists_drop_blanks_and_spaces():
    assert comma_list("cuda:0, cuda:1,") == ("cuda:0", "cuda:1")
    assert comma_list("") == comma_list(None) == ()


def test_options_as_a_command_line_gives_them():
    cfg = config_from_options(
        inputs=["a.parquet", "b/"],
        output_dir="out",
        keep_columns=["title"],
        layers=[],
        output_dtypes=(),
        poolings=[],
        devices="cuda:0, cuda:1",
        workers=2,
    )
    expected = JobConfig(
        inputs=("a.parquet", "b/"),
        output_dir="out",
        keep_columns=("title",),
        devices=("cuda:0", "cuda:1"),
        workers=2,
    )
    assert cfg == expected
    assert cfg.layers == (-1,) and cfg.output_dtypes == ("float32",)  # empty: the default


def test_one_string_is_one_value_and_a_sequence_of_devices_is_taken_as_is():
    cfg = config_from_options(inputs="corpus/", output_dir="out", devices=["cpu"])
    assert cfg.inputs == ("corpus/",) and cfg.devices == ("cpu",)


def test_the_config_still_validates():
    with pytest.raises(ConfigError, match="--devices"):
        config_from_options(inputs=("a",), output_dir="out", devices="gpu7")
