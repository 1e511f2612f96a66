"""A sentence-transformers Dense module: y = activation(W x + b) (+ x with a residual), over the
sentence vector (dense models) or over every token's vector (a multi-vector model's projection).
Its weights are read by etl.stages.compute.head."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from etl.errors import ModelError
from etl.model.digests import file_digest
from etl.model.files import WEIGHT_FILES
from etl.model.router import read_json


@dataclass(frozen=True)
class DenseLayer:
    """One sentence-transformers Dense module: y = activation(W x + b) (+ x with a residual)."""

    path: str  # folder holding config.json and the weights
    in_features: int
    out_features: int
    bias: bool
    activation: str  # a torch.nn class path, e.g. torch.nn.modules.activation.Tanh
    residual: bool
    weights: str  # the weights file
    weights_sha256: str  # digest of the weights file's content


def read_dense(path: Path, folder: str, name: str, over: str = "sentence_embedding") -> DenseLayer:
    """A Dense module's layer; ``over`` is what it must apply to: the sentence vector, or
    each token's (token_embeddings, a multi-vector model's projection)."""
    config_file = path / folder / "config.json"
    config = read_json(config_file, name)
    for key in ("module_input_name", "module_output_name"):
        if config.get(key, "sentence_embedding") != over:
            raise ModelError(
                f"--model {name}: {config_file}: a Dense over {config[key]!r}; expected one "
                f"over {over!r}"
            )
    activation = str(config.get("activation_function", "torch.nn.modules.activation.Tanh"))
    if not activation.startswith("torch.nn."):
        raise ModelError(
            f"--model {name}: {config_file}: activation {activation} is not a torch.nn module"
        )
    weights = [path / folder / f for f in WEIGHT_FILES if (path / folder / f).exists()]
    if not weights:
        raise ModelError(f"--model {name}: no {' or '.join(WEIGHT_FILES)} in {path / folder}")
    try:
        in_features, out_features = int(config["in_features"]), int(config["out_features"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelError(f"--model {name}: {config_file}: no in_features/out_features") from exc
    return DenseLayer(
        path=folder,
        in_features=in_features,
        out_features=out_features,
        bias=bool(config.get("bias", True)),
        activation=activation,
        residual=bool(config.get("use_residual", False)),
        weights=str(weights[0]),
        weights_sha256=_digest(weights[0], name),
    )


def _digest(file: Path, name: str) -> str:
    try:
        return file_digest(file)
    except OSError as exc:
        raise ModelError(f"--model {name}: cannot read {file}: {exc}") from exc
