"""transformers' AutoModel behind the ModelCode interface: every architecture plain BERT is not.

transformers is imported when a model is loaded, never at import: its modeling code costs about
2 s before the first vector, which the planning commands and the plain BERT do without.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from etl.errors import ModelError
from etl.model.code.base import TRANSFORMERS, ModelCode
from etl.model.runtime import use_safetensors


class TransformersCode(ModelCode):
    """transformers' AutoModel behind the ModelCode interface: every other architecture."""

    name = TRANSFORMERS

    def load(
        self, path: Path, name: str, attention: str | None, trust_remote_code: bool
    ) -> tuple[Any, list[str]]:
        from transformers import AutoModel
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        try:
            model, loading = AutoModel.from_pretrained(
                path,
                output_loading_info=True,
                attn_implementation=attention,
                trust_remote_code=trust_remote_code,
                use_safetensors=use_safetensors(path),
            )
        except Exception as exc:
            raise ModelError(f"--model {name}: cannot load the model from {path}: {exc}") from exc
        return model, sorted(loading.get("missing_keys", ()))
