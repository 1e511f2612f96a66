"""python -m benchmarks [--memory] [--sizes] [--no-speed] ...: run, print, write JSON."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import tempfile
from pathlib import Path

from benchmarks import (
    bounded,
    chunks,
    coldstart,
    feed,
    memory,
    requests,
    retrieval,
    reuse,
    sizes,
    sparse,
    speed,
    storage,
    store_scale,
    verify,
)
from benchmarks.common import DEFAULT_CORPUS, REPO, machine, say


def main() -> None:
    args = _parse()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from etl.stages.compute.device import default_threads

    threads = args.threads or default_threads()
    torch.set_num_threads(threads)
    report: dict = {"date": dt.date.today().isoformat(), "machine": machine(threads)}
    work = Path(tempfile.mkdtemp(prefix="embed-etl-bench-"))
    if not args.no_speed:
        speed.measure(args, report, work)
        speed.show(report)
    if not args.no_cold_start:
        report["cold_start"] = coldstart.measure(args, work)
        coldstart.show(report["cold_start"])
    if args.memory:
        report["memory"] = memory.measure(args, work)
        memory.show(report["memory"])
    if args.sizes:
        report["sizes"] = sizes.measure(args, work)
        sizes.show(report["sizes"])
    if args.storage:
        report["storage"] = storage.measure(args, work)
        storage.show(report["storage"])
    if args.verify:
        report["verify"] = verify.measure(args, work)
        verify.show(report["verify"])
    if args.reuse:
        report["reuse"] = reuse.measure(args, work)
        reuse.show(report["reuse"])
    if args.feed:
        report["feed"] = feed.measure(args, work)
        feed.show(report["feed"])
    if args.feed_full_rows:
        report["full_model"] = feed.full_model(args, work)
        print(f"\nthe whole model, float32, this revision against {args.feed_baseline}:")
        print(json.dumps(report["full_model"], indent=1))
    if args.sparse:
        report["sparse"] = sparse.measure(args, work)
        sparse.show(report["sparse"])
    if args.small_shards:
        report["small_shards"] = reuse.measure_small_shards(args, work)
        reuse.show_small_shards(report["small_shards"])
    if args.reuse_memory:
        report["reuse_memory"] = reuse.measure_memory(args, work)
        reuse.show_memory(report["reuse_memory"])
    if args.requests:
        report["requests"] = requests.measure(args, work)
        requests.show(report["requests"])
    if args.store_scale:
        report["store_scale"] = store_scale.measure(args, work)
        store_scale.show(report["store_scale"])
    if args.bounded:
        report["bounded"] = bounded.measure(args, work)
        bounded.show(report["bounded"])
    if args.chunks:
        report["chunks"] = chunks.measure(args, work)
        chunks.show(report["chunks"])
    if args.retrieval:
        report["retrieval"] = retrieval.measure(args, work)
        retrieval.show(report["retrieval"], args.retrieval_out)
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    for path in (args.out / f"bench-{stamp}.json", args.out / "latest.json"):
        path.write_text(json.dumps(report, indent=1))
    say(f"figures written to {args.out / 'latest.json'}")


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument(
        "--corpus", type=Path, default=Path(os.environ.get("EMBED_ETL_CORPUS", DEFAULT_CORPUS))
    )
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=1, help="medians over this many runs")
    parser.add_argument("--seed-rows", type=int, default=600, help="subset for the seed loop")
    parser.add_argument("--sweep-rows", type=int, default=2000, help="subset for ST batch sweep")
    parser.add_argument("--st-batch-sizes", default="2,4,8,16,32,64,128")
    parser.add_argument("--fast-dtype", default="bfloat16", help="dtype of the fast mode")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--memory", action="store_true", help="also the flat-memory runs (slow)")
    parser.add_argument(
        "--bounded",
        action="store_true",
        help="also peak RSS with a 256 MiB text and with 10^7 three-token rows (slow)",
    )
    bounded.add_arguments(parser)
    chunks.add_arguments(parser)
    retrieval.add_arguments(parser)
    parser.add_argument("--memory-small", type=int, default=10_000)
    parser.add_argument("--memory-dtype", default="float32", help="compute dtype of memory runs")
    parser.add_argument("--no-speed", action="store_true", help="skip the speed runs")
    parser.add_argument(
        "--sizes", action="store_true", help="also the output size of one shard per --output-dtype"
    )
    parser.add_argument(
        "--storage", action="store_true", help="also local disk against a local S3 server (moto)"
    )
    parser.add_argument("--storage-rows", type=int, default=4000)
    parser.add_argument("--big-shard-mb", type=int, default=1024, help="for the memory of reads")
    parser.add_argument("--verify", action="store_true", help="also embed-etl verify's cost")
    parser.add_argument("--verify-output", default=None, help="an output of the corpus to reuse")
    parser.add_argument(
        "--reuse", action="store_true", help="also repeats, a re-export, and no repeats (reuse)"
    )
    parser.add_argument("--reuse-distinct", type=int, default=10_000)
    parser.add_argument("--reuse-overhead-rows", type=int, default=10_000)
    parser.add_argument(
        "--small-shards",
        type=int,
        default=0,
        metavar="N",
        help="also N and 4N small shards with the store and without: the marginal cost a shard",
    )
    parser.add_argument("--small-shard-rows", type=int, default=4)
    parser.add_argument(
        "--reuse-memory", action="store_true", help="also peak RSS with a store 10x larger"
    )
    parser.add_argument("--reuse-memory-rows", type=int, default=100_000)
    parser.add_argument(
        "--feed", action="store_true", help="also the host side alone (stand-in encoder, layer 0)"
    )
    parser.add_argument("--feed-rows", type=int, default=50_000)
    parser.add_argument(
        "--feed-min-chars", type=int, default=150, help="--feed: rows of at least this many chars"
    )
    parser.add_argument(
        "--sparse", action="store_true", help="also a sparse model against the dense default"
    )
    parser.add_argument("--sparse-rows", type=int, default=2000)
    parser.add_argument("--feed-rows-small", type=int, default=10_000)
    parser.add_argument("--feed-repeats", type=int, default=3, help="median of, per run")
    parser.add_argument(
        "--feed-baseline", default=None, help="also measure the etl package of this git revision"
    )
    parser.add_argument(
        "--feed-full-rows",
        type=int,
        default=0,
        help="also the whole model on this many rows against --feed-baseline (medians)",
    )
    parser.add_argument(
        "--requests",
        action="store_true",
        help="also S3 requests per shard: one worker, 8 local workers, 4 Ray actors (counts)",
    )
    parser.add_argument("--requests-shards", type=int, default=2000)
    parser.add_argument("--requests-rows", type=int, default=4, help="rows per tiny shard")
    parser.add_argument(
        "--requests-ray-shards", type=int, default=2000, help="the first N shards, for Ray"
    )
    parser.add_argument(
        "--requests-store", action="store_true", help="the requests also with the vector store"
    )
    parser.add_argument(
        "--store-scale",
        action="store_true",
        help="also the vector store at 10^3-10^5 segments and 10^6-10^8 texts, local and S3",
    )
    parser.add_argument("--store-scale-sizes", default="1e6,1e7,1e8", help="texts, by-texts stores")
    parser.add_argument(
        "--store-scale-segments", default="1e3,1e4,1e5", help="segments of 10^6 texts in all"
    )
    parser.add_argument("--store-scale-blocks", type=int, default=5, help="blocks per store")
    parser.add_argument(
        "--store-scale-s3-max", default="1e8", help="the largest by-texts store sent to S3"
    )
    parser.add_argument(
        "--store-scale-s3-segments-max",
        default="1e4",
        help="the most segments of a by-segments store sent to S3 (moto: ~200 requests/s)",
    )
    parser.add_argument(
        "--no-cold-start", action="store_true", help="skip the one-row job beside the ST script"
    )
    parser.add_argument("--cold-repeats", type=int, default=5)
    parser.add_argument("--device", default=None, help="for the cold start (default: auto)")
    parser.add_argument("--job-args", default="", help="extra JobConfig options: key=value ...")
    parser.add_argument("--out", type=Path, default=REPO / "bench-results")
    args = parser.parse_args()
    if not args.corpus.is_dir():
        parser.error(f"--corpus {args.corpus}: not a directory (set EMBED_ETL_CORPUS)")
    return args


if __name__ == "__main__":
    main()
