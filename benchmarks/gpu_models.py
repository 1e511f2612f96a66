"""`make bench-gpu`'s larger encoders, built here with seeded random weights, measured against
sentence-transformers; and the tokenizer's own `encode_batch` rate, the host side's ceiling.

  bert-base  bge-base-en-v1.5's shape: BertModel, hidden 768, 12 layers, 12 heads, intermediate
             3,072, 512 positions, bert-base-uncased's vocabulary (the packaged all-MiniLM-L6-v2's
             tokenizer files are that vocabulary), CLS pooling, Normalize
  qwen3      Qwen3-Embedding-0.6B's shape: Qwen3Model, hidden 1,024, 28 layers, 16 heads, 8 KV
             heads, head dim 128, intermediate 3,072, rope theta 10^6, tied embeddings; a
             byte-level BPE (32k) trained here on the benchmark's rows, "<|endoftext|>" appended
             to every text and padding on the left, as Qwen3-Embedding's tokenizer does;
             last-token pooling, Normalize

Nothing is downloaded: each model is a transformers model made from its config with
`save_pretrained`, wrapped as a sentence-transformers model directory, as tests/models.py does
for the tiny families (with the library's own initialisation here, not enlarged weights).
Random weights measure the shape's speed and bfloat16's numerics, not the quality of vectors.
Both truncate at 512 tokens (Qwen3-Embedding allows 32k; the corpus's longest row has 1,272).
`--smoke` builds the same recipes tiny: 2 layers, hidden 64, a 512-token BPE.

Against sentence-transformers, as for the default model: `encode` alone after a warm-up at the
best batch size of the sweep, in the same dtype on the same rows; float32 references by
sentence-transformers on the first --reference-rows. The job's rates here are over its
embedding window (its first shard's start to its last shard's record: model load and warm-up
excluded, as they are from `encode`); its end-to-end seconds are in gpu.json. Tokens are real
tokens: the attention mask's ones of each row after truncation, counted by the model's tokenizer.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.common import REPO, cosines, run_job, say

MAX_SEQ_LENGTH = 512
EOS = "<|endoftext|>"  # Qwen3-Embedding appends it to every text and pads with it
BERT_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
    "special_tokens_map.json",
)


@dataclass(frozen=True)
class Encoder:
    """One benchmarked shape: its transformers config, sentence-transformers pooling, label."""

    key: str  # bert-base | qwen3
    label: str
    config: dict
    pooling: str
    padding_side: str = "right"


BERT_BASE = Encoder(
    "bert-base",
    "BERT-base-shaped (bge-base-en-v1.5), CLS",
    dict(
        hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
        max_position_embeddings=512, vocab_size=30522, type_vocab_size=2,
    ),
    "cls",
)  # fmt: skip
QWEN3 = Encoder(
    "qwen3",
    "decoder, Qwen3-Embedding-0.6B-shaped, last token",
    dict(
        hidden_size=1024, num_hidden_layers=28, num_attention_heads=16, num_key_value_heads=8,
        head_dim=128, intermediate_size=3072, max_position_embeddings=32768,
        rope_theta=1_000_000.0, rms_norm_eps=1e-6, tie_word_embeddings=True,
    ),
    "lasttoken",
    padding_side="left",
)  # fmt: skip
ENCODERS = (BERT_BASE, QWEN3)
TINY = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128)
BPE_VOCAB, BPE_VOCAB_SMOKE = 32_000, 512


def build(encoder: Encoder, path: Path, texts: list[str], smoke: bool) -> Path:
    """The seeded model as a sentence-transformers directory under ``path``; its path."""
    import torch
    import transformers as tf
    from sentence_transformers import SentenceTransformer, models

    hf = path / "hf"
    config = dict(encoder.config, **(TINY if smoke else {}))
    if encoder.key == "bert-base":
        _copy_bert_vocabulary(hf)
        hf_config = tf.BertConfig(**config)
    else:
        if smoke:
            config.update(num_key_value_heads=2, head_dim=16)
        tokenizer = _train_bpe(hf, texts, BPE_VOCAB_SMOKE if smoke else BPE_VOCAB)
        eos = tokenizer.convert_tokens_to_ids(EOS)
        hf_config = tf.Qwen3Config(
            **config, vocab_size=len(tokenizer), pad_token_id=eos, eos_token_id=eos
        )
    torch.manual_seed(0)
    tf.AutoModel.from_config(hf_config).eval().save_pretrained(hf)
    transformer = models.Transformer(str(hf), max_seq_length=MAX_SEQ_LENGTH)
    pooling = models.Pooling(config["hidden_size"], encoder.pooling)
    st = SentenceTransformer(modules=[transformer, pooling, models.Normalize()], device="cpu")
    st.save(str(path / "st"))
    return path / "st"


def _copy_bert_vocabulary(hf: Path) -> None:
    """bert-base-uncased's tokenizer files, as the packaged default model ships them."""
    from etl.model.locate import default_model_path

    hf.mkdir(parents=True, exist_ok=True)
    for name in BERT_TOKENIZER_FILES:
        shutil.copy(default_model_path() / name, hf / name)


def _train_bpe(hf: Path, texts: list[str], vocab_size: int):
    """A byte-level BPE trained on ``texts``, "<|endoftext|>" after every text, left padding."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    tok.post_processor = processors.TemplateProcessing(
        single=f"$A {EOS}", special_tokens=[(EOS, tok.token_to_id(EOS))]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=EOS,
        pad_token=EOS,
        padding_side="left",
        model_max_length=MAX_SEQ_LENGTH,
    )
    fast.save_pretrained(hf)
    return fast


def real_tokens(model: Path, texts: list[str]) -> int:
    """The attention mask's ones over ``texts`` after truncation, by the model's tokenizer."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model))
    masks = tokenizer(texts, truncation=True, max_length=MAX_SEQ_LENGTH)["attention_mask"]
    return sum(sum(mask) for mask in masks)


def measure(encoder: Encoder, texts: list[str], shards: Path, args, work: Path) -> list[dict]:
    """sentence-transformers at its best batch size, then the job, both in bfloat16 on the
    same rows: two rows of the report's model table."""
    model = build(encoder, work / encoder.key, texts, args.smoke)
    tokens = real_tokens(model, texts)
    say(f"{encoder.key}: built in {model}; {len(texts):,} rows, {tokens:,} tokens")
    reference, (batch, st_seconds, st_vectors) = _st(model, texts, args)
    st_rate = len(texts) / st_seconds
    label = encoder.label + (" (smoke: tiny)" if args.smoke else "")
    common = {"model": label, "dtype": "bfloat16", "rows": len(texts), "tokens": tokens}
    rows = [
        {
            **common,
            "what": f"sentence-transformers, batch {batch}",
            "rows_per_s": round(st_rate, 1),
            "tokens_per_s": round(tokens / st_seconds),
            "cos_min": cosines(st_vectors[: len(reference)], reference)["min"],
        }
    ]
    out = work / f"job-{encoder.key}"
    seconds, vectors, summary = run_job(
        shards, out, column="emb_model", model=str(model), device=args.device, dtype="bfloat16"
    )
    window = embedding_seconds(out) or seconds
    rows.append(
        {
            **common,
            "what": "embed-etl, defaults",
            "rows_per_s": round(len(texts) / window, 1),
            "tokens_per_s": round(tokens / window),
            "x_st": round(st_seconds / window, 2),
            "cos_min": cosines(vectors[: len(reference)], reference)["min"],
            "gpu_busy": gpu_busy(out, summary),
            "seconds_end_to_end": round(seconds, 2),
            "seconds_window": round(window, 2),
        }
    )
    say(
        f"{encoder.key}: embed-etl {rows[1]['tokens_per_s']:,} tokens/s, {rows[1]['x_st']}x ST, "
        f"GPU busy {rows[1]['gpu_busy']}, min cosine {rows[1]['cos_min']}"
    )
    shutil.rmtree(work / encoder.key, ignore_errors=True)  # 2.4 GB for the decoder
    return rows


def _st(model: Path, texts: list[str], args) -> tuple[np.ndarray, tuple[int, float, np.ndarray]]:
    """(float32 vectors of the first reference rows, (best batch, seconds, bfloat16 vectors))."""
    import torch
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(model), device=args.device)  # float32, as saved
    head = texts[: args.reference_rows]
    reference = st.encode(head, batch_size=min(args.st_batch_sizes), normalize_embeddings=True)
    st.to(torch.bfloat16)
    best: tuple[int, float, np.ndarray] | None = None
    for batch in args.st_batch_sizes:
        st.encode(texts[: batch * 2], batch_size=batch)  # kernels chosen, caches warm
        sync(args.device)
        start = time.perf_counter()
        vectors = st.encode(texts, batch_size=batch, normalize_embeddings=True)
        sync(args.device)
        seconds = time.perf_counter() - start
        say(f"sentence-transformers bfloat16 batch {batch}: {len(texts) / seconds:.1f} rows/s")
        if best is None or seconds < best[1]:
            best = (batch, seconds, np.asarray(vectors, dtype=np.float32))
    return np.asarray(reference, dtype=np.float32), best


def sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def embedding_seconds(out: Path) -> float | None:
    """The job's embedding window: its first shard's start to its last shard's record (model
    load and warm-up come before it)."""
    from etl.state.manifest import Manifest
    from etl.storage import open_storage

    done = [r for r in Manifest(open_storage(str(out))).records() if r.started_at is not None]
    if not done:
        return None
    wall = max(r.finished_at for r in done) - min(r.started_at for r in done)
    return wall if wall > 0 else None


def gpu_busy(out: Path, summary: dict) -> float | None:
    """The share of the embedding window the GPU computed (see benchmarks/gpu.py's
    docstring); None where nothing was timed (a CPU)."""
    window = embedding_seconds(out)
    if not summary["device_seconds"] or window is None:
        return None
    return round(summary["device_seconds"] / window, 3)


def tokenizer_rate(shards: Path, repeats: int) -> dict:
    """The default model's tokenizer alone, `encode_batch` truncating at its 256 tokens, on the
    same rows and every core this process may use (its rayon threads), in a fresh process so
    that nothing before it (a fork, torch's threads) changes it."""
    cmd = [sys.executable, "-m", "benchmarks.gpu_models", str(shards), str(repeats)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"encode_batch child failed: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _tokenizer_child(shards: str, repeats: int) -> dict:
    import pyarrow.parquet as pq
    from tokenizers import Tokenizer

    from etl.model.locate import default_model_path

    texts = pq.read_table(shards, columns=["text"]).column("text").to_pylist()
    tokenizer = Tokenizer.from_file(str(default_model_path() / "tokenizer.json"))
    tokenizer.enable_truncation(256)  # all-MiniLM-L6-v2's max_seq_length, the job's default
    tokenizer.no_padding()  # its tokenizer.json pads to 128; the job pads per batch
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        encoded = tokenizer.encode_batch(texts)
        seconds.append(time.perf_counter() - start)
    median = statistics.median(seconds)
    return {
        "rows_per_s": round(len(texts) / median, 1),
        "tokens": sum(len(e.ids) for e in encoded),
        "seconds": [round(s, 3) for s in seconds],
        "cores": host_cores(),
    }


def host_cores() -> int:
    """The cores this process may use: its affinity mask where the platform has one."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


if __name__ == "__main__":
    print(json.dumps(_tokenizer_child(sys.argv[1], int(sys.argv[2]))), flush=True)
