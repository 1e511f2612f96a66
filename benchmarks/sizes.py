"""Output sizes: one whole shard of the corpus written with each --output-dtype."""

from __future__ import annotations

import argparse
from pathlib import Path

import pyarrow.parquet as pq

from benchmarks.common import run_job, say


def measure(args: argparse.Namespace, work: Path) -> dict:
    from etl.config import OUTPUT_DTYPES

    shard = sorted(args.corpus.glob("*.parquet"))[0]
    result = {"shard": shard.name, "rows": pq.read_metadata(shard).num_rows, "dtypes": {}}
    for dtype in OUTPUT_DTYPES:
        out = work / f"sizes-{dtype}"
        run_job(
            shard,
            out,
            column="id",
            normalize=True,
            max_length=args.max_length,
            output_dtypes=(dtype,),
            threads=args.threads,
        )
        path = out / shard.name
        meta = pq.read_metadata(path)
        vector_bytes = sum(
            meta.row_group(g).column(i).total_compressed_size
            for g in range(meta.num_row_groups)
            for i in range(meta.num_columns)
            if meta.schema.column(i).path.split(".")[0] == "emb_mean"
        )
        result["dtypes"][dtype] = {
            "file_bytes": path.stat().st_size,
            "vector_bytes": vector_bytes,
            "vector_bytes_per_row": round(vector_bytes / meta.num_rows, 1),
        }
        say(f"sizes {dtype}: file {path.stat().st_size:,} bytes, vectors {vector_bytes:,} bytes")
    return result


def show(sizes: dict) -> None:
    print(f"\none shard, {sizes['shard']} ({sizes['rows']:,} rows), normalized emb_mean:")
    header = ("--output-dtype", "file MB", "vectors MB", "bytes/row", "vs float32")
    print(f"{header[0]:<16}{header[1]:>9}{header[2]:>12}{header[3]:>11}{header[4]:>12}")
    base = sizes["dtypes"]["float32"]["file_bytes"]
    for dtype, r in sizes["dtypes"].items():
        print(
            f"{dtype:<16}{r['file_bytes'] / 1e6:>9.2f}{r['vector_bytes'] / 1e6:>12.2f}"
            f"{r['vector_bytes_per_row']:>11}{base / r['file_bytes']:>11.1f}x"
        )
