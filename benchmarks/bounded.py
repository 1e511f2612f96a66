"""Memory bounded by the job, not by its data: peak RSS of one shard with a 256 MiB text among
ordinary rows, and of one shard of 10^7 three-token rows in a single row group, against an
ordinary 100,000-row shard. Every run: the default model, --layer 0 (the embedding layer: the
model costs almost nothing, so the host side is what is measured), the vector store on, one
shard, as users run it (`embed-etl run` in a process of its own, sampled by benchmarks.memory).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from benchmarks.common import corpus_rows, say
from benchmarks.memory import peak_rss


def measure(args: argparse.Namespace, work: Path) -> dict:
    ordinary = corpus_rows(args.corpus, args.bounded_rows)
    texts = ordinary.column("text").combine_chunks()
    cases = {
        "ordinary": lambda path: _write(path, texts),
        "huge_text": lambda path: _write(path, _with_huge(texts, args.huge_text_mb << 20)),
        "tiny_rows": lambda path: _write(path, _three_tokens(args.tiny_rows), one_group=True),
    }
    result: dict = {"rows": args.bounded_rows, "huge_text_mb": args.huge_text_mb}
    for name in args.bounded_cases.split(","):
        shard = work / f"bounded-{name}" / "part-00000.parquet"
        shard.parent.mkdir(parents=True)
        cases[name](shard)
        out = work / f"bounded-out-{name}"
        flags = ["--layer", "0", "--output-dtype", "binary", "--no-progress"]
        peak, summary = peak_rss(["run", str(shard.parent), "-o", str(out), *flags])
        result[name] = {
            "rows": summary["rows"],
            "refused_rows": summary.get("refused_rows", 0),
            "seconds": summary["seconds"],
            "peak_rss_mb": round(peak / 2**20, 1),
            "input_mb": round(shard.stat().st_size / 2**20, 1),
        }
        say(f"bounded {name}: {result[name]}")
    base = result.get("ordinary", {}).get("peak_rss_mb")
    for name in ("huge_text", "tiny_rows"):
        if base and name in result:
            result[name]["ratio"] = round(result[name]["peak_rss_mb"] / base, 3)
    return result


def _write(path: Path, texts: pa.Array, one_group: bool = False) -> None:
    table = pa.table({"id": pa.array(np.arange(len(texts), dtype=np.int64)), "text": texts})
    pq.write_table(table, path, row_group_size=len(texts) if one_group else 1 << 20)


def _with_huge(texts: pa.Array, size: int) -> pa.Array:
    """The ordinary rows with one text of ``size`` bytes (real paragraphs over and over) in the
    middle."""
    corpus = "\n\n".join(t for t in texts.to_pylist()[:2000] if t)
    huge = (corpus * (size // len(corpus.encode()) + 1)).encode()[:size].decode(errors="ignore")
    middle = len(texts) // 2
    values = texts.to_pylist()
    return pa.array([*values[:middle], huge, *values[middle:]], pa.large_string())


def _three_tokens(rows: int) -> pa.Array:
    """``rows`` distinct texts of three words each, every word one token of the default
    model's vocabulary."""
    from etl.model.locate import default_model_path

    vocab = (default_model_path() / "vocab.txt").read_text().split("\n")
    words = np.array([w for w in vocab if w.isalpha() and w.isascii() and len(w) > 3][:1000])
    n = np.arange(rows)
    parts = [words[n % 1000], words[(n // 1000) % 1000], words[(n // 1000_000) % 1000]]
    return pa.array(np.char.add(np.char.add(np.char.add(parts[0], " "), parts[1] + " "), parts[2]))


def show(m: dict) -> None:
    for name in ("ordinary", "huge_text", "tiny_rows"):
        if name in m:
            r = m[name]
            ratio = f", {r['ratio']}x the ordinary shard" if "ratio" in r else ""
            print(
                f"bounded memory, {name}: {r['rows']:,} rows ({r['input_mb']} MB of Parquet), "
                f"peak RSS {r['peak_rss_mb']} MB{ratio}; {r['seconds']} s"
            )


def main() -> None:
    from benchmarks.common import DEFAULT_CORPUS

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        show(measure(args, Path(tmp)))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bounded-rows", type=int, default=100_000)
    parser.add_argument("--huge-text-mb", type=int, default=256)
    parser.add_argument("--tiny-rows", type=int, default=10_000_000)
    parser.add_argument("--bounded-cases", default="ordinary,huge_text,tiny_rows")


if __name__ == "__main__":
    main()
