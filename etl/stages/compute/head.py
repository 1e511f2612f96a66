"""The model's Dense layers after pooling (sentence-transformers' Dense modules), in torch.

Each layer is y = activation(W x + b), plus x (or a projection of it) with a residual. Weights
come from the module's folder; the activation is a torch.nn class named in its config.
"""

from __future__ import annotations

import importlib

import torch

from etl.errors import ModelError
from etl.model.recipe import DenseLayer


class DenseHead(torch.nn.Module):
    """The recipe's Dense layers, in order, on (B, D) float32 vectors."""

    def __init__(self, layers: tuple[DenseLayer, ...], model_name: str) -> None:
        super().__init__()
        self.linears = torch.nn.ModuleList()
        self.activations = torch.nn.ModuleList()
        self.residuals = torch.nn.ModuleList()
        self.uses_residual: list[bool] = []
        for layer in layers:
            state = _weights(layer, model_name)
            linear = torch.nn.Linear(layer.in_features, layer.out_features, bias=layer.bias)
            projection = torch.nn.Identity()
            if layer.residual and layer.in_features != layer.out_features:
                projection = torch.nn.Linear(layer.in_features, layer.out_features, bias=False)
            try:
                linear.load_state_dict(_prefixed(state, "linear."))
                if isinstance(projection, torch.nn.Linear):
                    projection.load_state_dict(_prefixed(state, "residual."))
            except RuntimeError as exc:
                raise ModelError(f"--model {model_name}: {layer.weights}: {exc}") from exc
            self.linears.append(linear)
            self.activations.append(_activation(layer, model_name))
            self.residuals.append(projection)
            self.uses_residual.append(layer.residual)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, D_in) -> (B, D_out)
        for linear, activation, projection, residual in zip(
            self.linears, self.activations, self.residuals, self.uses_residual, strict=True
        ):
            out = activation(linear(x))
            x = out + projection(x) if residual else out
        return x


def _weights(layer: DenseLayer, model_name: str) -> dict[str, torch.Tensor]:
    try:
        if layer.weights.endswith(".safetensors"):
            from safetensors.torch import load_file

            return load_file(layer.weights)
        return torch.load(layer.weights, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelError(f"--model {model_name}: cannot read {layer.weights}: {exc}") from exc


def _prefixed(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def _activation(layer: DenseLayer, model_name: str) -> torch.nn.Module:
    """An instance of the torch.nn class the config names (only torch's own, as
    sentence-transformers allows without trust_remote_code)."""
    module, _, name = layer.activation.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise ModelError(
            f"--model {model_name}: {layer.path}: unknown activation {layer.activation}"
        ) from exc
    if not (isinstance(cls, type) and issubclass(cls, torch.nn.Module)):
        raise ModelError(f"--model {model_name}: {layer.path}: {layer.activation} is not a module")
    return cls()
