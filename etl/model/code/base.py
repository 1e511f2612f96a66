"""The interface every model code implements, and the names the backend rule chooses among.

text-embeddings-inference's model: one small trait, one implementation per backend, the rule
(etl.model.backend) naming them. This module imports neither torch nor an implementation, so the
plan reads the names without loading anything.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

PLAIN_BERT = "plain-bert"  # etl.model.code.plain_bert
TRANSFORMERS = "transformers"  # etl.model.code.transformers: transformers' AutoModel


class ModelCode(ABC):
    """What each model code implements: PlainBertCode (etl.model.code.plain_bert) and
    TransformersCode (etl.model.code.transformers). Which one runs a model is the rule's
    (etl.model.backend); the encoder asks etl.model.code.registry for it by name."""

    name: str

    @abstractmethod
    def load(
        self, path: Path, name: str, attention: str | None, trust_remote_code: bool
    ) -> tuple[Any, list[str]]:
        """The model (called as model(input_ids=, attention_mask=, output_hidden_states=), it
        gives last_hidden_state, hidden_states and pooler_output) and the weights it lacks."""
