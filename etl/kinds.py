"""What a sparse or a multi-vector model puts in an output: its one column, made by its own
head, and the options that would make it something else (usage errors naming them).

A sparse model (SparseEncoder) writes emb_sparse, its nonzero weights as (index, value) pairs
over the vocabulary; a multi-vector model (MultiVectorEncoder) writes emb_multivector, one
vector per kept token, beside token_ids. Dense models are etl.spec's.
"""

from __future__ import annotations

from etl.columns import MULTIVECTOR_COLUMN, SPARSE_COLUMN, ColumnSpec
from etl.config import JobConfig
from etl.errors import ConfigError, ModelError
from etl.model.facts import ModelInfo
from etl.model.recipe import SPARSE

WHAT = {
    "sparse": "a sparse model (SparseEncoder)",
    "multivector": "a multi-vector model (MultiVectorEncoder)",
}


def kind_column(cfg: JobConfig, model: ModelInfo) -> tuple[ColumnSpec, int, int | None]:
    """(its column, the length texts are cut at unless --max-length, the top-k of a sparse
    row); ConfigError for an option that makes no sense for the model."""
    recipe = model.recipe
    _refuse(cfg, model)
    if recipe.kind == SPARSE:
        column = ColumnSpec(
            SPARSE_COLUMN, ("sparse",), model.num_layers, model.vocab_size, source="model"
        )
        return column, model.default_max_length, cfg.sparse_top_k or recipe.sparse.max_active_dims
    head = recipe.multivector
    width = model.hidden_size
    for layer in head.projection:
        if layer.in_features != width:
            raise ModelError(
                f"--model {model.name}: {layer.path} takes {layer.in_features} features, the "
                f"token vectors before it have {width}"
            )
        width = layer.out_features
    if cfg.truncate_dim is not None and cfg.truncate_dim > width:
        raise ConfigError(
            f"--truncate-dim {cfg.truncate_dim}: the token vectors of {model.name} have {width} "
            f"dimensions; expected 1..{width}"
        )
    column = ColumnSpec(
        MULTIVECTOR_COLUMN,
        ("tokens",),
        model.num_layers,
        width,
        dense=bool(head.projection),
        source="model",
    )
    return column, head.length(recipe.task) or model.default_max_length, None


def _refuse(cfg: JobConfig, model: ModelInfo) -> None:
    kind = model.recipe.kind
    packed = [d for d in cfg.output_dtypes if d in ("int8", "binary")]
    refused = [
        (f"--pooling {' '.join(cfg.poolings)}", bool(cfg.poolings), "its own head makes it"),
        ("--layer", cfg.layers != (-1,), "its head was trained on the last layer"),
        ("--long-text chunk", cfg.long_text == "chunk", "use truncate or error"),
        (f"--output-dtype {packed[0] if packed else ''}", bool(packed), "use float32 or float16"),
        ("--calibration", cfg.calibration is not None, "it is for int8 dense vectors"),
    ]
    if kind == SPARSE:
        refused += [
            ("--truncate-dim", cfg.truncate_dim is not None, "its dimensions are token ids"),
            ("--normalize/--no-normalize", cfg.normalize is not None, "it has no Normalize"),
        ]
    else:
        refused.append(("--sparse-top-k", cfg.sparse_top_k is not None, "it is not sparse"))
    for option, given, why in refused:
        if given:
            raise ConfigError(f"{option}: {model.name} is {WHAT[kind]}; {why}")
