"""An output column: which pooling of which layer it holds, and the names of the model's own."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

MODEL_COLUMN = "emb_model"  # a dense model's own sentence vector
SPARSE_COLUMN = "emb_sparse"  # a sparse model's vector: (index, value) pairs
MULTIVECTOR_COLUMN = "emb_multivector"  # a multi-vector model's token vectors


@dataclass(frozen=True)
class ColumnSpec:
    """One output column: which pooling over which hidden-states index, and what follows."""

    name: str  # emb_model[_layer<k>] (the model's recipe), emb_<pooling>[_layer<k>] (--pooling)
    pooling: tuple[str, ...]  # modes concatenated in this order; ("tokens",) = every token
    layer: int  # absolute hidden-states index: 0 = embedding output, 1..L = encoder layers
    dim: int  # width before --truncate-dim: pooled (modes x hidden), or the last Dense's
    dense: bool = False  # the model's Dense layers follow the pooling
    include_prompt: bool = True  # False: prompt tokens are left out of the pooling
    source: str = "options"  # model (its recipe) | default (no recipe) | options (--pooling)

    @property
    def tokens(self) -> bool:
        return self.pooling == ("tokens",)

    @property
    def sparse(self) -> bool:
        return self.pooling == ("sparse",)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "pooling": "+".join(self.pooling),
            "layer": self.layer,
            "dim": self.dim,
            "dense": self.dense,
            "include_prompt": self.include_prompt,
            "source": self.source,
        }
