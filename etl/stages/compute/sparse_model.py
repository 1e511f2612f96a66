"""A sparse model on its device: (B, T) token ids in, (B, V) weights over the vocabulary out.

SPLADE runs the checkpoint with its masked-language-model head (transformers'
AutoModelForMaskedLM: the encoder, the head's transform, the decoder tied to the word
embeddings) and pools its logits (etl.stages.compute.sparse), a group of rows at a time; a
static route (SparseStaticEmbedding) has no model, only its saved weight per token id.
"""

from __future__ import annotations

from typing import Any

import torch

from etl.errors import ModelError
from etl.model.runtime import require_safe_torch, use_safetensors
from etl.model.sparse import STATIC
from etl.spec import OutputSpec
from etl.stages.compute.sparse import row_groups, splade_pool, static_weights, top_k


class SparseModel:
    """The sparse head of ``spec``'s model, loaded once on ``device``."""

    def __init__(self, spec: OutputSpec, device: torch.device, trust_remote_code: bool) -> None:
        self.head = spec.model.recipe.sparse
        self.top_k = spec.top_k
        self.vocab_size = spec.model.vocab_size
        self.weight: torch.Tensor | None = None
        self.model: Any = None
        if self.head.kind == STATIC:
            self.weight = _static_weight(self.head.static_weights, spec.model.name).to(device)
            self.vocab_size = int(self.weight.shape[0])
        else:
            self.model = _masked_lm(spec, trust_remote_code).to(device)

    def __call__(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, T) ids and attention mask -> (B, V) float32 weights, the top k kept."""
        if self.weight is not None:
            return top_k(static_weights(ids, mask, self.weight), self.top_k)
        pooled = []
        for rows in row_groups(ids.shape[0], ids.shape[1], self.vocab_size):
            logits = self.model(input_ids=ids[rows], attention_mask=mask[rows]).logits  # (b, T, V)
            pooled.append(splade_pool(logits, mask[rows], self.head.pooling, self.head.activation))
        weights = pooled[0] if len(pooled) == 1 else torch.cat(pooled)  # (B, V)
        return top_k(weights, self.top_k)


def _masked_lm(spec: OutputSpec, trust_remote_code: bool) -> Any:
    from transformers import AutoModelForMaskedLM
    from transformers.utils import logging as hf_logging

    info = spec.model
    require_safe_torch()
    hf_logging.disable_progress_bar()
    try:
        model, loading = AutoModelForMaskedLM.from_pretrained(
            info.path,
            output_loading_info=True,
            attn_implementation=spec.backend.attention,
            trust_remote_code=trust_remote_code,
            use_safetensors=use_safetensors(info.path),
        )
    except Exception as exc:
        raise ModelError(
            f"--model {info.name}: cannot load its masked-language-model head from "
            f"{info.path}: {exc}"
        ) from exc
    missing = sorted(loading.get("missing_keys", ()))
    if missing:
        raise ModelError(
            f"--model {info.name}: weights missing from the checkpoint: {', '.join(missing[:5])}"
        )
    if spec.dtype == "float32":
        model = model.float()  # exact mode computes in float32, whatever the checkpoint holds
    return model.eval()


def _static_weight(file: str, name: str) -> torch.Tensor:
    from safetensors.torch import load_file

    try:
        weight = load_file(file)["weight"]
    except Exception as exc:
        raise ModelError(f"--model {name}: cannot read the static weights {file}: {exc}") from exc
    if weight.dim() != 1:
        raise ModelError(f"--model {name}: {file}: expected one weight per token id")
    return weight.float()
