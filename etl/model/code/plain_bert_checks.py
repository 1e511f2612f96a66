"""Which checkpoints the plain BERT reproduces exactly, read from config.json before torch loads.

The backend rule (etl.model.backend) asks this before anything is loaded, and load_bert
(etl.model.code.plain_bert) asks it again before it reads a weight: one answer for both, so the
plain BERT never runs a model it would compute differently from transformers' BertModel.
"""

from __future__ import annotations

import json
from pathlib import Path

from etl.model.files import SAFETENSORS

BERT_SIZES = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads")
# The activations etl.model.code.plain_bert computes (its ACTIVATIONS; a test holds them equal).
BERT_ACTIVATIONS = ("gelu", "gelu_new", "gelu_pytorch_tanh", "relu", "silu", "swish")


def plain_bert_applies(path: str | Path) -> bool:
    """A BERT with absolute positions, an activation etl.model.code.plain_bert has, no decoder
    parts, its weights in model.safetensors."""
    return plain_bert_mismatch(path) is None


def plain_bert_mismatch(path: str | Path) -> str | None:
    """Why etl.model.code.plain_bert cannot reproduce the checkpoint at ``path``; None if it can."""
    path = Path(path)
    try:
        raw = json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        return "no readable config.json"
    checks = (
        ((path / SAFETENSORS).is_file(), f"its weights are not in {SAFETENSORS}"),
        (raw.get("model_type") == "bert", f"model type {raw.get('model_type')}, not bert"),
        (not raw.get("auto_map"), "its config.json maps it to code of its own"),
        (
            raw.get("position_embedding_type", "absolute") == "absolute",
            f"position embeddings {raw.get('position_embedding_type')}, not absolute",
        ),
        (
            raw.get("hidden_act", "gelu") in BERT_ACTIVATIONS,
            f"activation {raw.get('hidden_act')}, not one of {', '.join(BERT_ACTIVATIONS)}",
        ),
        (not raw.get("is_decoder", False), "a decoder"),
        (not raw.get("add_cross_attention", False), "it has cross-attention"),
        (
            all(isinstance(raw.get(k), int) for k in (*BERT_SIZES, "intermediate_size")),
            "its config.json lacks a size",
        ),
    )
    for ok, why in checks:
        if not ok:
            return why
    if raw["num_attention_heads"] <= 0 or raw["hidden_size"] % raw["num_attention_heads"]:
        return "its hidden size is not a multiple of its attention heads"
    return None
