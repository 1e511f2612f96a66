"""BERT in plain torch, loaded straight from model.safetensors: a cold start without transformers.

Importing transformers' modeling code costs about 2 s before the first vector (it pulls in
torch._dynamo, torch.distributed.tensor, sympy and scipy); a nightly top-up of a few hundred rows
is mostly that. all-MiniLM, bge, e5 and gte-small are plain BERT, so for a BERT with absolute
positions, a supported activation and its weights in one safetensors file, the job builds this
module (the same parameter names, so the checkpoint loads as is, and the same arithmetic:
embeddings + LayerNorm, then per layer SDPA attention and a feed-forward block, each followed by
a residual LayerNorm). etl.model.plain_checks says which checkpoints it takes and
etl.model.backend whether it runs one; the tests hold it to transformers' BertModel on every
hidden state.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import nn

from etl.errors import ModelError
from etl.model.code.base import PLAIN_BERT, ModelCode
from etl.model.files import SAFETENSORS
from etl.model.plain_checks import plain_bert_mismatch

ACTIVATIONS = {
    "gelu": F.gelu,
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
    "silu": F.silu,
    "swish": F.silu,
}


class Linear(nn.Linear):
    def reset_parameters(self) -> None:
        """Nothing: the checkpoint's weights replace these (random init costs time; on the meta
        device it imports torch._dynamo, 1 s)."""


class Embedding(nn.Embedding):
    def reset_parameters(self) -> None:
        """Nothing, as for Linear."""


class LayerNorm(nn.LayerNorm):
    def reset_parameters(self) -> None:
        """Nothing, as for Linear."""


@dataclass
class BertOutput:
    """What the encoder stage reads of a transformers BaseModelOutputWithPooling."""

    last_hidden_state: torch.Tensor  # (B, T, H)
    hidden_states: tuple[torch.Tensor, ...] | None  # L+1 of (B, T, H), index 0 the embeddings
    pooler_output: torch.Tensor | None  # (B, H)


class Embeddings(nn.Module):
    def __init__(self, c: SimpleNamespace) -> None:
        super().__init__()
        self.word_embeddings = Embedding(c.vocab_size, c.hidden_size)
        self.position_embeddings = Embedding(c.max_position_embeddings, c.hidden_size)
        self.token_type_embeddings = Embedding(c.type_vocab_size, c.hidden_size)
        self.LayerNorm = LayerNorm(c.hidden_size, eps=c.layer_norm_eps)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        # Added in place, in transformers' order (words + type, + positions), to the gathered
        # words: no (B, T, H) temporaries (4x faster at layer 0, the same floats).
        x = F.embedding(ids, self.word_embeddings.weight)  # (B, T, H)
        x += self.token_type_embeddings.weight[0]
        x += self.position_embeddings.weight[: ids.shape[1]]
        norm = self.LayerNorm
        return F.layer_norm(x, norm.normalized_shape, norm.weight, norm.bias, norm.eps)


class SelfAttention(nn.Module):
    def __init__(self, c: SimpleNamespace) -> None:
        super().__init__()
        self.heads = c.num_attention_heads
        self.query = Linear(c.hidden_size, c.hidden_size)
        self.key = Linear(c.hidden_size, c.hidden_size)
        self.value = Linear(c.hidden_size, c.hidden_size)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, t, h = x.shape

        def split(y: torch.Tensor) -> torch.Tensor:
            return y.view(b, t, self.heads, h // self.heads).transpose(1, 2)  # (B, heads, T, d)

        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, heads, T, d)
        return out.transpose(1, 2).reshape(b, t, h)


class Dense(nn.Module):
    """A projection, then LayerNorm over it plus the residual (BERT's Output blocks)."""

    def __init__(self, c: SimpleNamespace, inner: int) -> None:
        super().__init__()
        self.dense = Linear(inner, c.hidden_size)
        self.LayerNorm = LayerNorm(c.hidden_size, eps=c.layer_norm_eps)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dense(x) + residual)


class Attention(nn.Module):
    def __init__(self, c: SimpleNamespace) -> None:
        super().__init__()
        self.self = SelfAttention(c)  # the checkpoint's name: attention.self.query
        self.output = Dense(c, c.hidden_size)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.output(self.self(x, mask), x)


class Intermediate(nn.Module):
    def __init__(self, c: SimpleNamespace) -> None:
        super().__init__()
        self.dense = Linear(c.hidden_size, c.intermediate_size)
        self.act = ACTIVATIONS[c.hidden_act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.dense(x))


class Layer(nn.Module):
    def __init__(self, c: SimpleNamespace) -> None:
        super().__init__()
        self.attention = Attention(c)
        self.intermediate = Intermediate(c)
        self.output = Dense(c, c.intermediate_size)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        attended = self.attention(x, mask)
        return self.output(self.intermediate(attended), attended)


class Encoder(nn.Module):
    def __init__(self, c: SimpleNamespace) -> None:
        super().__init__()
        self.layer = nn.ModuleList(Layer(c) for _ in range(c.num_hidden_layers))


class Pooler(nn.Module):
    def __init__(self, c: SimpleNamespace) -> None:
        super().__init__()
        self.dense = Linear(c.hidden_size, c.hidden_size)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.dense(hidden[:, 0]))


class Bert(nn.Module):
    """BertModel's inference path: input ids and attention mask in, hidden states out."""

    def __init__(self, config: SimpleNamespace) -> None:
        super().__init__()
        self.config = config
        self.embeddings = Embeddings(config)
        self.encoder = Encoder(config)
        self.pooler: Pooler | None = Pooler(config)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        output_hidden_states: bool = False,
    ) -> BertOutput:
        x = self.embeddings(input_ids)  # (B, T, H)
        # True where a key is a real token; every query row attends to its own real keys.
        mask = attention_mask.bool()[:, None, None, :]  # (B, 1, 1, T)
        states = [x] if output_hidden_states else None
        for layer in self.encoder.layer:
            x = layer(x, mask)
            if states is not None:
                states.append(x)
        pooled = self.pooler(x) if self.pooler is not None else None
        return BertOutput(x, tuple(states) if states is not None else None, pooled)


def load_bert(path: str | Path, name: str | None = None) -> Bert:
    """The model of a plain BERT checkpoint (its pooler None where the checkpoint has no pooler
    weights). Only for what etl.model.plain_checks accepts; anything else is a
    ModelError, never a silent hand-over to another code."""
    path = Path(path)
    name = name or str(path)
    why = plain_bert_mismatch(path)
    if why is not None:
        raise ModelError(f"--model {name}: not a checkpoint the plain BERT reproduces ({why})")
    raw = json.loads((path / "config.json").read_text())
    config = SimpleNamespace(
        vocab_size=raw["vocab_size"],
        hidden_size=raw["hidden_size"],
        num_hidden_layers=raw["num_hidden_layers"],
        num_attention_heads=raw["num_attention_heads"],
        intermediate_size=raw["intermediate_size"],
        max_position_embeddings=raw.get("max_position_embeddings", 512),
        type_vocab_size=raw.get("type_vocab_size", 2),
        layer_norm_eps=raw.get("layer_norm_eps", 1e-12),
        hidden_act=raw.get("hidden_act", "gelu"),
    )
    from safetensors.torch import load_file

    weights = path / SAFETENSORS
    try:
        state = _rename(load_file(str(weights)))
    except Exception as exc:
        raise ModelError(f"--model {name}: cannot read {weights}: {exc}") from exc
    model = Bert(config)  # uninitialized until the checkpoint's tensors are assigned
    expected = set(model.state_dict())
    if not {"pooler.dense.weight", "pooler.dense.bias"} <= state.keys():
        model.pooler = None
        expected = {k for k in expected if not k.startswith("pooler.")}
    missing = sorted(expected - state.keys())
    if missing:
        raise ModelError(
            f"--model {name}: weights missing from the checkpoint: {', '.join(missing[:5])}"
        )
    model.load_state_dict({k: state[k] for k in expected}, strict=True, assign=True)
    return model.eval()


def _rename(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Checkpoint names to this module's: a `bert.` prefix (pre-training heads saved alongside)
    dropped, TF-era LayerNorm gamma/beta to weight/bias."""
    if any(k.startswith("bert.") for k in state):
        state = {k[5:]: v for k, v in state.items() if k.startswith("bert.")}
    renamed = {}
    for key, value in state.items():
        if key.endswith(".gamma"):
            key = key[: -len("gamma")] + "weight"
        elif key.endswith(".beta"):
            key = key[: -len("beta")] + "bias"
        renamed[key] = value
    return renamed


class PlainBertCode(ModelCode):
    """The plain BERT behind the ModelCode interface."""

    name = PLAIN_BERT

    def load(
        self, path: Path, name: str, attention: str | None, trust_remote_code: bool
    ) -> tuple[Bert, list[str]]:
        return load_bert(path, name), []  # missing weights are load_bert's error already
