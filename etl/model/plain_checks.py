"""Which checkpoints the plain codes reproduce exactly, read from config files before loading.

The backend rule (etl.model.backend) asks these before a model or tokenizer is loaded, and the
plain codes ask them again before they build anything: load_bert (etl.model.code.plain_bert)
before it reads a weight, plain_tokenizer (etl.stages.read.tokenizer) before it builds a
PlainTokenizer. One answer for each, so the plain BERT never runs a model it would compute
differently from transformers' BertModel, and transformers' tokenizer is never replaced by one
that splits a text differently.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from etl.model.files import SAFETENSORS


@dataclass(frozen=True)
class PlainFit:
    """What the plain codes can do with one checkpoint: read from its config files once."""

    model: str | None  # why plain BERT cannot reproduce it; None if it can
    tokenizer: bool  # whether tokenizer.json alone is its tokenizer (plain_tokenizer_applies)


def plain_fit(
    path: str | Path, custom_code: bool, masked_lm: bool = False, static: bool = False
) -> PlainFit:
    """The plain codes' answer for the checkpoint at ``path``: what the backend rule weighs.
    ``masked_lm``: the model's masked-language-model head is needed (a SPLADE model);
    ``static``: a static sparse route, which runs no model code (only its tokenizer is asked).
    A model with code of its own is not read further: transformers runs it, tokenizer too."""
    if static:
        return PlainFit("a static sparse route runs no model code", plain_tokenizer_applies(path))
    if masked_lm:
        model = "its masked-language-model head runs in transformers only"
    elif custom_code:
        model = "its config.json maps it to code of its own"
    else:
        model = plain_bert_mismatch(path)
    return PlainFit(model, not custom_code and plain_tokenizer_applies(path))


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


# tokenizer_config.json classes whose tokenizer.json is the whole tokenizer.
PLAIN_TOKENIZER_CLASSES = ("BertTokenizer", "BertTokenizerFast")
# tokenizer_config.json options and the BertNormalizer fields of tokenizer.json they must match.
NORMALIZER_OPTIONS = {
    "do_lower_case": "lowercase",
    "strip_accents": "strip_accents",
    "tokenize_chinese_chars": "handle_chinese_chars",
}


def plain_tokenizer_applies(path: str | Path) -> bool:
    """A BERT tokenizer whose tokenizer.json says everything tokenizer_config.json does: a
    BertNormalizer agreeing with its options, a padding token, no code of its own."""
    path = Path(path)
    try:
        config = json.loads((path / "tokenizer_config.json").read_text())
        saved = json.loads((path / "tokenizer.json").read_text())
    except (OSError, ValueError):
        return False
    if config.get("tokenizer_class") not in PLAIN_TOKENIZER_CLASSES or config.get("auto_map"):
        return False
    normalizer = saved.get("normalizer") or {}
    if normalizer.get("type") != "BertNormalizer":
        return False
    for option, field in NORMALIZER_OPTIONS.items():
        if option in config and config[option] != normalizer.get(field):
            return False  # transformers would rebuild the normalizer from tokenizer_config
    pad = config.get("pad_token")
    pad = pad.get("content") if isinstance(pad, dict) else pad
    vocab = (saved.get("model") or {}).get("vocab") or {}
    added = {t.get("content") for t in saved.get("added_tokens") or []}
    return isinstance(pad, str) and (pad in vocab or pad in added)
