"""A sentence-transformers SparseEncoder's recipe: how a text becomes a vocabulary-sized vector
that is mostly zeros.

Two kinds of pipeline (sentence-transformers 6, and the class names of version 5):
- SPLADE: a Transformer with its masked-language-model head, then SpladePooling: per token
  log(1 + relu(logits)) (a second log1p for "log1p_relu"), padding made zero, then the max or
  the sum over the tokens; 1_SpladePooling/config.json says which.
- inference-free: SparseStaticEmbedding, one saved weight per vocabulary id, given to each id
  the text contains (no special tokens, presence not counts); usually the query route of a
  Router whose document route is SPLADE.
config_sentence_transformers.json's max_active_dims keeps the k largest values of each row.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from etl.errors import ModelError
from etl.model.digests import file_digest
from etl.model.files import SAFETENSORS
from etl.model.router import Module, read_json

SPLADE = "splade"
STATIC = "static"
POOLINGS = ("max", "sum")
ACTIVATIONS = ("relu", "log1p_relu")
SPARSE_MODULES = ("Transformer", "MLMTransformer", "SpladePooling", "SparseStaticEmbedding")


@dataclass(frozen=True)
class SparseHead:
    """What follows the encoder (SPLADE) or replaces it (static)."""

    kind: str  # splade | static
    pooling: str = "max"  # splade: over tokens, max or sum
    activation: str = "relu"  # splade: relu, or log1p_relu (one log1p more)
    max_active_dims: int | None = None  # the k largest values of a row are kept
    static_weights: str = ""  # static: the file of the (V,) weights
    weights_sha256: str = ""

    def identity(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "pooling": self.pooling,
            "activation": self.activation,
            "max_active_dims": self.max_active_dims,
            "weights": self.weights_sha256,
        }


def read_sparse(
    path: Path, name: str, modules: tuple[Module, ...], settings: dict[str, Any]
) -> tuple[SparseHead, str | None]:
    """The head and the folder of the Transformer module (None: a static route runs none).
    ``settings`` is config_sentence_transformers.json."""
    kinds = [m.kind for m in modules]
    unknown = [k for k in kinds if k not in SPARSE_MODULES]
    top_k = settings.get("max_active_dims")
    if top_k is not None and (not isinstance(top_k, int) or top_k < 1):
        raise ModelError(f"--model {name}: max_active_dims {top_k!r}: expected a positive integer")
    if kinds == ["SparseStaticEmbedding"]:
        folder = path / modules[0].folder
        config = read_json(folder / "config.json", name)
        if config.get("path"):
            raise ModelError(
                f"--model {name}: {folder}: weights from a JSON file ({config['path']}) are not "
                f"supported; save the module with its {SAFETENSORS}"
            )
        weights = folder / SAFETENSORS
        if not weights.is_file():
            raise ModelError(f"--model {name}: no {SAFETENSORS} in {folder}")
        head = SparseHead(
            STATIC,
            max_active_dims=top_k,
            static_weights=str(weights),
            weights_sha256=file_digest(weights),
        )
        return head, None
    if (
        unknown
        or kinds[1:] != ["SpladePooling"]
        or kinds[0] not in ("Transformer", "MLMTransformer")
    ):
        raise ModelError(
            f"--model {name}: a SparseEncoder of modules {kinds}; embed-etl reproduces "
            "Transformer -> SpladePooling and SparseStaticEmbedding"
        )
    config_file = path / modules[1].folder / "config.json"
    config = read_json(config_file, name)
    pooling = config.get("pooling_strategy", "max")
    activation = config.get("activation_function", "relu")
    if pooling not in POOLINGS or activation not in ACTIVATIONS:
        raise ModelError(
            f"--model {name}: {config_file}: pooling {pooling!r} and activation {activation!r}; "
            f"expected one of {', '.join(POOLINGS)} and one of {', '.join(ACTIVATIONS)}"
        )
    return SparseHead(SPLADE, pooling, activation, top_k), modules[0].folder
