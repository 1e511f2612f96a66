"""ShardWorker: a tokenizer and a model loaded once, then any number of shards through them.

One process runs one worker: the plain `run`, each process of `--workers N`, each Ray actor.
Workers coordinate only through the output location (claims and manifest), so any number of
them, started in any way, can share a job.
"""

from __future__ import annotations

import dataclasses
import os
import uuid
from typing import Any

from etl.contract import Shard, ShardRecord, ShardStatus
from etl.errors import ConfigError, EmbedEtlError
from etl.reuse.ledger import Ledger
from etl.reuse.publish import Publisher
from etl.spec import OutputSpec
from etl.stages.read.batching import resolve_batching
from etl.stages.read.tokenizer import Layout
from etl.state.claims import ClaimBook
from etl.state.lease import Handout, Lease
from etl.state.manifest import Manifest
from etl.worker.calibration import calibrate_in_worker
from etl.worker.runner import ResultCallback, Runner
from etl.worker.settings import Work, WorkerSettings


class ShardWorker:
    """Loads the tokenizer and the model on its device and checks them with the largest batch,
    so that a model that does not load or fit fails before anything is written."""

    def __init__(self, settings: WorkerSettings, spec: OutputSpec) -> None:
        from etl.stages.compute.device import resolve_device
        from etl.stages.compute.encoder import Encoder
        from etl.stages.read.tokenizer import layout, load_tokenizer, prompt_length

        self.settings = settings
        self.spec = spec
        self.device = resolve_device(settings.device)
        self.tokenizer = load_tokenizer(spec.model, spec.backend, settings.trust_remote_code)
        self.layout = layout(self.tokenizer)
        if not spec.special_tokens:  # a static sparse route tokenizes the bare text
            self.layout = dataclasses.replace(self.layout, prefix=(), suffix=())
        check_room(spec, self.layout, self.tokenizer)
        skip = prompt_length(self.tokenizer, spec.prompt, spec.max_length)
        self.encoder = Encoder(spec, settings, self.device, skip)
        tokens = sum(spec.model.hidden_size for c in spec.columns if c.tokens)
        self.batching = resolve_batching(
            settings.batch_tokens,
            settings.batch_size,
            settings.sort_window,
            spec.max_length,
            self.device.type,
            token_width=tokens,
        )
        self.encoder.warm_up(*self.batching.largest_batch())

    def run(
        self,
        work: Work,
        on_result: ResultCallback | None = None,
        handout: Handout | None = None,
    ) -> list[ShardRecord]:
        """Claim and embed every shard of ``work`` nobody else holds; one record per shard.
        The shards are tried in the order ``handout`` gives (one of several workers asks its
        driver), or all in order. int8 ranges still to fix are fixed first (etl.worker.calibration),
        once for the whole job."""
        spec = self.spec
        if work.calibration is not None:
            spec = calibrate_in_worker(self, work.storage, work.calibration)
        return self._run(spec, work, on_result, claim=True, handout=handout)

    def embed_table(self, table: Any, spec: OutputSpec) -> Any:
        """Embed rows held in memory (a pyarrow Table with ``spec``'s id and text columns) by
        this worker's own path, into a Table: in this process's memory, no output location."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        from etl.storage import open_storage

        scratch = open_storage(f"memory://embed-etl-{os.getpid()}-{uuid.uuid4().hex}")
        buffer = pa.BufferOutputStream()
        pq.write_table(table, buffer)
        scratch.put("in/rows.parquet", buffer.getvalue().to_pybytes())
        shard = Shard(scratch.uri("in/rows.parquet"), "rows.parquet", "out/rows.parquet")
        try:
            (record,) = self._run(spec, Work((shard,), scratch), None, claim=False)
            if record.status != ShardStatus.DONE:
                raise EmbedEtlError(f"embedding {table.num_rows} rows failed: {record.error}")
            with scratch.open(shard.output_key) as handle:
                return pq.read_table(handle)
        finally:
            scratch.delete_prefix("")

    def _run(
        self,
        spec: OutputSpec,
        work: Work,
        on_result: ResultCallback | None,
        claim: bool,
        handout: Handout | None = None,
    ) -> list[ShardRecord]:
        from etl.stages.read.loader import ShardStream
        from etl.stages.read.read_ahead import DEFAULT_READERS, make_loader

        storage = work.storage
        manifest = Manifest(storage)
        lookup = store = ledger = None
        if work.reuse is not None:
            lookup, store = work.reuse.lookup(), work.reuse.target(storage.uri())
            ledger = Ledger(len(work.shards))  # made before the readers fork
        readers = self.settings.readers
        if readers is None:
            readers = DEFAULT_READERS

        def taken(shard: Shard) -> None:
            """We hold its claim now: what a killed attempt at it left is litter (a killed
            attempt leaves its claim behind: only a shard taken over has a segment's)."""
            if store is not None and claims is not None and shard.rel_name in claims.taken_over:
                store.discard_unfinished(shard)
            storage.discard_stale_uploads(shard.output_key)

        claims = ClaimBook(manifest, spec.fingerprint) if claim else None
        lease = Lease(work.shards, claims, readers, on_taken=taken, handout=handout)
        stream = ShardStream(
            work.shards,
            spec,
            self.tokenizer,
            self.layout,
            self.batching,
            lease.feed,
            lookup,
            ledger,
            store,
        )
        loader = make_loader(stream, readers, pin_memory=self.device.type == "cuda")
        runner = Runner(
            list(work.shards),
            spec,
            self.encoder.in_flight,
            manifest,
            lease,
            on_result,
            Publisher(store) if store is not None else None,
            ledger,
        )
        progress = self.settings.progress if claim else False
        return runner.consume(loader, work, progress)


def check_room(spec: OutputSpec, layout: Layout, tokenizer: Any) -> None:
    """A window must hold the special tokens, the prompt and more text than the overlap (or a
    whole passage of --chunk-tokens; with --chunking late, two)."""
    from etl.stages.read.tokens import content_ids

    prompt = len(content_ids(tokenizer, spec.prompt)) if spec.prompt else 0
    room = spec.max_length - layout.specials - prompt
    needed = spec.chunk_overlap + 1 if spec.long_text == "chunk" else 1
    what = f"--chunk-overlap {spec.chunk_overlap}" if spec.long_text == "chunk" else "text"
    if spec.chunk_tokens is not None:  # a passage, whole, with its specials and prompt
        needed, what = spec.chunk_tokens, f"--chunk-tokens {spec.chunk_tokens}"
        if spec.chunking == "late":  # twice: windows overlap by a passage (etl.stages.read.late)
            needed = 2 * spec.chunk_tokens
            what = f"--chunking late --chunk-tokens {spec.chunk_tokens} (a passage and an overlap)"
    if room < needed:
        raise ConfigError(
            f"--max-length {spec.max_length}: a sequence holds {layout.specials} special tokens "
            f"and {prompt} prompt tokens, which leaves {room} for the text; {what} needs "
            f"{needed}"
        )
