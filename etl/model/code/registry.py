"""The registry: each model code the backend rule names, mapped to the implementation that runs it.

Importing it imports every implementation, the plain BERT's torch included: only the encoder does,
once the plan has chosen (etl.model.backend, which reads the names from etl.model.code.base).
"""

from __future__ import annotations

from etl.errors import ModelError
from etl.model.code.base import ModelCode
from etl.model.code.plain_bert import PlainBertCode
from etl.model.code.transformers import TransformersCode

MODEL_CODES: dict[str, ModelCode] = {c.name: c for c in (PlainBertCode(), TransformersCode())}


def model_code(name: str) -> ModelCode:
    """The implementation named ``name`` (a Backend's ``model``): exactly that one, or a
    ModelError, never another code in its place."""
    try:
        return MODEL_CODES[name]
    except KeyError as exc:
        known = ", ".join(sorted(MODEL_CODES))
        raise ModelError(f"no model code named {name!r}: expected one of {known}") from exc
