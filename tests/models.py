"""Tiny seeded models of every architecture the job supports, saved as sentence-transformers
models (modules.json, Pooling, Dense, Normalize, prompts) with tokenizers built here:
WordPiece for BERT-like models, byte-level BPE for RoBERTa-like and decoder ones."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

WORDS = [
    "the", "cat", "dog", "sat", "on", "a", "mat", "ran", "far", "away", "big", "red", "query",
    "passage", "instruct", "find", "documents", "about", "pets", "and", "small", "green", "house",
    "tree", "blue", "sky", "is", "was", "very", "old", "new", "fast", "slow",
]  # fmt: skip
PUNCT = [":", ".", ",", "!", "?", "-"]
PROMPTS = {"query": "query: ", "passage": "passage: "}
HIDDEN = 32


@dataclass(frozen=True)
class Case:
    """One architecture: how its tiny model is built and what sentence-transformers recipe it
    is saved with."""

    arch: str
    tokenizer: str  # wordpiece | bpe
    specials: str  # bert ([CLS] x [SEP]) | roberta (<s> x </s>) | decoder (x <eos>)
    pooling: tuple[str, ...]
    dense: str | None = None  # activation of a Dense layer after pooling, if any
    normalize: bool = True
    include_prompt: bool = True
    prompts: dict[str, str] = field(default_factory=dict)
    default_prompt: str | None = None
    padding_side: str = "right"


CASES = [
    Case("bert", "wordpiece", "bert", ("cls",), dense="Tanh", prompts=PROMPTS),
    Case("roberta", "bpe", "roberta", ("mean",), normalize=False),
    Case("xlm-roberta", "bpe", "roberta", ("mean",), prompts=PROMPTS, default_prompt="passage"),
    Case("distilbert", "wordpiece", "bert", ("max",), normalize=False),
    Case("mpnet", "wordpiece", "roberta", ("mean_sqrt_len_tokens",)),
    Case("electra", "wordpiece", "bert", ("weightedmean",)),
    Case("deberta-v2", "wordpiece", "bert", ("cls", "mean"), dense="Identity"),
    Case("modernbert", "bpe", "bert", ("mean",), include_prompt=False, prompts=PROMPTS),
    Case(
        "qwen3",
        "bpe",
        "decoder",
        ("lasttoken",),
        prompts={"query": "instruct: find documents about pets\nquery: "},
        padding_side="left",
    ),
]
CASE_IDS = [c.arch for c in CASES]


def texts(n: int, seed: int = 0) -> list[str]:
    """Sentences of very different lengths (1 to 60 words), some with punctuation."""
    import random

    rng = random.Random(seed)
    out = []
    for _ in range(n):
        words = [rng.choice(WORDS) for _ in range(rng.choice([1, 2, 4, 12, 30, 60]))]
        if rng.random() < 0.5:
            words[-1] += rng.choice(PUNCT)
        out.append(" ".join(words))
    return out


def _special_tokens(case: Case) -> dict[str, str]:
    if case.specials == "bert":
        return {"pad": "[PAD]", "unk": "[UNK]", "cls": "[CLS]", "sep": "[SEP]", "mask": "[MASK]"}
    if case.specials == "roberta":
        return {"bos": "<s>", "pad": "<pad>", "eos": "</s>", "unk": "<unk>", "mask": "<mask>"}
    return {"pad": "<|pad|>", "eos": "<|endoftext|>", "unk": "<|unk|>"}


def build_tokenizer(case: Case, path: Path):
    """A fast tokenizer trained or built here, with the architecture's special tokens."""
    from tokenizers import (
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )
    from transformers import PreTrainedTokenizerFast

    special = _special_tokens(case)
    names = list(special.values())
    if case.tokenizer == "wordpiece":
        vocab = {w: i for i, w in enumerate([*names, *WORDS, *PUNCT])}
        tok = Tokenizer(models.WordPiece(vocab, unk_token=special["unk"]))
        tok.normalizer = normalizers.BertNormalizer(lowercase=True)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece()
    else:
        tok = Tokenizer(models.BPE(unk_token=None))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=400,
            special_tokens=names,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tok.train_from_iterator(texts(400, seed=99) + list(PROMPTS.values()), trainer)
    ids = {k: tok.token_to_id(v) for k, v in special.items()}
    if case.specials == "bert":
        single = f"{special['cls']} $A {special['sep']}"
        pairs = [(special["cls"], ids["cls"]), (special["sep"], ids["sep"])]
    elif case.specials == "roberta":
        single = f"{special['bos']} $A {special['eos']}"
        pairs = [(special["bos"], ids["bos"]), (special["eos"], ids["eos"])]
    else:
        single = f"$A {special['eos']}"
        pairs = [(special["eos"], ids["eos"])]
    tok.post_processor = processors.TemplateProcessing(single=single, special_tokens=pairs)
    kwargs = {f"{k}_token": v for k, v in special.items()}
    if case.specials == "roberta":
        kwargs.update(cls_token=special["bos"], sep_token=special["eos"])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, padding_side=case.padding_side, model_max_length=128, **kwargs
    )
    fast.save_pretrained(path)
    return fast, ids


def build_model(case: Case, path: Path, layers: int = 3, positions: int = 128) -> Path:
    """The tiny seeded transformers model and its tokenizer, saved in ``path / 'hf'``; a
    ModernBERT with ``positions`` positions (others: 128)."""
    import torch
    import transformers as tf

    hf = path / "hf"
    tokenizer, ids = build_tokenizer(case, hf)
    vocab, pad = len(tokenizer), ids["pad"]
    common = dict(
        vocab_size=vocab,
        hidden_size=HIDDEN,
        num_hidden_layers=layers,
        num_attention_heads=4,
        intermediate_size=64,
        pad_token_id=pad,
    )
    learned = 128 + (pad + 1 if case.specials == "roberta" else 0)  # RoBERTa's offset
    if case.arch == "bert":
        config = tf.BertConfig(max_position_embeddings=learned, initializer_range=0.5, **common)
    elif case.arch == "roberta":
        config = tf.RobertaConfig(max_position_embeddings=learned, **common)
    elif case.arch == "xlm-roberta":
        config = tf.XLMRobertaConfig(max_position_embeddings=learned, **common)
    elif case.arch == "distilbert":
        config = tf.DistilBertConfig(
            vocab_size=vocab, dim=HIDDEN, n_layers=layers, n_heads=4, hidden_dim=64,
            max_position_embeddings=128, pad_token_id=pad,
        )  # fmt: skip
    elif case.arch == "mpnet":
        config = tf.MPNetConfig(max_position_embeddings=learned, **common)
    elif case.arch == "electra":
        config = tf.ElectraConfig(embedding_size=16, max_position_embeddings=128, **common)
    elif case.arch == "deberta-v2":
        config = tf.DebertaV2Config(
            max_position_embeddings=128, relative_attention=True, position_buckets=16,
            pos_att_type=["p2c", "c2p"], **common,
        )  # fmt: skip
    elif case.arch == "modernbert":
        config = tf.ModernBertConfig(
            max_position_embeddings=positions, global_attn_every_n_layers=2, local_attention=16,
            bos_token_id=ids["cls"], eos_token_id=ids["sep"], cls_token_id=ids["cls"],
            sep_token_id=ids["sep"], **common,
        )  # fmt: skip
    elif case.arch == "qwen3":
        config = tf.Qwen3Config(
            num_key_value_heads=2, head_dim=8, max_position_embeddings=128,
            eos_token_id=ids["eos"], **common,
        )  # fmt: skip
    else:
        raise ValueError(case.arch)
    torch.manual_seed(0)
    model = tf.AutoModel.from_config(config).eval()
    with torch.no_grad():  # large weights, so that layers and modes differ visibly
        for p in model.parameters():
            if p.dim() > 1:
                p.mul_(3.0)
    model.save_pretrained(hf)
    return hf


def save_sentence_transformer(
    case: Case, path: Path, layers: int = 3, positions: int = 128
) -> Path:
    """The model saved as sentence-transformers saves it: modules.json and module folders."""
    import torch
    from sentence_transformers import SentenceTransformer, models

    hf = build_model(case, path, layers, positions)
    transformer = models.Transformer(str(hf), max_seq_length=min(64, positions))
    pooling = models.Pooling(
        HIDDEN,
        pooling_mode=case.pooling if len(case.pooling) > 1 else case.pooling[0],
        include_prompt=case.include_prompt,
    )
    modules = [transformer, pooling]
    if case.dense:
        torch.manual_seed(1)
        activation = getattr(torch.nn, case.dense)()
        modules.append(models.Dense(HIDDEN * len(case.pooling), 24, activation_function=activation))
    if case.normalize:
        modules.append(models.Normalize())
    st = SentenceTransformer(
        modules=modules, prompts=case.prompts, default_prompt_name=case.default_prompt, device="cpu"
    )
    out = path / "st"
    st.save(str(out))
    return out
