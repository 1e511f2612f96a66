"""The model's tokenizer, loaded once, and what the job needs to know about it.

Which special tokens it puts before and after a text (BERT: [CLS] and [SEP]; RoBERTa: <s> and
</s>; decoder embedders: an end-of-text token only), which side it pads on, and how many tokens
a prompt takes, counted as sentence-transformers counts them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from etl.errors import ModelError
from etl.model.facts import ModelInfo


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


def load_tokenizer(model: ModelInfo, trust_remote_code: bool = False) -> Any:
    """The model's fast tokenizer, lower-casing first if its recipe says so."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(model.path, trust_remote_code=trust_remote_code)
    except Exception as exc:
        raise ModelError(f"--model {model.name}: cannot load its tokenizer: {exc}") from exc
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
