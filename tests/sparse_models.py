"""Tiny seeded sparse (SPLADE, inference-free Router) and multi-vector (ColBERT-style) models,
saved by sentence-transformers itself, and the library's own ``encode`` outputs for them.

Every builder writes a directory with exactly the files a hub model of that kind has
(modules.json, the module folders and their configs, router_config.json, ...), built offline
from a WordPiece vocabulary and a BERT seeded here. docs/design-sparse.md explains the maths.
"""

from __future__ import annotations

import string
import tempfile
from pathlib import Path
from typing import Literal

import numpy as np

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
MARKERS = ["[Q]", "[D]"]  # ColBERT's query and document markers, special tokens of their own
WORDS = [
    "the", "cat", "dog", "sat", "on", "a", "mat", "ran", "far", "away", "big", "red", "find",
    "documents", "about", "pets", "and", "small", "green", "house", "tree", "blue", "sky", "is",
    "was", "very", "old", "new", "fast", "slow", "run", "walk", "jump", "play", "bird", "fish",
    "sun", "moon", "day", "night", "good", "bad", "with", "in", "of", "to", "it", "he", "she",
]  # fmt: skip
SUBWORDS = ["##s", "##ed", "##ing", "##er", "##ly", "##y"]
PUNCT = list(".,!?:;-'\"()")
VOCAB = [*SPECIALS, *MARKERS, *WORDS, *SUBWORDS, *PUNCT]  # 73 entries

HIDDEN = 32
LAYERS = 2
MLM_BIAS = -3.0  # the MLM decoder's bias: most logits end up below zero, so relu makes rows sparse
MAX_ACTIVE_DIMS = 10
MV_DIM = 16  # the ColBERT projection's output size
MV_QUERY_LENGTH = 16  # query expansion pads every query to this many tokens with [MASK]
MV_DOCUMENT_LENGTH = 48  # documents are truncated here (the tokenizer allows 64)
MAX_LENGTH = 64
PROMPTS_MV = {"query": "[Q] ", "document": "[D] "}


def texts(n: int, seed: int = 0) -> list[str]:
    """Rows of very different lengths (1 to 60 words), with punctuation, capitals and subwords."""
    import random

    rng = random.Random(seed)
    out = []
    for _ in range(n):
        words = [rng.choice(WORDS) for _ in range(rng.choice([1, 2, 4, 12, 30, 60]))]
        for i in range(len(words)):
            r = rng.random()
            if r < 0.15:
                words[i] += rng.choice(["s", "ed", "ing", "ly"])  # splits into word + ##piece
            elif r < 0.3:
                words[i] += rng.choice(PUNCT)
            elif r < 0.35:
                words[i] = words[i].capitalize()
        out.append(" ".join(words))
    return out


def build_tokenizer(path: Path, markers: bool = False):
    """A lowercasing BERT WordPiece tokenizer over VOCAB, saved in ``path``; with ``markers``,
    [Q] and [D] are special tokens, so that a "[Q] " prompt is one token, not '[', 'q', ']'."""
    from transformers import BertTokenizerFast

    extra = {"additional_special_tokens": MARKERS} if markers else {}
    tokenizer = BertTokenizerFast(
        vocab={w: i for i, w in enumerate(VOCAB)},
        do_lower_case=True,
        model_max_length=MAX_LENGTH,
        **extra,
    )
    ids = tokenizer("The cats sat.")["input_ids"]
    expected = [VOCAB.index(t) for t in ["[CLS]", "the", "cat", "##s", "sat", ".", "[SEP]"]]
    if ids != expected:
        raise RuntimeError(f"tiny tokenizer ignored its vocabulary: {ids}")
    tokenizer.save_pretrained(path)
    return tokenizer


def _bert_config():
    from transformers import BertConfig

    return BertConfig(
        vocab_size=len(VOCAB),
        hidden_size=HIDDEN,
        num_hidden_layers=LAYERS,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=MAX_LENGTH,
        initializer_range=0.5,  # large weights, so that logits spread well past the bias
    )


def build_mlm(path: Path, seed: int = 0) -> Path:
    """A seeded BertForMaskedLM (decoder tied to the word embeddings) and its tokenizer."""
    import torch
    from transformers import BertForMaskedLM

    torch.manual_seed(seed)
    model = BertForMaskedLM(_bert_config()).eval()
    with torch.no_grad():
        model.cls.predictions.bias.fill_(MLM_BIAS)  # tied to decoder.bias
    model.save_pretrained(path)
    build_tokenizer(path)
    return path


def build_splade(
    path: Path,
    pooling: Literal["max", "sum"] = "max",
    activation: Literal["relu", "log1p_relu"] = "relu",
    max_active_dims: int | None = None,
    seed: int = 0,
) -> Path:
    """A SPLADE SparseEncoder: Transformer (fill-mask) then SpladePooling, saved in ``path``."""
    from sentence_transformers import SparseEncoder
    from sentence_transformers.sparse_encoder.modules import SpladePooling, Transformer

    with tempfile.TemporaryDirectory() as tmp:
        transformer = Transformer(str(build_mlm(Path(tmp), seed)), transformer_task="fill-mask")
        splade = SpladePooling(pooling_strategy=pooling, activation_function=activation)
        model = SparseEncoder(
            modules=[transformer, splade], max_active_dims=max_active_dims, device="cpu"
        )
        model.save(str(path))
    return path


def build_splade_max(path: Path) -> Path:
    """SPLADE v2/v3 style: max over tokens, relu, with ``max_active_dims`` in the config."""
    return build_splade(path, "max", "relu", max_active_dims=MAX_ACTIVE_DIMS)


def build_splade_sum(path: Path) -> Path:
    """Original SPLADE: sum over tokens, relu, no top-k."""
    return build_splade(path, "sum", "relu", seed=1)


def static_weights(seed: int = 2):
    """IDF-like weights per vocabulary id: zero for [PAD], [CLS], [SEP], [MASK] and for a few
    tokens (as for tokens absent from an idf.json), positive elsewhere."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    weight = torch.rand(len(VOCAB), generator=gen) * 3 + 0.5  # (V,)
    for token in ["[PAD]", "[CLS]", "[SEP]", "[MASK]", "the", "a", ","]:
        weight[VOCAB.index(token)] = 0.0
    return weight


def build_inference_free(
    path: Path, static_side: Literal["query", "document"] = "query", seed: int = 3
) -> Path:
    """An asymmetric SparseEncoder, as opensearch-neural-sparse-encoding-doc-* (sentence-
    transformers calls them inference-free SPLADE): a Router whose ``static_side`` route is a
    SparseStaticEmbedding (an IDF lookup) and whose other route is the MLM + SpladePooling(max,
    log1p_relu). The Router's default route (what ``encode`` takes without a task) is "document".
    Real models have the static route on the query side; ``static_side="document"`` flips it."""
    from sentence_transformers import SparseEncoder
    from sentence_transformers.sparse_encoder.modules import (
        Router,
        SparseStaticEmbedding,
        SpladePooling,
        Transformer,
    )

    with tempfile.TemporaryDirectory() as tmp:
        transformer = Transformer(str(build_mlm(Path(tmp), seed)), transformer_task="fill-mask")
    splade = [transformer, SpladePooling(pooling_strategy="max", activation_function="log1p_relu")]
    static = [SparseStaticEmbedding(transformer.tokenizer, weight=static_weights(), frozen=True)]
    if static_side == "query":
        router = Router.for_query_document(query_modules=static, document_modules=splade)
    else:
        router = Router.for_query_document(query_modules=splade, document_modules=static)
    model = SparseEncoder(modules=[router], similarity_fn_name="dot", device="cpu")
    model.save(str(path))
    return path


def build_multi_vector(path: Path, seed: int = 4) -> Path:
    """A ColBERT-style MultiVectorEncoder: Transformer (BertModel) with query expansion to
    MV_QUERY_LENGTH and documents cut at MV_DOCUMENT_LENGTH, a Dense projection to MV_DIM without
    bias, a MultiVectorMask with the punctuation skiplist (documents only), and a token-level
    Normalize; prompts "[Q] " and "[D] " are special tokens of the tokenizer."""
    import torch
    from sentence_transformers import MultiVectorEncoder
    from sentence_transformers.base.modules import Dense, Normalize, Transformer
    from sentence_transformers.multi_vector_encoder.modules import MultiVectorMask
    from transformers import BertModel

    torch.manual_seed(seed)
    with tempfile.TemporaryDirectory() as tmp:
        BertModel(_bert_config()).eval().save_pretrained(tmp)
        build_tokenizer(Path(tmp), markers=True)
        transformer = Transformer(
            tmp,
            document_length=MV_DOCUMENT_LENGTH,
            query_expansion={"strategy": "fixed", "length": MV_QUERY_LENGTH},
        )
    torch.manual_seed(seed + 1)
    dense = Dense(
        HIDDEN,
        MV_DIM,
        bias=False,
        activation_function=torch.nn.Identity(),
        module_input_name="token_embeddings",
    )
    mask = MultiVectorMask(skiplist_words=list(string.punctuation))
    normalize = Normalize(module_input_name="token_embeddings")
    model = MultiVectorEncoder(
        modules=[transformer, dense, mask, normalize], prompts=PROMPTS_MV, device="cpu"
    )
    model.save(str(path))
    return path


Side = Literal["encode", "document", "query"]


def sparse_reference(
    model_dir: Path, rows: list[str], side: Side = "encode", **kw
) -> list[tuple[np.ndarray, np.ndarray]]:
    """What SparseEncoder gives for ``rows``: per row, the active vocabulary ids (ascending,
    int64) and their values (float32). ``side`` picks ``encode`` (no task: the Router's default
    route), ``encode_document`` or ``encode_query``; ``kw`` goes to that method."""
    from sentence_transformers import SparseEncoder

    model = SparseEncoder(str(model_dir), device="cpu", local_files_only=True)
    method = {"encode": model.encode, "document": model.encode_document}.get(
        side, model.encode_query
    )
    out = method(rows, batch_size=8, **kw).coalesce()  # (N, V) sparse COO
    index, values = out.indices().numpy(), out.values().numpy()
    result = []
    for row in range(len(rows)):
        mine = index[0] == row
        order = np.argsort(index[1][mine])
        result.append((index[1][mine][order].astype(np.int64), values[mine][order]))
    return result


def multi_vector_reference(
    model_dir: Path, rows: list[str], side: Side = "encode", **kw
) -> list[np.ndarray]:
    """What MultiVectorEncoder gives for ``rows``: per row, its token vectors (n_i, MV_DIM)
    float32, in token order. ``side`` as in ``sparse_reference``."""
    from sentence_transformers import MultiVectorEncoder

    model = MultiVectorEncoder(str(model_dir), device="cpu", local_files_only=True)
    method = {"encode": model.encode, "document": model.encode_document}.get(
        side, model.encode_query
    )
    return [v.numpy() for v in method(rows, batch_size=8, **kw)]
