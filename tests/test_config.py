import dataclasses

import pytest

from etl.config import JobConfig
from etl.errors import ConfigError
from etl.model.facts import ModelInfo
from etl.spec import build_output_spec


def _model(layers: int = 6) -> ModelInfo:
    return ModelInfo(
        name="m",
        path="/m",
        model_type="bert",
        num_layers=layers,
        hidden_size=384,
        intermediate_size=1536,
        max_positions=512,
        default_max_length=256,
        config_sha256="c" * 64,
        weights_sha256="w" * 32,
    )


def _cfg(**kw) -> JobConfig:
    return JobConfig(inputs=("in",), output_dir="out", **kw)


def test_layers_resolve_to_absolute_indices_and_names():
    spec = build_output_spec(
        _cfg(poolings=("mean", "cls"), layers=(-1, 0, 3, 6)), _model(), "float32"
    )
    assert [(c.name, c.layer) for c in spec.columns] == [
        ("emb_mean", 6),
        ("emb_mean_layer0", 0),
        ("emb_mean_layer3", 3),
        ("emb_cls", 6),
        ("emb_cls_layer0", 0),
        ("emb_cls_layer3", 3),
    ]
    assert spec.deepest_layer == 6 and spec.inner_layers == (0, 3)
    assert build_output_spec(_cfg(layers=(-7,)), _model(), "float32").columns[0].layer == 0


@pytest.mark.parametrize("layer", [7, -8])
def test_layer_out_of_range_names_the_valid_range(layer):
    with pytest.raises(ConfigError, match=r"--layer .*hidden states 0\.\.6"):
        build_output_spec(_cfg(layers=(layer,)), _model(), "float32")


def test_pooler_only_on_the_last_layer():
    with pytest.raises(ConfigError, match="pooler exists only on top of the last layer"):
        build_output_spec(_cfg(poolings=("pooler",), layers=(3,)), _model(), "float32")
    spec = build_output_spec(_cfg(poolings=("pooler",)), _model(), "float32")
    assert spec.columns[0].name == "emb_pooler" and spec.needs_pooler


def test_fingerprint_follows_what_changes_the_vectors_only():
    base = build_output_spec(_cfg(), _model(), "float32").fingerprint
    same = build_output_spec(_cfg(batch_size=3, num_workers=0, device="cpu"), _model(), "float32")
    assert same.fingerprint == base
    for changed in (
        build_output_spec(_cfg(normalize=True), _model(), "float32"),
        build_output_spec(_cfg(max_length=128), _model(), "float32"),
        build_output_spec(_cfg(poolings=("cls",)), _model(), "float32"),
        build_output_spec(_cfg(), _model(), "bfloat16"),
        build_output_spec(_cfg(), dataclasses.replace(_model(), config_sha256="d" * 64), "float32"),
    ):
        assert changed.fingerprint != base


@pytest.mark.parametrize(
    "kw,message",
    [
        ({"poolings": ("sum",)}, "--pooling sum"),
        ({"batch_size": 0}, "--batch-size"),
        ({"device": "tpu"}, "--device tpu"),
        ({"device": "cuda:x"}, "--device cuda:x"),
        ({"dtype": "int4"}, "--dtype int4"),
        ({"text_column": "id"}, "both 'id'"),
        ({"keep_columns": ("a", "a")}, "given twice"),
        ({"keep_columns": ("emb_x",)}, "reserved"),
        ({"inputs": ()}, "INPUT"),
    ],
)
def test_bad_options_name_the_option(kw, message):
    with pytest.raises(ConfigError, match=message):
        JobConfig(**{"inputs": ("in",), "output_dir": "out", **kw})


def test_max_length_beyond_the_model_is_refused():
    with pytest.raises(ConfigError, match="at most 512"):
        build_output_spec(_cfg(max_length=1000), _model(), "float32")
    assert build_output_spec(_cfg(), _model(), "float32").max_length == 256


@pytest.mark.parametrize("where", ["inputs", "output_dir", "store", "reuse"])
def test_reader_processes_are_refused_where_a_location_does_not_survive_a_fork(where):
    """--num-workers N forks reader processes: refused with the options, before any planning,
    wherever an az:// or gs:// location would be opened in them; a reader thread is fine, and
    so are locations whose clients survive a fork."""

    def options(uri: str) -> dict:
        given = (uri,) if where in ("inputs", "reuse") else uri
        return {"inputs": ("in",), "output_dir": "out", where: given}

    with pytest.raises(ConfigError, match=r"--num-workers 2: .*--num-workers 0"):
        JobConfig(**options("az://container/prefix"), num_workers=2)
    assert "az://container/prefix" in JobConfig(**options("az://container/prefix")).locations()
    assert JobConfig(**options("s3://bucket/prefix"), num_workers=2).num_workers == 2
