"""Which code computes a model's vectors, decided once, before anything is loaded.

Two codes can run a model, each a ModelCode in etl.model.code: plain_bert (a plain BERT in plain
torch, with `tokenizers` reading tokenizer.json: no transformers import, 2 s less before the first
vector) and transformers (AutoModel, AutoTokenizer: every other architecture, and
FlashAttention-2 on a GPU). The rule that picks one (or checks the one --backend names) is here
and only here; it names the codes without importing them. The plan puts its answer into the
output fingerprint and the file metadata, and the encoder (through etl.model.code.registry) and
the tokenizer load exactly that code, or fail: never another one silently.
"""

from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from etl.errors import ConfigError
from etl.model.code.base import PLAIN_BERT, TRANSFORMERS  # the model codes' names
from etl.model.plain_checks import plain_fit

STATIC = "static-weights"  # a sparse model's SparseStaticEmbedding: no encoder at all
TOKENIZERS = "tokenizers"  # tokenizer.json through `tokenizers` alone (PlainTokenizer)
FLASH_ATTENTION = "flash_attention_2"


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
    """The rule: plain BERT and tokenizers wherever they reproduce transformers exactly (the
    checkpoint's plain_fit, read once), unless FlashAttention-2 is there to skip the padding
    (CUDA, half precision); transformers otherwise. ``flash`` overrides the detection.
    ``forced`` (--backend) names the model's code; one that cannot run the model is an error,
    never a silent hand-over to the other. ``kind`` is the model's recipe: a SPLADE model's
    masked-language-model head runs in transformers only, a static sparse route in no model
    code at all."""
    path = Path(path)
    if forced not in BACKEND_CHOICES:
        raise ConfigError(f"--backend {forced}: expected one of {', '.join(BACKEND_CHOICES)}")
    sparse = getattr(kind, "sparse", None)
    static = sparse is not None and sparse.kind == "static"
    if flash is None and not static:  # (a static route needs no attention kernel)
        flash = forced != PLAIN_BERT and flash_attention_available(device_type, dtype)
    fit = plain_fit(path, custom_code, masked_lm=sparse is not None, static=static)
    if static:
        if forced != "auto":
            raise ConfigError(
                f"--backend {forced}: {path} is a static sparse route (SparseStaticEmbedding): "
                "no encoder runs; use --backend auto"
            )
        return Backend(model=STATIC, tokenizer=TOKENIZERS if fit.tokenizer else TRANSFORMERS)
    if forced == PLAIN_BERT and fit.model is not None:  # transformers runs every architecture
        raise ConfigError(
            f"--backend {forced}: {path} cannot run on it ({fit.model}); use --backend auto"
        )
    # --backend transformers: the reference code, tokenizer included
    plain_tokens = fit.tokenizer and forced != TRANSFORMERS
    attention = FLASH_ATTENTION if flash else None
    if forced == "auto":
        forced = PLAIN_BERT if attention is None and fit.model is None else TRANSFORMERS
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


BACKEND_CHOICES = ("auto", PLAIN_BERT, TRANSFORMERS)  # what --backend accepts
