"""The vector store at scale: a block's cost from 10^3 to 10^5 segments, 10^6 to 10^8 texts.

`make bench ARGS="--no-speed --no-cold-start --store-scale"`. Synthetic stores, no model: text
number i has a hash and a record computed from i alone (so any worker can check what it reads),
40-byte records (4 float32 dims: the vector bytes of 8 float16 ones), written straight to disk.

  segments   10^6 texts in --store-scale-segments segments (10^3, 10^4, 10^5: 1000, 100, 10
             texts each), named as a job leaves them before compaction: add entries of 1,000
             segments each, hashes inline (a reader opens no segment to learn them); then the
             same store after `compact(grace=0)`, timed, as its own rows
  texts      --store-scale-sizes texts (10^6, 10^7, 10^8) in segments of 2^17 records (what
             compaction's 256 MiB segments hold of the default model's 1,560-byte records: 763
             segments at 10^8), named by one checkpoint and the hint: a reader reads each
             segment's own index

Each store is measured on local disk and on the S3 test server (moto on 127.0.0.1, counting
requests by kind), each in a fresh worker process: start-up (the first find, which loads the
index) apart, then --store-scale-blocks blocks of 65,536 sorted hashes, half stored and half
never stored: find + fetch timed (median), bytes read, requests, and the worker's peak RSS
(VmHWM: a child's ru_maxrss starts from its parent's peak). The stored half is a stretch of
records in journal order, as a re-export holds yesterday's texts; locally also a "scattered"
half drawn from the whole store, the worst case (every hit its own range). Every block is
checked: each stored text served with the record written (but those a namesake hides, which
are counted), no never-stored one served.

Requests per block = the runs of records served (a segment's records no more than a range gap
apart read as one: Storage.range_gap) + at most 1 journal poll (every POLL_SECONDS) + reads of
40-bit namesakes outside those runs (the memory index keeps 40 bits of a hash; the record's own
hash then refuses the text): never-stored texts whose key a stored one shares (32,768 x n /
2^40 a block: 3 at 10^8 texts) and stored texts whose key an earlier stored one shares (the
index finds that one, so they are never served: 32,768 x n / 2^41, 1.5 at 10^8). The table
shows the runs, the most requests a block made beyond them, and both kinds of namesake.

Local figures read the page cache (each store was just written; this machine's RAM holds the
largest). On S3, moto serves a ranged GET by reading the whole object, so its time per block
grows with the segment's size (5 MB here); a real S3 does not.
--store-scale-s3-max (texts) and --store-scale-s3-segments-max cap what is sent to the S3
server: moto answers about 200 small PUTs a second here, so 10^5 segments take 8 minutes to
upload and their compaction 10 more (it reads each segment), which is why the default stops at
10^4 segments; the local rows show the same counts.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.common import REPO, say
from benchmarks.requests import CountingS3
from etl.reuse.compact import compact
from etl.reuse.hashing import HASH_DTYPE
from etl.reuse.journal import Journal, StoredFile, add_entry, checkpoint_entry
from etl.reuse.lookup import Found, Lookup
from etl.reuse.records import Layout
from etl.reuse.segment import trailer
from etl.reuse.store import VectorStore
from etl.storage import Storage, open_storage

RECIPE = "store-scale"
LAYOUT = Layout(columns=(("emb", 4),), recipe=RECIPE)  # 40-byte records
RUN = "built"
BLOCK_STORED = 32_768  # of a block of 65,536 hashes; the other half never stored
NEVER = 1 << 39  # text numbers from here on are never stored
# Records per segment of the by-texts stores: as many as compaction's 256 MiB segments hold of
# all-MiniLM-L6-v2's 1,560-byte records, so that a store of n texts has as many segments.
SEGMENT_ROWS = 1 << 17
PER_ENTRY = 1000  # segments per journal entry of the by-segments stores
CHUNK = 1 << 20  # records built at a time
SEGMENT_TEXTS = 10**6
BUCKET = "scale"
BIG_OBJECT = 8 << 20  # sent to S3 as a multipart upload
RSS_LIMIT_MB = 1536
GROWTH_LIMIT = 2.0
SEGMENTS, COMPACTED, TEXTS = "segments", "segments, compacted", "texts"
STRETCH, SCATTERED = "stretch", "scattered"


@dataclass(frozen=True)
class Spec:
    """One synthetic store."""

    family: str  # SEGMENTS or TEXTS
    texts: int
    segments: int

    @property
    def name(self) -> str:
        return f"{self.family}-{self.texts}-{self.segments}"

    @property
    def per(self) -> int:
        """Texts per segment (the last may hold fewer)."""
        return -(-self.texts // self.segments)


def measure(args: argparse.Namespace, work: Path) -> dict:
    blocks, s3_max = args.store_scale_blocks, _number(args.store_scale_s3_max)
    s3_segments = _number(args.store_scale_s3_segments_max)
    specs = [Spec(SEGMENTS, SEGMENT_TEXTS, n) for n in _numbers(args.store_scale_segments)]
    specs += [Spec(TEXTS, n, -(-n // SEGMENT_ROWS)) for n in _numbers(args.store_scale_sizes)]
    rows: list[dict] = []
    for spec in specs:
        root = work / f"store-scale-{spec.name}"
        started = time.perf_counter()
        _build(spec, root)
        made = {"local": time.perf_counter() - started}
        say(f"store scale: {spec.name} built in {made['local']:.1f} s")
        places = [("local", str(root), None)]
        on_s3 = spec.segments <= s3_segments if spec.family == SEGMENTS else spec.texts <= s3_max
        server = CountingS3() if on_s3 else None
        try:
            if server is not None:
                started = time.perf_counter()
                _upload(root, server, spec.name)
                made["s3"] = time.perf_counter() - started
                say(f"store scale: {spec.name} sent to the S3 server in {made['s3']:.1f} s")
                places.append(("s3", f"s3://{BUCKET}/{spec.name}", server))
            for where, uri, counting in places:
                rows += _rows(spec, spec.family, where, uri, counting, blocks, made[where])
            if spec.family == SEGMENTS:
                for where, uri, counting in places:
                    done = _child({"mode": "compact", "uri": uri}, counting)
                    say(f"store scale: {spec.name} on {where} compacted in {done['seconds']} s")
                    compacted = _rows(
                        spec, COMPACTED, where, uri, counting, blocks, done["seconds"]
                    )
                    rows += [{**row, "compaction": done} for row in compacted]
        finally:
            if server is not None:
                server.stop()
            shutil.rmtree(root, ignore_errors=True)
    limits = {"s3_max_texts": s3_max, "s3_max_segments": s3_segments}
    return {"rows": rows, "growth": _growth(rows), "blocks": blocks, **limits}


def _rows(
    spec: Spec,
    family: str,
    where: str,
    uri: str,
    counting: CountingS3 | None,
    blocks: int,
    made: float,
) -> list[dict]:
    """One worker on one store: a row per kind of block."""
    variants = [STRETCH, SCATTERED] if where == "local" else [STRETCH]
    job = {"mode": "measure", "uri": uri, "blocks": blocks, "variants": variants}
    job.update(texts=spec.texts, per=spec.per)
    done = _child(job, counting)
    found = []
    for variant in variants:
        row = {"store": family, "where": where, "texts": spec.texts, "variant": variant}
        row.update(segments=spec.segments if family != COMPACTED else 1, made_s=round(made, 1))
        row["source_segments"] = spec.segments  # before compaction
        row.update(done["startup"], **done[variant], rss_mb=done["rss_mb"])
        found.append(row)
        say(
            f"store scale: {family} {spec.texts:,} texts, {row['segments']:,} segments, "
            f"{where}, {variant}: start-up {row['startup_s']} s, block "
            f"{row['block_ms']} ms, {row['bytes']:,} bytes, {row['requests']}, "
            f"runs {row['runs']}, peak RSS {row['rss_mb']} MB"
        )
    return found


def _child(job: dict, counting: CountingS3 | None) -> dict:
    """Run ``job`` in a fresh worker process (with the S3 server's address, if any)."""
    env = dict(os.environ)
    if counting is not None:
        env.update(counting.env)
    code = "from benchmarks.store_scale import worker; worker()"
    done = subprocess.run(
        [sys.executable, "-c", code],
        input=json.dumps(job),
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"store scale worker failed ({done.returncode}) on {job['uri']}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# The synthetic store: text number i -> its hash and its record.


def hashes_of(numbers: np.ndarray) -> np.ndarray:
    """(k,) text numbers -> (k,) hashes: splitmix64 of the number and of that (a bijection of
    the number in the first 8 bytes, so distinct numbers never share a hash)."""
    first = _mix(np.asarray(numbers, np.uint64))
    second = _mix(first ^ np.uint64(0x5851F42D4C957F2D))
    return np.stack([first, second], 1).view(HASH_DTYPE)[:, 0]  # (k, 2) u64 -> (k,) V16


def records_of(numbers: np.ndarray) -> np.ndarray:
    """(k,) text numbers -> (k, R) records, each with a valid checksum."""
    numbers = np.asarray(numbers, np.int64)
    vectors = (numbers[:, None] * np.array([1, 3, 5, 7]) % 1_000_003).astype(np.float32) / 1e3
    n_tokens = (numbers % 509 + 1).astype(np.int32)
    return LAYOUT.pack(hashes_of(numbers), n_tokens, {"emb": vectors})  # (k, 40)


def _mix(x: np.ndarray) -> np.ndarray:
    z = x + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def _build(spec: Spec, root: Path) -> None:
    """Write the store's files straight to ``root`` (faster than the storage API)."""
    storage = open_storage(root)
    store = VectorStore(storage, LAYOUT, RECIPE)
    store.create({"benchmark": "store-scale"})
    (root / "segments").mkdir(parents=True)
    (root / "log").mkdir()
    now, files, seq = time.time(), [], 0
    for s in range(spec.segments):
        first = s * spec.per
        rows = min(spec.per, spec.texts - first)
        name = f"{'s' if spec.family == SEGMENTS else 'c'}{s:07d}"
        path = root / store.segment_key(name)
        with open(path, "wb") as handle:
            for start in range(first, first + rows, CHUNK):
                numbers = np.arange(start, min(start + CHUNK, first + rows))
                handle.write(records_of(numbers).tobytes())
            hashes = hashes_of(np.arange(first, first + rows))
            handle.write(trailer(rows, LAYOUT, RECIPE, RUN, hashes, now))
        if spec.family == TEXTS:
            files.append(StoredFile(name, rows, path.stat().st_size, "", now))
            continue
        files.append(StoredFile(name, rows, path.stat().st_size, RUN, now, hashes=hashes))
        if len(files) == PER_ENTRY or s == spec.segments - 1:
            entry = add_entry(RUN, "w0", files, np.zeros(0, HASH_DTYPE))
            (root / Journal.key(seq)).write_bytes(entry.encode())
            files, seq = [], seq + 1
    if spec.family == TEXTS:
        (root / Journal.key(0)).write_bytes(checkpoint_entry(files, [], -1).encode())
        Journal(storage).set_hint(0)


def _upload(root: Path, server: CountingS3, prefix: str) -> None:
    """Every file of the local store to s3://BUCKET/prefix/ (threads; big ones multipart)."""
    import boto3
    from boto3.s3.transfer import TransferConfig
    from botocore.config import Config

    env = server.env
    client = boto3.client(
        "s3",
        endpoint_url=env["AWS_ENDPOINT_URL"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name=env["AWS_DEFAULT_REGION"],
        config=Config(max_pool_connections=32),
    )
    client.create_bucket(Bucket=BUCKET)
    big = TransferConfig(multipart_threshold=BIG_OBJECT, multipart_chunksize=64 << 20)

    def send(path: Path) -> None:
        key = f"{prefix}/{path.relative_to(root).as_posix()}"
        if path.stat().st_size > BIG_OBJECT:
            client.upload_file(str(path), BUCKET, key, Config=big)
        else:
            client.put_object(Bucket=BUCKET, Key=key, Body=path.read_bytes())

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(send, sorted(p for p in root.rglob("*") if p.is_file())))


# The worker: one process per store, its figures as one JSON line on stdout.


def worker() -> None:
    job = json.loads(sys.stdin.read())
    storage = open_storage(job["uri"])
    counter = _Counter(storage)
    server = os.environ.get("AWS_ENDPOINT_URL") if job["uri"].startswith("s3://") else None
    store = VectorStore(storage, LAYOUT, RECIPE)
    if job["mode"] == "compact":
        result = _compact(store, counter, server)
    else:
        result = _blocks(job, store, counter, server)
    result["rss_mb"] = _peak_rss_mb()
    print(json.dumps(result), flush=True)


def _compact(store: VectorStore, counter: _Counter, server: str | None) -> dict:
    _reset(counter, server)
    started = time.perf_counter()
    report = compact(store, grace=0)
    seconds = time.perf_counter() - started
    if report.raced or report.written != 1 or report.damaged or report.unreadable:
        raise RuntimeError(f"compaction did not leave one whole segment: {report.to_dict()}")
    return {
        "seconds": round(seconds, 1),
        "merged": report.merged,
        "records": report.records,
        "requests": _requests(counter, server),
    }


def _blocks(job: dict, store: VectorStore, counter: _Counter, server: str | None) -> dict:
    texts, blocks = job["texts"], job["blocks"]
    lookup = Lookup((store,), run="bench")
    gap = store.storage.range_gap
    _reset(counter, server)
    numbers, hashes = _block(_stretch(texts, job["per"], blocks, 0), 0)
    started = time.perf_counter()
    found = lookup.find(hashes)
    startup = time.perf_counter() - started
    result = {
        "startup": {
            "startup_s": round(startup, 2),
            "startup_bytes": counter.bytes,
            "startup_requests": _requests(counter, server),
            "index_mb": round(lookup.index.nbytes / 2**20, 1),
        }
    }
    picks = np.flatnonzero(found.where >= 0)
    _check(lookup, numbers, found, *_fetch(lookup, found, picks, hashes))
    rng = np.random.default_rng(0)
    for variant in job["variants"]:
        _reset(counter, server)
        seconds, finds, sizes, extra, runs, namesakes, lost = [], [], [], [], [], 0, 0
        for b in range(1, blocks + 1):
            if variant == STRETCH:
                stored = _stretch(texts, job["per"], blocks, b)
            else:
                stored = np.sort(rng.choice(texts, BLOCK_STORED, replace=False))
            numbers, hashes = _block(stored, b)
            before, asked = counter.bytes, counter.asked
            started = time.perf_counter()
            found = lookup.find(hashes)
            middle = time.perf_counter()
            picks = np.flatnonzero(found.where >= 0)
            records, ok = _fetch(lookup, found, picks, hashes)
            seconds.append(time.perf_counter() - started)
            finds.append(middle - started)
            candidates, missed = _check(lookup, numbers, found, records, ok)
            namesakes, lost = namesakes + candidates, lost + missed
            sizes.append(counter.bytes - before)
            runs.append(_runs(found, picks[ok], gap))
            extra.append(counter.asked - asked - runs[-1])
        requests = _requests(counter, server)
        result[variant] = {
            "block_ms": round(1e3 * statistics.median(seconds), 1),
            "find_ms": round(1e3 * statistics.median(finds), 1),
            "blocks_ms": [round(1e3 * s, 1) for s in seconds],
            "bytes": round(statistics.mean(sizes)),
            "requests": {k: round(v / blocks, 1) for k, v in requests.items()},
            "runs": round(statistics.mean(runs), 1),
            "beyond_runs_max": max(extra),
            "namesakes": namesakes,
            "lost": lost,
        }
    return result


def _fetch(
    lookup: Lookup, found: Found, picks: np.ndarray, hashes: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Lookup.fetch, which skips nothing here: the worker's cost of a text is unknown."""
    records, ok, skipped = lookup.fetch(found, picks, hashes[picks])
    if skipped.any():
        raise RuntimeError(f"{int(skipped.sum())} hits not fetched (embedding judged cheaper)")
    return records, ok


def _stretch(texts: int, per: int, blocks: int, b: int) -> np.ndarray:
    """Block b's stored half: BLOCK_STORED consecutive text numbers (journal order), from a
    segment's first record, blocks spread over the store."""
    start = (2 * b + 1) * texts // (2 * (blocks + 1)) - BLOCK_STORED // 2
    start = max(0, min(start, texts - BLOCK_STORED)) // per * per
    return np.arange(start, start + BLOCK_STORED)


def _block(stored: np.ndarray, b: int) -> tuple[np.ndarray, np.ndarray]:
    """The stored numbers and as many never stored, as (m,) numbers and (m,) sorted hashes."""
    numbers = np.concatenate([stored, NEVER + b * BLOCK_STORED + np.arange(BLOCK_STORED)])
    hashes = hashes_of(numbers)
    order = np.argsort(hashes)
    return numbers[order], hashes[order]


def _check(
    lookup: Lookup, numbers: np.ndarray, found: Found, records: np.ndarray, ok: np.ndarray
) -> tuple[int, int]:
    """Every stored text served with the record written, no never-stored one. Returns the
    never-stored texts that were candidates (a stored text shares their 40-bit index key) and
    the stored texts not served because the index points at an earlier stored text with their
    key (MemoryIndex keeps 40 bits; the record's own hash then refuses it): both counted, any
    other miss an error."""
    where, row = found.where, found.row
    picks = np.flatnonzero(where >= 0)
    stored = numbers < NEVER
    served = np.zeros(len(numbers), bool)
    served[picks[ok]] = True
    if (served & ~stored).any():
        raise RuntimeError(f"{int((served & ~stored).sum())} never-stored texts served")
    missed = np.flatnonzero(stored & ~served)
    if len(missed):
        files = lookup.index.files
        firsts = np.cumsum([0] + [f.rows for f in files])  # text numbers: journal order
        there = firsts[np.maximum(where[missed], 0)] + row[missed]
        ours, theirs = (_key40(hashes_of(n)) for n in (numbers[missed], there))
        shadowed = (where[missed] >= 0) & (ours == theirs) & (there != numbers[missed])
        if lookup.damaged or not shadowed.all():
            raise RuntimeError(f"{int((~shadowed).sum())} stored texts not served")
    if not np.array_equal(records[ok], records_of(numbers[picks[ok]])):
        raise RuntimeError("records served that differ from those written")
    return int((~stored[picks]).sum()), len(missed)


def _key40(hashes: np.ndarray) -> np.ndarray:
    """The 40 bits of a hash the memory index keeps (its first 5 bytes) as an integer."""
    raw = hashes.view(np.uint8).reshape(-1, 16)[:, :5].astype(np.uint64)
    return raw @ (np.uint64(1) << np.arange(0, 40, 8, dtype=np.uint64))


def _runs(found: Found, served: np.ndarray, gap: int) -> int:
    """The ranges the texts served make: a segment's records at most ``gap`` bytes apart read
    as one."""
    where, row = found.where[served], found.row[served]
    order = np.lexsort((row, where))
    where, row = where[order], row[order]
    breaks = (where[1:] != where[:-1]) | ((row[1:] - row[:-1] - 1) * LAYOUT.record_bytes > gap)
    return 1 + int(breaks.sum())


class _Counter:
    """The storage's reads counted as S3 would answer them: GET per object or range, HEAD per
    existence check; and the bytes read."""

    def __init__(self, storage: Storage) -> None:
        self.kinds: dict[str, int] = {}
        self.bytes = 0
        read, read_ranges, exists = storage.read, storage.read_ranges, storage.exists

        def counted_read(key: str) -> bytes | None:
            data = read(key)
            self._add("GET", 1, len(data or b""))
            return data

        def counted_ranges(key: str, ranges: list[tuple[int, int]]) -> list[bytes]:
            found = read_ranges(key, ranges)
            self._add("GET", len(ranges), sum(len(d) for d in found))
            return found

        def counted_exists(key: str) -> bool:
            self._add("HEAD", 1, 0)
            return exists(key)

        storage.read, storage.read_ranges = counted_read, counted_ranges  # type: ignore[method-assign]
        storage.exists = counted_exists  # type: ignore[method-assign]

    def _add(self, kind: str, count: int, size: int) -> None:
        self.kinds[kind] = self.kinds.get(kind, 0) + count
        self.bytes += size

    @property
    def asked(self) -> int:
        return sum(self.kinds.values())

    def reset(self) -> None:
        self.kinds, self.bytes = {}, 0


def _reset(counter: _Counter, server: str | None) -> None:
    counter.reset()
    if server is not None:
        request = urllib.request.Request(f"{server}/_counts", method="DELETE")
        urllib.request.urlopen(request, timeout=10).close()


def _requests(counter: _Counter, server: str | None) -> dict[str, int]:
    """Requests by kind since the last reset: the S3 server's own count, else the counter's."""
    if server is None:
        return dict(counter.kinds)
    with urllib.request.urlopen(f"{server}/_counts", timeout=10) as reply:
        return json.loads(reply.read())


def _peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


# The report.


def _growth(rows: list[dict]) -> list[dict]:
    """Largest over smallest store, per store kind, place and block: time and bytes a block."""
    groups: dict[tuple[str, str, str], list[dict]] = {}
    for row in rows:
        groups.setdefault((row["store"], row["where"], row["variant"]), []).append(row)
    found = []
    for (store, where, variant), group in groups.items():
        if len(group) < 2:
            continue
        group.sort(key=lambda r: (r["texts"], r["source_segments"]))
        small, large = group[0], group[-1]
        time_ratio = large["block_ms"] / small["block_ms"]
        bytes_ratio = large["bytes"] / small["bytes"]
        found.append(
            {
                "store": store,
                "where": where,
                "variant": variant,
                "from": _size(small),
                "to": _size(large),
                "time": round(time_ratio, 2),
                "bytes": round(bytes_ratio, 2),
                "within": time_ratio <= GROWTH_LIMIT and bytes_ratio <= GROWTH_LIMIT,
            }
        )
    return found


def _size(row: dict) -> str:
    if row["store"] == TEXTS:
        return f"{row['texts']:.0e} texts"
    return f"{row['source_segments']:.0e} segments"


def show(r: dict) -> None:
    print(
        f"\nThe vector store at scale: blocks of 65,536 hashes, half stored (median of "
        f"{r['blocks']} blocks, 40-byte records; S3 = moto on 127.0.0.1):"
    )
    head = (
        f"  {'store':<20}{'where':<7}{'block':<10}{'texts':>12}{'segments':>9}{'made s':>8}"
        f"{'start s':>9}{'block ms':>10}{'find ms':>9}{'bytes':>12}{'GET':>9}{'runs':>8}"
        f"{'+':>4}{'cand':>6}{'lost':>6}{'RSS MB':>8}"
    )
    print(head)
    for row in r["rows"]:
        print(
            f"  {row['store']:<20}{row['where']:<7}{row['variant']:<10}{row['texts']:>12,}"
            f"{row['segments']:>9,}{row['made_s']:>8}{row['startup_s']:>9}{row['block_ms']:>10}"
            f"{row['find_ms']:>9}{row['bytes']:>12,}{row['requests'].get('GET', 0):>9}"
            f"{row['runs']:>8}{row['beyond_runs_max']:>4}{row['namesakes']:>6}{row['lost']:>6}"
            f"{row['rss_mb']:>8}"
        )
    print(
        "  (made s: building the store, sending it to S3, or compacting it; start s: the first "
        "find,\n  which loads the index; GET: requests a block, HEAD and others shown when any; "
        "runs: ranges\n  the texts served make; +: the most requests a block made beyond them; "
        "cand: never-stored\n  texts whose 40-bit index key a stored one shares, read and "
        "refused; lost: stored texts\n  not served, their key shared with an earlier stored "
        "text; both over all the blocks)"
    )
    for row in r["rows"]:
        others = {k: v for k, v in row["requests"].items() if k != "GET"}
        if others:
            print(f"  {row['store']}, {row['where']}, {row['texts']:,}: {others} a block")
    print(f"\nGrowth from the smallest store to the largest (at most {GROWTH_LIMIT:g}x):")
    for g in r["growth"]:
        verdict = "yes" if g["within"] else "NO"
        print(
            f"  {g['store']:<20}{g['where']:<7}{g['variant']:<10}{g['from']} -> {g['to']}: "
            f"time {g['time']}x, bytes {g['bytes']}x: {verdict}"
        )
    largest = max(r["rows"], key=lambda row: (row["texts"], row["rss_mb"]))
    verdict = "yes" if largest["rss_mb"] < RSS_LIMIT_MB else "NO"
    print(
        f"Peak RSS at {largest['texts']:,} texts: {largest['rss_mb']} MB "
        f"(under {RSS_LIMIT_MB} MB: {verdict})"
    )


def _numbers(text: str) -> list[int]:
    """'1e6,1e7' -> [1000000, 10000000]; '' -> []."""
    return [_number(item) for item in text.split(",") if item.strip()]


def _number(text: str) -> int:
    return int(float(text))
