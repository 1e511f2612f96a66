"""The model's tokenizer, loaded once, and what the job needs to know about it.

Which special tokens it puts before and after a text (BERT: [CLS] and [SEP]; RoBERTa: <s> and
</s>; decoder embedders: an end-of-text token only), which side it pads on, and how many tokens
a prompt takes, counted as sentence-transformers counts them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from etl.errors import ModelError
from etl.model.backend import TOKENIZERS, Backend, choose_backend
from etl.model.facts import ModelInfo
from etl.model.plain_checks import plain_tokenizer_applies


@dataclass(frozen=True)
class Layout:
    """Special tokens around every sequence, and the padding side."""

    prefix: tuple[int, ...]  # before the text: (101,) for BERT
    suffix: tuple[int, ...]  # after it: (102,) for BERT, (eos,) for a decoder embedder
    pad_id: int
    left_padding: bool

    @property
    def specials(self) -> int:
        return len(self.prefix) + len(self.suffix)


class PlainTokenizer:
    """A tokenizer.json through `tokenizers` alone, with the part of transformers' fast
    tokenizer API the job uses: a BERT tokenizer without importing transformers (about 0.8 s)."""

    is_fast = True

    def __init__(self, backend: Any, pad_token_id: int, config: dict) -> None:
        self.backend_tokenizer = backend
        self.pad_token_id = pad_token_id
        self.padding_side = config.get("padding_side", "right")
        self.truncation_side = config.get("truncation_side", "right")
        self.model_max_length = config.get("model_max_length")
        added = backend.get_added_tokens_decoder()
        self.all_special_ids = sorted(i for i, token in added.items() if token.special)
        for role in ("cls", "sep", "unk", "mask"):  # cls_token_id...: None where there is none
            setattr(self, f"{role}_token_id", _token_id(backend, config.get(f"{role}_token")))

    def __call__(
        self,
        texts: str | list[str],
        truncation: bool = False,
        max_length: int | None = None,
        add_special_tokens: bool = True,
        return_attention_mask: bool = False,
        return_token_type_ids: bool = False,
    ) -> dict[str, Any]:
        """{"input_ids": ...} of one text or a list, unpadded, as transformers gives them (only
        the ids: padding, masks and tensors are the batching stage's)."""
        backend = self.backend_tokenizer
        backend.no_padding()
        if truncation and max_length is not None:
            backend.enable_truncation(max_length, direction=self.truncation_side)
        else:
            backend.no_truncation()
        if isinstance(texts, str):
            return {"input_ids": backend.encode(texts, add_special_tokens=add_special_tokens).ids}
        # The job never reads offsets: encode_batch_fast (tokenizers 0.20+) skips them, 1.23x
        # faster on the corpus, the same ids.
        encode = getattr(backend, "encode_batch_fast", backend.encode_batch)
        encodings = encode(texts, add_special_tokens=add_special_tokens)
        return {"input_ids": [e.ids for e in encodings]}


def plain_tokenizer(path: str | Path, name: str | None = None) -> PlainTokenizer:
    """The PlainTokenizer of a BERT model directory; only for what etl.model.backend chose it
    for (ModelError otherwise: transformers' tokenizer is never substituted silently)."""
    path = Path(path)
    if not plain_tokenizer_applies(path):
        raise ModelError(
            f"--model {name or path}: its tokenizer is not one `tokenizers` reproduces alone"
        )
    config = json.loads((path / "tokenizer_config.json").read_text())
    from tokenizers import Tokenizer

    backend = Tokenizer.from_file(str(path / "tokenizer.json"))
    pad_id = _token_id(backend, config.get("pad_token"))
    if pad_id is None:
        raise ModelError(f"--model {name or path}: its tokenizer has no padding token")
    return PlainTokenizer(backend, pad_id, config)


def _token_id(backend: Any, token: Any) -> int | None:
    """The id of a tokenizer_config.json token entry (a string, or a dict with its content)."""
    token = token.get("content") if isinstance(token, dict) else token
    return backend.token_to_id(token) if isinstance(token, str) else None


def load_tokenizer(
    model: ModelInfo, backend: Backend | None = None, trust_remote_code: bool = False
) -> Any:
    """The model's fast tokenizer, by the code ``backend`` names (None: as etl.model.backend
    chooses it), lower-casing first if its recipe says so."""
    if backend is None:
        backend = choose_backend(model.path, model.custom_code, "cpu", "float32")
    if backend.tokenizer == TOKENIZERS:
        tokenizer = plain_tokenizer(model.path, model.name)
    else:
        tokenizer = _transformers_tokenizer(model, trust_remote_code)
    if not getattr(tokenizer, "is_fast", False):
        raise ModelError(f"--model {model.name}: needs a fast (Rust) tokenizer, tokenizer.json")
    if tokenizer.pad_token_id is None:
        raise ModelError(f"--model {model.name}: its tokenizer has no padding token")
    if model.recipe.do_lower_case:
        _lower_case(tokenizer)
    # We always pass max_length explicitly; a huge limit keeps transformers from warning when
    # we count the tokens of a long row before truncation.
    tokenizer.model_max_length = 1 << 30
    return tokenizer


def _transformers_tokenizer(model: ModelInfo, trust_remote_code: bool) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(model.path, trust_remote_code=trust_remote_code)
    except Exception as exc:
        raise ModelError(f"--model {model.name}: cannot load its tokenizer: {exc}") from exc


def layout(tokenizer: Any) -> Layout:
    """Where the tokenizer puts its special tokens, found by tokenizing a word both ways."""
    backend = tokenizer.backend_tokenizer
    backend.no_truncation()
    backend.no_padding()  # tokenizer.json may pad every encoding to a fixed length
    plain = backend.encode("the", add_special_tokens=False).ids
    full = backend.encode("the", add_special_tokens=True).ids
    for start in range(len(full) - len(plain) + 1):
        if full[start : start + len(plain)] == plain:
            return Layout(
                prefix=tuple(full[:start]),
                suffix=tuple(full[start + len(plain) :]),
                pad_id=int(tokenizer.pad_token_id),
                left_padding=tokenizer.padding_side == "left",
            )
    raise ModelError("the tokenizer changes a text's own tokens when it adds special tokens")


def prompt_length(tokenizer: Any, prompt: str, max_length: int) -> int:
    """Tokens a prompt takes at the start of a sequence, its leading special tokens included
    and a trailing one not (sentence-transformers' count, used to leave a prompt out of
    pooling)."""
    if not prompt:
        return 0
    ids = tokenizer(prompt, truncation=True, max_length=max_length)["input_ids"]
    if ids and ids[-1] in set(tokenizer.all_special_ids):
        return len(ids) - 1
    return len(ids)


def _lower_case(tokenizer: Any) -> None:
    """Put a Lowercase normalizer first, as sentence-transformers does for do_lower_case."""
    from tokenizers import normalizers

    backend = tokenizer.backend_tokenizer
    current = backend.normalizer
    if current is not None and "Lowercase" in repr(current):
        return
    steps = [normalizers.Lowercase()]
    if current is not None:
        steps.append(current)
    backend.normalizer = normalizers.Sequence(steps)
