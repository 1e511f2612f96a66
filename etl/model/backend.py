"""Which code computes a model's vectors, decided once, before anything is loaded.

Two codes can run a model: etl.model.bert (a plain BERT in plain torch, with `tokenizers` reading
tokenizer.json: no transformers import, 2 s less before the first vector) and transformers
(AutoModel, AutoTokenizer: every other architecture, and FlashAttention-2 on a GPU). The rule is
here and only here; the plan puts its answer into the output fingerprint and the file metadata,
and the encoder and tokenizer load exactly that code, or fail: never another one silently.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

PLAIN_BERT = "plain-bert"  # etl.model.bert
TRANSFORMERS = "transformers"  # transformers' AutoModel / AutoTokenizer
TOKENIZERS = "tokenizers"  # tokenizer.json through `tokenizers` alone (PlainTokenizer)
FLASH_ATTENTION = "flash_attention_2"

# tokenizer_config.json classes whose tokenizer.json is the whole tokenizer.
PLAIN_TOKENIZER_CLASSES = ("BertTokenizer", "BertTokenizerFast")
# tokenizer_config.json options and the BertNormalizer fields of tokenizer.json they must match.
NORMALIZER_OPTIONS = {
    "do_lower_case": "lowercase",
    "strip_accents": "strip_accents",
    "tokenize_chinese_chars": "handle_chinese_chars",
}
_BERT_SIZES = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads")
_BERT_ACTIVATIONS = ("gelu", "gelu_new", "gelu_pytorch_tanh", "relu", "silu", "swish")


@dataclass(frozen=True)
class Backend:
    """The code that computes the vectors: the model's, its attention kernel, the tokenizer's."""

    model: str  # plain-bert | transformers
    tokenizer: str  # tokenizers | transformers
    attention: str | None = None  # flash_attention_2, or None: the library's own choice

    def describe(self) -> str:
        """'plain-bert, tokenizers' or 'transformers (flash_attention_2), transformers'."""
        kernel = f" ({self.attention})" if self.attention else ""
        return f"{self.model}{kernel}, {self.tokenizer}"


def choose_backend(
    path: str | Path, custom_code: bool, device_type: str, dtype: str, flash: bool | None = None
) -> Backend:
    """The rule: plain BERT and tokenizers wherever they reproduce transformers exactly (see
    plain_bert_applies, plain_tokenizer_applies), unless FlashAttention-2 is there to skip the
    padding (CUDA, half precision); transformers otherwise. ``flash`` overrides the detection."""
    if flash is None:
        flash = flash_attention_available(device_type, dtype)
    attention = FLASH_ATTENTION if flash else None
    plain_model = not custom_code and attention is None and plain_bert_applies(path)
    plain_tokens = not custom_code and plain_tokenizer_applies(path)
    return Backend(
        model=PLAIN_BERT if plain_model else TRANSFORMERS,
        tokenizer=TOKENIZERS if plain_tokens else TRANSFORMERS,
        attention=attention,
    )


def flash_attention_available(device_type: str, dtype: str) -> bool:
    """FlashAttention-2 is installed and usable: CUDA, half precision."""
    if device_type != "cuda" or dtype not in ("float16", "bfloat16"):
        return False
    try:
        from transformers.utils import is_flash_attn_2_available
    except ImportError:  # pragma: no cover - older transformers
        return False
    return bool(is_flash_attn_2_available())


def plain_bert_applies(path: str | Path) -> bool:
    """A BERT with absolute positions, an activation etl.model.bert has, no decoder parts, its
    weights in model.safetensors."""
    path = Path(path)
    try:
        raw = json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return (
        (path / "model.safetensors").is_file()
        and raw.get("model_type") == "bert"
        and not raw.get("auto_map")
        and raw.get("position_embedding_type", "absolute") == "absolute"
        and raw.get("hidden_act", "gelu") in _BERT_ACTIVATIONS
        and not raw.get("is_decoder", False)
        and not raw.get("add_cross_attention", False)
        and all(isinstance(raw.get(k), int) for k in (*_BERT_SIZES, "intermediate_size"))
        and raw["num_attention_heads"] > 0
        and raw["hidden_size"] % raw["num_attention_heads"] == 0
    )


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
