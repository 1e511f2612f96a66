"""Retrieval with passages, naive against late chunking: `python -m benchmarks.retrieval`.

Also `make bench ARGS="--no-speed --no-cold-start --retrieval"` (options --retrieval-*).

Documents: --paragraphs consecutive corpus paragraphs of one shard (a non-overlapping group,
drawn with --seed), joined with a blank line. Queries, one a document: a paragraph of at least
two sentences (split after . ! ? before a capital, quote, backtick or parenthesis) that has a
sentence of >= 8 words; one such sentence is taken out of the document text and is the query,
the paragraph's other sentences stay, joined by spaces (a group where the sentence is still
found in the document is skipped). The answer: every passage of that document overlapping the
paragraph's remaining span [start, end) (chunk_start < end and chunk_end > start). The index is
every passage of every document; the score is the cosine. recall@k: the share of queries with an
answer passage among the k best; MRR@10: 1 / the rank of the first one (0 past 10). Both modes
cut the same passages (--chunk-tokens, each size in turn) with `embed-etl run --chunking
naive|late`. The queries are one job of their own (one row each, no
--chunk-tokens), same model and --max-length. Seconds: the wall time of each `embed-etl run`,
start-up and model load included.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from benchmarks.common import DEFAULT_CORPUS, REPO, machine, say

SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'`(])")
MIN_QUERY_WORDS = 8


def measure(args: argparse.Namespace, work: Path) -> dict:
    docs, queries, spans, corpus = _documents(args)
    sizes = [int(n) for n in str(args.retrieval_chunk_tokens).split(",")]
    for name, texts in (("docs", docs), ("queries", queries)):
        (work / name).mkdir(parents=True, exist_ok=True)
        table = pa.table({"id": pa.array(range(len(texts)), pa.int64()), "text": texts})
        pq.write_table(table, work / name / "part.parquet")
    query_s, _ = _job(args, work / "queries", work / "out-queries")
    qvec = _vectors(_read(work / "out-queries").sort_by("id"))  # (Q, D)
    report = {
        "date": dt.date.today().isoformat(),
        "machine": machine(_threads(args)),
        "corpus": corpus,
        "docs": len(docs),
        "paragraphs": args.retrieval_paragraphs,
        "seed": args.retrieval_seed,
        "max_length": args.retrieval_max_length,
        "queries_seconds": round(query_s, 1),
        "runs": [],
    }
    for tokens in sizes:
        cuts = {}
        for mode in ("naive", "late"):
            out = work / f"out-{mode}-{tokens}"
            ran = _job(args, work / "docs", out, "--chunk-tokens", str(tokens), "--chunking", mode)
            table = _read(out).sort_by([("id", "ascending"), ("chunk", "ascending")])
            run = {"chunk_tokens": tokens, "mode": mode}
            run |= _scores(qvec, table, spans)
            run |= {"seconds": round(ran[0], 1), "job_seconds": ran[1]["seconds"]}
            report["runs"].append(run)
            report.setdefault("doc_tokens", _doc_tokens(table, args.retrieval_max_length))
            cuts[mode] = table.select(["id", "chunk_start", "chunk_end"])
            say(f"retrieval {run['mode']} --chunk-tokens {tokens}: {json.dumps(run)}")
        if len(cuts) == 2 and not cuts["late"].equals(cuts["naive"]):
            report["runs"][-1]["note"] = "late cut other passages than naive"
    return report


def _documents(args: argparse.Namespace) -> tuple[list[str], list[str], list[tuple], str]:
    """Documents, their held-out queries and answer spans (doc, start, end), and the slice."""
    k, n = args.retrieval_paragraphs, args.retrieval_docs
    paths = sorted(Path(args.corpus).glob("*.parquet"))
    rows = [pq.ParquetFile(p).metadata.num_rows for p in paths]
    groups = [(s, start) for s, r in enumerate(rows) for start in range(0, r - k + 1, k)]
    rng = random.Random(args.retrieval_seed)
    rng.shuffle(groups)
    texts: dict[int, list[str]] = {}
    docs, queries, spans, shards = [], [], [], set()
    for shard, start in groups:
        if len(docs) == n:
            break
        if shard not in texts:
            texts[shard] = pq.read_table(paths[shard], columns=["text"]).column(0).to_pylist()
        paras = [p or "" for p in texts[shard][start : start + k]]
        split = [SENTENCE_END.split(p.strip()) for p in paras]
        long = [[j for j, x in enumerate(s) if len(x.split()) >= MIN_QUERY_WORDS] for s in split]
        fit = [i for i, s in enumerate(split) if len(s) >= 2 and long[i]]
        if not fit:
            continue
        i = rng.choice(fit)
        q = rng.choice(long[i])
        paras[i] = " ".join(s for j, s in enumerate(split[i]) if j != q)
        begin, doc = sum(len(p) + 2 for p in paras[:i]), "\n\n".join(paras)
        if split[i][q] in doc:  # the sentence is repeated: it would be found verbatim
            continue
        docs.append(doc)
        queries.append(split[i][q])
        spans.append((len(docs) - 1, begin, begin + len(paras[i])))
        shards.add(shard)
    if len(docs) < n:
        raise SystemExit(f"--docs {n}: only {len(docs)} groups of {k} paragraphs have a query")
    corpus = (
        f"{args.corpus}: {len(docs)} groups of {k} consecutive paragraphs (seed "
        f"{args.retrieval_seed}, of {len(groups):,} groups in {len(paths)} shards, "
        f"{sum(rows):,} paragraphs), from shards {','.join(map(str, sorted(shards)))}"
    )
    return docs, queries, spans, corpus


def _job(args: argparse.Namespace, src: Path, out: Path, *extra: str) -> tuple[float, dict]:
    """`embed-etl run` in a process of its own: (wall seconds, summary); a failure raises with
    the job's own message."""
    cmd = [sys.executable, "-m", "jobs.cli", "run", str(src), "--output", str(out)]
    cmd += ["--max-length", str(args.retrieval_max_length), "--threads", str(_threads(args))]
    cmd += ["--no-reuse", "--no-progress", *extra]
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: exit {done.returncode}: {done.stderr[-2000:]}")
    return seconds, json.loads(done.stdout.strip().splitlines()[-1])


def _read(out: Path) -> pa.Table:
    """Every Parquet file a job wrote, with the first one's metadata (it names the columns)."""
    files = sorted(out.glob("*.parquet"))
    table = pa.concat_tables(pq.read_table(f) for f in files)
    return table.replace_schema_metadata(pq.read_schema(files[0]).metadata)


def _vectors(table: pa.Table) -> np.ndarray:
    """The output's vector column (the first the job's metadata names), unit length: (N, D)."""
    name = json.loads(table.schema.metadata[b"embed_etl.columns"])[0]["name"]
    column = table.column(name).combine_chunks()
    vectors = column.flatten().to_numpy(zero_copy_only=False).reshape(len(column), -1)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def _scores(qvec: np.ndarray, passages: pa.Table, spans: list[tuple]) -> dict:
    pvec = _vectors(passages)  # (N, D)
    doc = passages.column("id").to_numpy()  # (N,)
    lo = passages.column("chunk_start").to_numpy()
    hi = passages.column("chunk_end").to_numpy()
    want = np.array(spans)  # (Q, 3): doc, start, end of the answer
    answer = (
        (doc[None, :] == want[:, :1]) & (lo[None, :] < want[:, 2:]) & (hi[None, :] > want[:, 1:2])
    )  # (Q, N)
    sims = qvec @ pvec.T  # (Q, N)
    top = np.argsort(-sims, axis=1, kind="stable")[:, :10]  # (Q, 10)
    hits = np.take_along_axis(answer, top, axis=1)  # (Q, 10)
    found = hits.any(axis=1)
    rank = hits.argmax(axis=1) + 1
    return {
        "passages": len(doc),
        "answer_passages_mean": round(float(answer.sum(1).mean()), 2),
        "recall_at_1": round(float(hits[:, 0].mean()), 3),
        "recall_at_10": round(float(found.mean()), 3),
        "mrr_at_10": round(float(np.where(found, 1 / rank, 0).mean()), 3),
    }


def _doc_tokens(passages: pa.Table, max_length: int) -> dict:
    """Tokens a document, from its passages' counts less their [CLS] and [SEP] (approximate)."""
    doc = passages.column("id").to_numpy()
    per = np.bincount(doc, weights=passages.column("n_tokens").to_numpy() - 2) + 2
    return {"mean": int(per.mean()), "max": int(per.max()), "over": int((per > max_length).sum())}


def _threads(args: argparse.Namespace) -> int:
    from etl.stages.compute.device import default_threads

    return args.threads or default_threads()


def markdown(report: dict) -> str:
    m, t = report["machine"], report.get("doc_tokens", {})
    lines = [
        f"\n### Retrieval, naive against late chunking ({report['date']})\n",
        f"{m['cpu']} ({', '.join(m['cpu_flags']) or 'no AVX2/AVX-512 flags'}), {m['cores']} "
        f"cores, {m['threads']} threads, torch {m['torch']}; the default model, float32.",
        f"Corpus: {report['corpus']}. {report['docs']} documents, {report['docs']} queries.",
        f"--max-length {report['max_length']}: documents of ~{t.get('mean')} tokens, at most "
        f"~{t.get('max')}, {t.get('over')} over {report['max_length']} (late chunking runs those "
        f"in overlapping windows). Queries: {report['queries_seconds']} s.",
        "Answer: any passage overlapping the rest of the query's paragraph; index: all passages"
        " of all documents; recall@k: an answer among the k best. Seconds: each whole run.\n",
        "| --chunk-tokens | mode | passages | answers/query | recall@1 | recall@10 | MRR@10 "
        "| seconds |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in report["runs"]:
        lines.append(
            f"| {r['chunk_tokens']} | {r['mode']} | {r['passages']:,} | "
            f"{r['answer_passages_mean']} | {r['recall_at_1']:.3f} | {r['recall_at_10']:.3f} | "
            f"{r['mrr_at_10']:.3f} | {r['seconds']} |" + (f" {r['note']}" if "note" in r else "")
        )
    return "\n".join(lines) + "\n"


def show(report: dict, out: Path | None = None) -> None:
    print(text := markdown(report))
    if out is not None:
        with open(out, "a", encoding="utf-8") as f:
            f.write(text)


def add_arguments(parser: argparse.ArgumentParser, prefix: str = "retrieval-") -> None:
    """The options, --retrieval-* inside `python -m benchmarks`, bare when run on its own."""
    if prefix:
        parser.add_argument("--retrieval", action="store_true", help="also naive vs late recall")

    def add(name: str, **kw: object) -> None:
        dest = "retrieval_" + name.replace("-", "_")
        parser.add_argument(f"--{prefix}{name}", dest=dest, metavar=name.upper(), **kw)

    add("docs", type=int, default=300, help="documents, a query each")
    add("paragraphs", type=int, default=8, help="consecutive paragraphs a document")
    add("chunk-tokens", default="64,128", help="passage sizes, comma-separated, in turn")
    add("seed", type=int, default=0)
    add("max-length", type=int, default=512, help="the model's 512: a document in one pass")
    add("out", type=Path, default=None, help="a Markdown file to append the table to")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.retrieval", description=__doc__)
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    env = os.environ.get("EMBED_ETL_CORPUS", DEFAULT_CORPUS)
    parser.add_argument("--corpus", type=Path, default=Path(env))
    parser.add_argument("--threads", type=int, default=None, help="[default: every core]")
    add_arguments(parser, prefix="")
    args = parser.parse_args()
    if not args.corpus.is_dir():
        parser.error(f"--corpus {args.corpus}: not a directory (set EMBED_ETL_CORPUS)")
    with tempfile.TemporaryDirectory(prefix="embed-etl-retrieval-") as work:
        show(measure(args, Path(work)), args.retrieval_out)


if __name__ == "__main__":
    main()
