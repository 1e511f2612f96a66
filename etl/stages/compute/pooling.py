"""Pure pooling functions over one hidden layer; masks make padding invisible.

Every mode sentence-transformers has, computed as it computes them, on either padding side:
cls (first real token), mean, max, mean_sqrt_len_tokens, weightedmean (weights 1, 2, 3, ...
from the first real token), lasttoken (last real token). None modify their inputs. ``pooler`` is
not here: it is the model's own dense+tanh head over [CLS], returned by the encoder.
"""

from __future__ import annotations

import torch


def cls_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The first counted token's vector ([CLS] for BERT-family tokenizers)."""
    first = mask.int().argmax(dim=1)  # (B,)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), first]  # (B, H)


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over counted tokens only."""
    return _masked_sum(hidden, mask) / _count(hidden, mask)


def mean_sqrt_len_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sum over counted tokens divided by the square root of their number."""
    return _masked_sum(hidden, mask) / _count(hidden, mask).sqrt()


def max_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Element-wise max over counted tokens only."""
    padding = ~mask.bool().unsqueeze(-1)  # (B, T, 1)
    return hidden.masked_fill(padding, float("-inf")).amax(dim=1)  # (B, H)


def weightedmean_pool(
    hidden: torch.Tensor, mask: torch.Tensor, real: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean weighted by position: 1 for the first real token, 2 for the next, and so on.

    ``real`` is the attention mask before a prompt was left out: positions count from the first
    real token, so left padding shifts nothing.
    """
    real = mask if real is None else real
    positions = torch.arange(1, hidden.shape[1] + 1, device=hidden.device, dtype=hidden.dtype)
    offset = real.int().argmax(dim=1).to(hidden.dtype)  # (B,) left padding
    weights = (positions[None, :] - offset[:, None]) * mask.to(hidden.dtype)  # (B, T)
    summed = torch.bmm(weights.unsqueeze(1), hidden).squeeze(1)  # (B, H)
    return summed / weights.sum(dim=1, keepdim=True).clamp(min=1e-9)


def lasttoken_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The last counted token's vector (decoder embedders end on their EOS token)."""
    length = hidden.shape[1]
    found, from_end = mask.int().flip(1).max(dim=1)  # (B,), (B,)
    last = torch.where(found == 0, length - 1, length - 1 - from_end)  # (B,)
    rows = torch.arange(hidden.shape[0], device=hidden.device)
    return hidden[rows, last] * found.to(hidden.dtype)[:, None]  # (B, H); no token counted: 0


POOLERS = {
    "cls": cls_pool,
    "mean": mean_pool,
    "max": max_pool,
    "mean_sqrt_len_tokens": mean_sqrt_len_pool,
    "lasttoken": lasttoken_pool,
}


def pool(
    hidden: torch.Tensor,
    mask: torch.Tensor,
    modes: tuple[str, ...] | str,
    prompt_length: int = 0,
) -> torch.Tensor:
    """Pool (B, T, H) hidden states with a (B, T) attention mask into (B, len(modes) x H), in
    float32, the modes concatenated in order. ``prompt_length`` first tokens of each row are
    left out (sentence-transformers' include_prompt=False)."""
    modes = (modes,) if isinstance(modes, str) else modes
    hidden = hidden.float()
    counted = without_prompt(mask, prompt_length) if prompt_length else mask
    parts = []
    for mode in modes:
        if mode == "weightedmean":
            parts.append(weightedmean_pool(hidden, counted, mask))
        else:
            parts.append(POOLERS[mode](hidden, counted))
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)


def pool_spans(
    hidden: torch.Tensor, spans: torch.Tensor, width: int, modes: tuple[str, ...] | str
) -> torch.Tensor:
    """(Q, len(modes) x H): each span (sequence, first token, token after) of (B, T, H) hidden
    states pooled on its own, as a sequence of just its tokens would be (--chunking late);
    ``width``: the longest span."""
    sequence, first, after = spans.unbind(dim=1)
    steps = torch.arange(width, device=hidden.device)  # (W,)
    index = (first[:, None] + steps[None, :]).clamp(max=hidden.shape[1] - 1)  # (Q, W)
    mask = (steps[None, :] < (after - first)[:, None]).long()  # (Q, W)
    return pool(hidden[sequence[:, None], index], mask, modes)  # from (Q, W, H)


def without_prompt(mask: torch.Tensor, prompt_length: int) -> torch.Tensor:
    """The mask with each row's first ``prompt_length`` real tokens left out (a new tensor)."""
    first = mask.int().argmax(dim=1, keepdim=True)  # (B, 1) left padding
    positions = torch.arange(mask.shape[1], device=mask.device)[None, :]  # (1, T)
    return mask * (positions >= first + prompt_length).to(mask.dtype)


def _masked_sum(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    weights = mask.to(hidden.dtype).unsqueeze(1)  # (B, 1, T)
    return torch.bmm(weights, hidden).squeeze(1)  # (B, H)


def _count(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return mask.to(hidden.dtype).sum(dim=1, keepdim=True).clamp(min=1e-9)  # (B, 1)
