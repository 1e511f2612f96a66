"""The vector columns each kind of model puts in an output.

A dense model (SentenceTransformer, or a bare encoder) writes its own recipe's vector, or each
--pooling, for each --layer. A sparse model (SparseEncoder) writes emb_sparse, its nonzero
weights as (index, value) pairs over the vocabulary; a multi-vector model (MultiVectorEncoder)
writes emb_multivector, one vector per kept token, beside token_ids: one column each, made by
its own head, and the options that would make it something else are usage errors naming them.
output_columns resolves them for a job, with the length texts are cut at and the checks of
every option that depends on both (passages, late chunking, --truncate-dim, binary).
"""

from __future__ import annotations

from etl.columns import MODEL_COLUMN, MULTIVECTOR_COLUMN, SPARSE_COLUMN, ColumnSpec
from etl.config import JobConfig
from etl.errors import ConfigError, ModelError
from etl.model.facts import ModelInfo
from etl.model.recipe import DENSE, SPARSE, Recipe

WHAT = {
    "sparse": "a sparse model (SparseEncoder)",
    "multivector": "a multi-vector model (MultiVectorEncoder)",
}


def output_columns(cfg: JobConfig, model: ModelInfo) -> tuple[list[ColumnSpec], int, int | None]:
    """(the output's vector columns, the length texts are cut at, a sparse row's top-k); a
    ConfigError for an option the model, its columns or that length rule out."""
    length, top_k = model.default_max_length, None
    if model.recipe.kind != DENSE:  # sparse, multi-vector: their own head's one column
        column, length, top_k = kind_column(cfg, model)
        columns = [column]
    else:
        columns = dense_columns(cfg, model)
    max_length = cfg.max_length or length
    if max_length > model.max_positions:
        raise ConfigError(
            f"--max-length {max_length}: {model.name} accepts at most {model.max_positions} tokens"
        )
    if max_length < 2:
        raise ConfigError("--max-length: expected at least 2 (room for [CLS] and [SEP])")
    if cfg.long_text == "chunk" and cfg.chunk_overlap >= max_length - 2:
        raise ConfigError(
            f"--chunk-overlap {cfg.chunk_overlap}: must be less than the {max_length - 2} text "
            f"tokens of a window (--max-length {max_length} minus [CLS] and [SEP])"
        )
    if cfg.chunk_tokens is not None and cfg.chunk_tokens > max_length - 2:
        raise ConfigError(
            f"--chunk-tokens {cfg.chunk_tokens}: a passage, with the model's special tokens and "
            f"prompt, must fit --max-length {max_length}; give at most {max_length - 2}"
        )
    if cfg.chunking == "late":
        check_late(cfg, model, columns, max_length)
    narrowest = min(c.dim for c in columns)
    if cfg.truncate_dim is not None and cfg.truncate_dim > narrowest:
        raise ConfigError(
            f"--truncate-dim {cfg.truncate_dim}: the vectors of {model.name} have {narrowest} "
            f"dimensions; expected 1..{narrowest}"
        )
    for column in columns:
        width = min(cfg.truncate_dim or column.dim, column.dim)
        if "binary" in cfg.output_dtypes and width % 8:
            raise ConfigError(
                f"--output-dtype binary packs 8 dimensions per byte: {width} dimensions is not a "
                f"multiple of 8 ({column.name}; pick another --truncate-dim)"
            )
    return columns, max_length, top_k


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
    if recipe.task == "query" and head.expansion is not None and cfg.max_length is not None:
        raise ConfigError(
            f"--max-length {cfg.max_length}: {model.name} pads and cuts every query to "
            f"{head.expansion.length} tokens (its query expansion); drop --max-length"
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


def dense_columns(cfg: JobConfig, model: ModelInfo) -> list[ColumnSpec]:
    """The model's own recipe (or the masked mean without one), then each --pooling, for each
    --layer."""
    top, recipe = model.num_layers, model.recipe
    if cfg.sparse_top_k is not None:
        raise ConfigError(
            f"--sparse-top-k {cfg.sparse_top_k}: {model.name} is a dense model; the option is "
            "for sparse models (SparseEncoder)"
        )
    layers = _absolute_layers(cfg.layers, model)
    columns = []
    if not cfg.poolings:  # the model's own recipe, or the masked mean without one
        source = "model" if recipe.from_model else "default"
        base = MODEL_COLUMN if recipe.from_model else "emb_" + "+".join(recipe.pooling)
        for k in layers:
            dense = bool(recipe.dense) and k == top  # the Dense was trained on the last layer
            columns.append(
                ColumnSpec(
                    name=base if k == top else f"{base}_layer{k}",
                    pooling=recipe.pooling,
                    layer=k,
                    dim=_recipe_dim(recipe, model, dense),
                    dense=dense,
                    include_prompt=recipe.include_prompt,
                    source=source,
                )
            )
    for pooling in dict.fromkeys(cfg.poolings):
        for k in layers:
            if pooling == "pooler" and k != top:
                raise ConfigError(
                    f"--pooling pooler --layer {k}: the pooler exists only on top of the last "
                    f"layer ({top}); ask for other layers in a separate run, or use cls"
                )
            name = f"emb_{pooling}" if k == top else f"emb_{pooling}_layer{k}"
            columns.append(ColumnSpec(name, (pooling,), k, model.hidden_size))
    return columns


def _absolute_layers(layers: tuple[int, ...], model: ModelInfo) -> list[int]:
    top, absolute = model.num_layers, []
    for layer in layers:
        k = layer if layer >= 0 else top + 1 + layer
        if not 0 <= k <= top:
            raise ConfigError(
                f"--layer {layer}: {model.name} has hidden states 0..{top} "
                f"(0 = embedding layer, {top} = last layer); negative values count from "
                f"-1 (= {top}) down to {-(top + 1)} (= 0)"
            )
        if k not in absolute:
            absolute.append(k)
    return absolute


def _recipe_dim(recipe: Recipe, model: ModelInfo, dense: bool) -> int:
    """Width of the recipe's vector; the Dense layers must chain from the pooled width."""
    width = len(recipe.pooling) * model.hidden_size
    for layer in recipe.dense if dense else ():
        if layer.in_features != width:
            raise ModelError(
                f"--model {model.name}: {layer.path} takes {layer.in_features} features, the "
                f"vectors before it have {width}"
            )
        width = layer.out_features
    return width


def check_late(
    cfg: JobConfig, model: ModelInfo, columns: list[ColumnSpec], max_length: int
) -> None:
    """--chunking late pools passages from token states: a dense model's pooled columns only,
    and passages that fit half a pass (a longer text's windows overlap by a passage at least,
    so each passage lies whole in one, at under twice the cost of one pass)."""
    if model.recipe.kind != DENSE:
        raise ConfigError(
            f"--chunking late: {model.name} is a {model.recipe.kind} model; late chunking pools "
            "a dense model's token states (use --chunking naive)"
        )
    for column in columns:
        if column.tokens or column.pooling == ("pooler",):
            mode = "tokens" if column.tokens else "pooler"
            raise ConfigError(
                f"--chunking late --pooling {mode}: late chunks are pooled over each passage's "
                "tokens; use a pooling mode such as mean, cls or max"
            )
    half = (max_length - 2) // 2
    if cfg.chunk_tokens > half:
        raise ConfigError(
            f"--chunking late --chunk-tokens {cfg.chunk_tokens}: passages must fit half a pass "
            f"of --max-length {max_length} (at most {half}), so that a longer text's windows "
            "give each one context around it"
        )
