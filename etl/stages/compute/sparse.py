"""A sparse model's vector, from its masked-language-model logits (SPLADE) or from saved weights
per token (static), as sentence-transformers' SpladePooling and SparseStaticEmbedding compute it.

SPLADE: w[v] = pool over the text's tokens t of log(1 + relu(logits[t, v])), padding counted as
0, max or sum; "log1p_relu" takes one log1p more. log1p(relu(.)) only grows with its input, so
the max of it is it of the max: max pooling reduces the logits first and transforms (B, V)
values, not (B, T, V). Static: w[v] = weight[v] for every token id v the text contains (once,
however often). Then the top k weights of a row, where a k is set.
"""

from __future__ import annotations

import torch

# SPLADE logits are (B, T, V): a batch's rows go through the head in groups of at most this
# many logits (1 GiB in float32), so that a large GPU batch does not hold them all at once.
LOGITS_AT_ONCE = 1 << 28


def splade_pool(
    logits: torch.Tensor, mask: torch.Tensor, pooling: str, activation: str
) -> torch.Tensor:
    """(B, T, V) logits, (B, T) attention mask -> (B, V) float32 weights. Overwrites
    ``logits`` (they are the caller's to discard, and a copy would double the memory)."""
    logits.mul_(mask[..., None].to(logits.dtype))  # padding -> 0, which relu keeps at 0
    if pooling == "max":
        return _transform(logits.amax(dim=1).float(), activation)  # (B, V)
    return _transform(logits, activation).float().sum(dim=1)  # (B, V)


def _transform(x: torch.Tensor, activation: str) -> torch.Tensor:
    x = x.relu_().log1p_()
    return x.log1p_() if activation == "log1p_relu" else x


def static_weights(ids: torch.Tensor, mask: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """(B, T) ids and mask, (V,) weights -> (B, V): each id present in a row gets its weight."""
    presence = torch.zeros(ids.shape[0], weight.shape[0], dtype=torch.int64, device=ids.device)
    presence.scatter_(1, ids, mask.to(torch.int64))  # (B, V) 1 where the row has the token
    return presence * weight  # (B, V) float32


def top_k(weights: torch.Tensor, k: int | None) -> torch.Tensor:
    """The k largest weights of each row kept, the others made 0 (max_active_dims)."""
    if k is None or k >= weights.shape[1]:
        return weights
    largest = torch.topk(weights.abs(), k, dim=1).indices  # (B, k)
    return torch.zeros_like(weights).scatter_(1, largest, weights.gather(1, largest))


def row_groups(rows: int, tokens: int, vocab: int) -> list[slice]:
    """Slices of a batch's rows whose logits stay under LOGITS_AT_ONCE."""
    at_once = max(1, LOGITS_AT_ONCE // max(1, tokens * vocab))
    return [slice(start, start + at_once) for start in range(0, rows, at_once)]
