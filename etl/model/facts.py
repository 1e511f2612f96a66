"""A model's facts (layers, width, limits, the digests of its files) read without torch, and
its cost.

The digests are of content (etl.model.digests): the weights, the tokenizer's files and the
sentence-transformers configuration, so that a model saved again with other values is another
model, whatever its file sizes. flops_per_token is the encoder's cost model, beside the facts it
is made of: the benchmark reports useful FLOP/s with it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from etl.errors import ModelError
from etl.model.digests import files_digest, json_digest
from etl.model.files import WEIGHT_FILES, weight_files
from etl.model.recipe import Recipe, read_recipe

# Files a tokenizer is built from, by any of the tokenizer classes transformers has.
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "spiece.model",
    "sentencepiece.bpe.model",
    "tokenizer.model",
)


@dataclass(frozen=True)
class ModelInfo:
    """What the job needs to know about a model before loading its weights."""

    name: str  # as the user gave it, or the default model's hub id
    path: str  # local directory holding config.json, tokenizer files and weights
    model_type: str
    num_layers: int
    hidden_size: int
    intermediate_size: int  # width of each layer's feed-forward block
    max_positions: int  # longest input (in tokens) the model accepts
    default_max_length: int  # what the model was trained or configured to use
    config_sha256: str
    weights_sha256: str  # digest of the weight files' content (32 hex)
    tokenizer_sha256: str = ""  # digest of the tokenizer files' content (32 hex)
    recipe: Recipe = field(default_factory=lambda: Recipe(from_model=False), compare=False)
    custom_code: bool = False  # config.json maps the model to its own Python code (auto_map)
    vocab_size: int = 0  # token ids are below this (a sparse vector's width)

    def flops_per_token(self, seq_len: float, layers: int | None = None) -> float:
        """Useful FLOPs to encode one token of a sequence of seq_len real tokens.

        2 x the multiply-adds of each layer: Q, K, V and output projections (4 H^2), the
        feed-forward block (2 H I), and attention scores and their weighted sum (2 H T).
        Embeddings, norms and softmax are left out (a few percent at these widths).
        """
        h, inner = self.hidden_size, self.intermediate_size
        per_layer = 4 * h * h + 2 * h * inner + 2 * h * seq_len
        return 2.0 * (layers if layers is not None else self.num_layers) * per_layer


def read_model_info(
    path: Path, name: str, task: str | None = None, prompt_name: str | None = None
) -> ModelInfo:
    """Read config.json (and sentence-transformers' config, if any) from a model directory.
    A Router's route for ``task`` says which folder holds the encoder (etl.model.router)."""
    recipe = read_recipe(path, name, task, prompt_name)
    if recipe.body is None:
        return _static_info(path, name, recipe)
    path = path / recipe.body if recipe.body else path
    config_file = path / "config.json"
    try:
        raw = config_file.read_bytes()
        config = json.loads(raw)
    except FileNotFoundError as exc:
        raise ModelError(f"--model {name}: {config_file} not found") from exc
    except (OSError, ValueError) as exc:
        raise ModelError(f"--model {name}: cannot read {config_file}: {exc}") from exc
    # DistilBERT names its fields differently.
    num_layers = config.get("num_hidden_layers", config.get("n_layers"))
    hidden = config.get("hidden_size", config.get("dim"))
    inner = config.get("intermediate_size", config.get("hidden_dim", 4 * (hidden or 0)))
    if not isinstance(num_layers, int) or not isinstance(hidden, int):
        raise ModelError(
            f"--model {name}: {config_file} has no num_hidden_layers/hidden_size; "
            "expected a BERT-family encoder"
        )
    max_positions = _max_positions(config)
    weights = weight_files(path)
    if not weights:
        raise ModelError(f"--model {name}: no {' or '.join(WEIGHT_FILES)} in {path}")
    tokenizer = {n: path / n for n in TOKENIZER_FILES if (path / n).is_file()}
    try:
        weights_sha256 = files_digest({p.name: p for p in weights})
        tokenizer_sha256 = files_digest(tokenizer) if tokenizer else json_digest(None)
    except OSError as exc:
        raise ModelError(f"--model {name}: cannot read the files in {path}: {exc}") from exc
    return ModelInfo(
        name=name,
        path=str(path),
        model_type=str(config.get("model_type", "unknown")),
        num_layers=num_layers,
        hidden_size=hidden,
        intermediate_size=int(inner),
        max_positions=max_positions,
        default_max_length=min(_configured_max_length(path, max_positions), max_positions),
        config_sha256=hashlib.sha256(raw).hexdigest(),
        weights_sha256=weights_sha256,
        tokenizer_sha256=tokenizer_sha256,
        recipe=recipe,
        custom_code=bool(config.get("auto_map")),
        vocab_size=int(config.get("vocab_size") or 0),
    )


def _static_info(path: Path, name: str, recipe: Recipe) -> ModelInfo:
    """A route without an encoder (SparseStaticEmbedding): its tokenizer and its weights."""
    weights = Path(recipe.sparse.static_weights) if recipe.sparse is not None else path
    folder = weights.parent
    try:
        header = _safetensors_header(weights)
        (shape,) = [v["shape"] for k, v in header.items() if k != "__metadata__"]
        tokenizer = {n: folder / n for n in TOKENIZER_FILES if (folder / n).is_file()}
        config = json.loads((folder / "tokenizer_config.json").read_text())
        tokenizer_sha256 = files_digest(tokenizer)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelError(
            f"--model {name}: cannot read the static weights {weights}: {exc}"
        ) from exc
    limit = config.get("model_max_length")
    limit = limit if isinstance(limit, int) and 0 < limit < 1_000_000 else 512
    return ModelInfo(
        name=name,
        path=str(folder),
        model_type="static",
        num_layers=0,
        hidden_size=0,
        intermediate_size=0,
        max_positions=limit,
        default_max_length=limit,
        config_sha256=json_digest(config),
        weights_sha256=recipe.sparse.weights_sha256 if recipe.sparse is not None else "",
        tokenizer_sha256=tokenizer_sha256,
        recipe=recipe,
        vocab_size=int(shape[0]),
    )


def _safetensors_header(file: Path) -> dict:
    """The JSON header of a .safetensors file: the name, dtype and shape of each tensor."""
    with open(file, "rb") as handle:
        size = int.from_bytes(handle.read(8), "little")
        return json.loads(handle.read(size))


def _max_positions(config: dict) -> int:
    positions = int(config.get("max_position_embeddings", 512))
    # RoBERTa-style models reserve positions 0..pad_token_id for padding.
    if config.get("model_type") in {"roberta", "xlm-roberta", "camembert", "mpnet"}:
        positions -= int(config.get("pad_token_id", 1)) + 1
    return positions


def _configured_max_length(path: Path, max_positions: int) -> int:
    """sentence-transformers' max_seq_length if present, else the tokenizer's limit."""
    for file, key in (
        ("sentence_bert_config.json", "max_seq_length"),
        ("tokenizer_config.json", "model_max_length"),
    ):
        try:
            value = json.loads((path / file).read_text()).get(key)
        except (OSError, ValueError):
            continue
        if isinstance(value, int) and 0 < value < 1_000_000:
            return value
    return max_positions
