"""Pure pooling functions over one hidden layer; masks make padding invisible.

None of these modify their inputs. ``pooler`` is not here: it is the model's own dense+tanh head
over [CLS] of the last layer, returned by the encoder as ``pooler_output``.
"""

from __future__ import annotations

import torch


def cls_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The first token's vector ([CLS] for BERT-family tokenizers)."""
    return hidden[:, 0]  # (B, H)


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over real tokens only."""
    weights = mask.to(hidden.dtype).unsqueeze(1)  # (B, 1, T)
    summed = torch.bmm(weights, hidden).squeeze(1)  # (B, H)
    counts = weights.sum(dim=2).clamp(min=1.0)  # (B, 1); a row always has [CLS] and [SEP]
    return summed / counts


def max_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Element-wise max over real tokens only."""
    padding = ~mask.bool().unsqueeze(-1)  # (B, T, 1)
    return hidden.masked_fill(padding, float("-inf")).amax(dim=1)  # (B, H)


POOLERS = {"cls": cls_pool, "mean": mean_pool, "max": max_pool}


def pool(hidden: torch.Tensor, mask: torch.Tensor, how: str) -> torch.Tensor:
    """Pool (B, T, H) hidden states with a (B, T) attention mask into (B, H), in float32."""
    return POOLERS[how](hidden.float(), mask)
