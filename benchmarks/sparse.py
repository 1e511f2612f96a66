"""A sparse model against the dense default on the same rows: rows/s and bytes per row.

No SPLADE checkpoint can be downloaded here, so the benchmark builds one of the real shape:
all-MiniLM-L6-v2's encoder (6 layers, hidden 384) under a masked-language-model head over its
30,522-token vocabulary (the decoder tied to its word embeddings, the transform seeded), saved
by sentence-transformers as a SparseEncoder (SpladePooling, max). Its weights are not trained,
so what its vectors mean is nothing; what it costs is a real SPLADE's: the encoder and a
384 x 30,522 head per token. The head's bias is set so that a row keeps about as many nonzero
weights as SPLADE models give a paragraph (a few hundred); --sparse-top-k caps them.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import pyarrow.parquet as pq

from benchmarks.common import corpus_rows, run_job, say

HEAD_BIAS = -4.25  # the MLM head's bias: about 200 nonzero weights in a corpus paragraph


def build_splade(path: Path) -> Path:
    """all-MiniLM-L6-v2's encoder under a seeded MLM head, saved as a SparseEncoder."""
    import shutil
    import tempfile

    import torch
    from sentence_transformers import SparseEncoder
    from sentence_transformers.sparse_encoder.modules import SpladePooling, Transformer
    from transformers import BertConfig, BertForMaskedLM, BertModel

    from etl.model.locate import default_model_path

    base = default_model_path()
    torch.manual_seed(0)
    config = BertConfig.from_pretrained(base)
    mlm = BertForMaskedLM(config).eval()
    mlm.bert.load_state_dict(BertModel.from_pretrained(base).state_dict(), strict=False)
    mlm.tie_weights()
    with torch.no_grad():
        mlm.cls.predictions.bias.fill_(HEAD_BIAS)
    with tempfile.TemporaryDirectory() as tmp:
        mlm.save_pretrained(tmp)
        for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt"):
            if (base / name).exists():
                shutil.copy(base / name, Path(tmp) / name)
        transformer = Transformer(tmp, transformer_task="fill-mask", max_seq_length=256)
        model = SparseEncoder(modules=[transformer, SpladePooling("max")], device="cpu")
        model.save(str(path))
    return path


def measure(args: argparse.Namespace, work: Path) -> dict:
    rows = args.sparse_rows
    src = work / "sparse-in"
    src.mkdir(parents=True, exist_ok=True)
    pq.write_table(corpus_rows(args.corpus, rows), src / "part.parquet")
    model = build_splade(work / "splade-minilm")
    runs = {
        "dense (all-MiniLM-L6-v2, emb_model)": {"column": "emb_model"},
        "sparse (SPLADE head, emb_sparse)": {"column": "emb_sparse", "model": str(model)},
        "sparse, --sparse-top-k 64": {
            "column": "emb_sparse",
            "model": str(model),
            "sparse_top_k": 64,
        },
    }
    result: dict = {"rows": rows, "runs": {}}
    for name, options in runs.items():
        column = options.pop("column")
        seconds = []
        for repeat in range(args.repeats):
            out = work / f"sparse-out-{len(result['runs'])}-{repeat}"
            took, _, _ = run_job(
                src, out, column="id", max_length=256, threads=args.threads, no_reuse=True,
                **options,
            )  # fmt: skip
            seconds.append(took)
        meta = pq.read_metadata(out / "part.parquet")
        vector_bytes = sum(
            meta.row_group(g).column(i).total_compressed_size
            for g in range(meta.num_row_groups)
            for i in range(meta.num_columns)
            if meta.schema.column(i).path.split(".")[0] == column
        )
        figures = {
            "rows_per_s": round(rows / statistics.median(seconds), 1),
            "seconds": [round(s, 2) for s in seconds],
            "bytes_per_row": round(vector_bytes / rows, 1),
        }
        if column == "emb_sparse":
            table = pq.read_table(out / "part.parquet", columns=["emb_sparse"])
            counts = [len(r) for r in table.column("emb_sparse").to_pylist()]
            figures["nonzero_median"] = statistics.median(counts)
        result["runs"][name] = figures
        say(f"sparse {name}: {figures}")
    return result


def show(result: dict) -> None:
    print(f"\nsparse against dense, {result['rows']:,} corpus rows, whole job (start-up included):")
    for name, r in result["runs"].items():
        nonzero = f", median {r['nonzero_median']:.0f} nonzero" if "nonzero_median" in r else ""
        print(
            f"  {name:<38} {r['rows_per_s']:>8,.1f} rows/s {r['bytes_per_row']:>9,.1f} "
            f"bytes/row{nonzero}"
        )
