"""Which tokens a multi-vector model outputs, decided where the tokens are made, per batch.

As sentence-transformers' MultiVectorMask and query expansion do it: the real tokens, less
those of the skiplist (by token id; a word that is not one token of the vocabulary drops out of
the list) on the tasks it names; a query of a model with "fixed" query expansion is padded to
the expansion length with the expansion token ([MASK] unless named), whose positions are kept
in the output though the encoder attends to them only with "attend".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from etl.errors import ModelError
from etl.spec import OutputSpec


@dataclass(frozen=True)
class TokenMask:
    """The output tokens of a multi-vector model's batches."""

    skip_ids: np.ndarray  # (n,) token ids left out of the output
    expand_to: int | None = None  # queries: every sequence padded to this many tokens
    fill_id: int = 0  # the expansion token
    attend: bool = False  # the encoder attends to the expansion tokens

    @classmethod
    def of(cls, spec: OutputSpec, tokenizer: Any) -> TokenMask | None:
        """The spec's mask (None: the model is not multi-vector)."""
        recipe = spec.model.recipe
        head = recipe.multivector
        if head is None:
            return None
        backend = tokenizer.backend_tokenizer
        skip = []
        if head.skips(recipe.task):
            found = (backend.token_to_id(word) for word in head.skiplist)
            skip = sorted({i for i in found if i is not None})
        expansion = head.expansion if recipe.task == "query" else None
        if expansion is None:
            return cls(np.asarray(skip, np.int64))
        token = expansion.token or _token(tokenizer, "mask") or _token(tokenizer, "eos")
        fill = backend.token_to_id(token) if token else None
        if fill is None:
            raise ModelError(
                f"--model {spec.model.name}: its query expansion token {token!r} is not in "
                "its vocabulary"
            )
        return cls(np.asarray(skip, np.int64), expansion.length, fill, expansion.attend)

    def apply(
        self, ids: np.ndarray, mask: np.ndarray, left: bool
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(B, T) padded ids and attention mask -> (ids, attention mask, keep), each (B, T'),
        T' the expansion length for expanded queries."""
        if self.expand_to is not None and ids.shape[1] < self.expand_to:
            extra = self.expand_to - ids.shape[1]
            pad = np.zeros((ids.shape[0], extra), ids.dtype)  # (B, extra)
            ids = np.concatenate([pad, ids] if left else [ids, pad], axis=1)
            mask = np.concatenate([pad, mask] if left else [mask, pad], axis=1)
        keep = mask.astype(bool)  # (B, T')
        if self.expand_to is not None:
            ids = np.where(keep, ids, self.fill_id)
            keep = np.ones_like(keep)
            if self.attend:
                mask = np.ones_like(mask)
        if len(self.skip_ids):
            keep &= ~np.isin(ids, self.skip_ids)
        return ids, mask, keep


def _token(tokenizer: Any, role: str) -> str | None:
    token = getattr(tokenizer, f"{role}_token", None)
    if token is None and getattr(tokenizer, f"{role}_token_id", None) is not None:
        token = tokenizer.backend_tokenizer.id_to_token(getattr(tokenizer, f"{role}_token_id"))
    return token if isinstance(token, str) else None
