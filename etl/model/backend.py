"""Which code computes a model's vectors, decided once, before anything is loaded.

Two codes can run a model: etl.model.bert (a plain BERT in plain torch, with `tokenizers` reading
tokenizer.json: no transformers import, 2 s less before the first vector) and transformers
(AutoModel, AutoTokenizer: every other architecture, and FlashAttention-2 on a GPU). Both
implement ModelCode, defined here; the rule that picks one (or checks the one --backend names) is
here and only here; the plan puts its answer into the output fingerprint and the file metadata,
and the encoder and tokenizer load exactly that code, or fail: never another one silently.
"""

from __future__ import annotations

import importlib.metadata
import json
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from etl.errors import ConfigError
from etl.model.files import SAFETENSORS

PLAIN_BERT = "plain-bert"  # etl.model.bert
TRANSFORMERS = "transformers"  # transformers' AutoModel / AutoTokenizer
STATIC = "static-weights"  # a sparse model's SparseStaticEmbedding: no encoder at all
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

    def code(self) -> dict[str, Any]:
        """The versions of the code that computes the vectors: embed-etl's vector path, always
        `tokenizers` (transformers' fast tokenizers are it too), transformers where it runs the
        model or the tokenizer."""
        from etl.version import VECTOR_CODE_VERSION  # here: a test may move it

        versions: dict[str, Any] = {"vectors": VECTOR_CODE_VERSION}
        versions["tokenizers"] = _installed("tokenizers")
        if TRANSFORMERS in (self.model, self.tokenizer):
            versions["transformers"] = _installed("transformers")
        return versions


def _installed(package: str) -> str | None:
    """A package's installed version, without importing it (transformers takes seconds)."""
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def choose_backend(
    path: str | Path,
    custom_code: bool,
    device_type: str,
    dtype: str,
    flash: bool | None = None,
    forced: str = "auto",
    kind: Any = None,
) -> Backend:
    """The rule: plain BERT and tokenizers wherever they reproduce transformers exactly (see
    plain_bert_mismatch, plain_tokenizer_applies), unless FlashAttention-2 is there to skip the
    padding (CUDA, half precision); transformers otherwise. ``flash`` overrides the detection.
    ``forced`` (--backend) names the model's code; one that cannot run the model is an error,
    never a silent hand-over to the other. ``kind`` is the model's recipe: a SPLADE model's
    masked-language-model head runs in transformers only, a static sparse route in no model
    code at all."""
    path = Path(path)
    if forced not in BACKEND_CHOICES:
        raise ConfigError(f"--backend {forced}: expected one of {', '.join(BACKEND_CHOICES)}")
    sparse = getattr(kind, "sparse", None)
    if sparse is not None and sparse.kind == "static":
        if forced != "auto":
            raise ConfigError(
                f"--backend {forced}: {path} is a static sparse route (SparseStaticEmbedding): "
                "no encoder runs; use --backend auto"
            )
        tokens = TOKENIZERS if plain_tokenizer_applies(path) else TRANSFORMERS
        return Backend(model=STATIC, tokenizer=tokens)
    if forced != "auto":
        why = mismatch(forced, path, custom_code, masked_lm=sparse is not None)
        if why is not None:
            raise ConfigError(
                f"--backend {forced}: {path} cannot run on it ({why}); use --backend auto"
            )
    plain_tokens = not custom_code and plain_tokenizer_applies(path)
    if forced == TRANSFORMERS:  # the reference code, tokenizer included
        plain_tokens = False
    if flash is None:
        flash = forced != PLAIN_BERT and flash_attention_available(device_type, dtype)
    attention = FLASH_ATTENTION if flash else None
    if forced == "auto":
        why = mismatch(PLAIN_BERT, path, custom_code, masked_lm=sparse is not None)
        plain = attention is None and why is None
        forced = PLAIN_BERT if plain else TRANSFORMERS
    return Backend(
        model=forced,
        tokenizer=TOKENIZERS if plain_tokens else TRANSFORMERS,
        attention=attention if forced == TRANSFORMERS else None,
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
    return plain_bert_mismatch(path) is None


def plain_bert_mismatch(path: str | Path) -> str | None:
    """Why etl.model.bert cannot reproduce the checkpoint at ``path``; None if it can."""
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
            raw.get("hidden_act", "gelu") in _BERT_ACTIVATIONS,
            f"activation {raw.get('hidden_act')}, not one of {', '.join(_BERT_ACTIVATIONS)}",
        ),
        (not raw.get("is_decoder", False), "a decoder"),
        (not raw.get("add_cross_attention", False), "it has cross-attention"),
        (
            all(isinstance(raw.get(k), int) for k in (*_BERT_SIZES, "intermediate_size")),
            "its config.json lacks a size",
        ),
    )
    for ok, why in checks:
        if not ok:
            return why
    if raw["num_attention_heads"] <= 0 or raw["hidden_size"] % raw["num_attention_heads"]:
        return "its hidden size is not a multiple of its attention heads"
    return None


class ModelCode(ABC):
    """What each of the two codes implements: PlainBertCode (etl.model.bert) and
    TransformersCode (etl.stages.compute.encoder). Which one runs a model is the rule's, below."""

    name: str

    @abstractmethod
    def load(
        self, path: Path, name: str, attention: str | None, trust_remote_code: bool
    ) -> tuple[Any, list[str]]:
        """The model (called as model(input_ids=, attention_mask=, output_hidden_states=), it
        gives last_hidden_state, hidden_states and pooler_output) and the weights it lacks."""


def mismatch(code: str, path: Path, custom_code: bool, masked_lm: bool = False) -> str | None:
    """Why ``code`` cannot run the model at ``path`` as its authors meant; None if it can.
    ``masked_lm``: the model's masked-language-model head is needed (a SPLADE model)."""
    if code == PLAIN_BERT and masked_lm:
        return "its masked-language-model head runs in transformers only"
    if code == PLAIN_BERT:
        return (
            "its config.json maps it to code of its own"
            if custom_code
            else (plain_bert_mismatch(path))
        )
    return None  # transformers: every architecture it knows (its own code: --trust-remote-code)


BACKEND_CHOICES = ("auto", PLAIN_BERT, TRANSFORMERS)  # what --backend accepts


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
