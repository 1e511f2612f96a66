"""ShardWorker: a tokenizer and a model loaded once, then any number of shards through them.

One process runs one worker: the plain `run`, each process of `--workers N`, each Ray actor.
Workers coordinate only through the output location (claims and manifest), so any number of
them, started in any way, can share a job.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from etl.config import JobConfig
from etl.contract import Shard, ShardResult
from etl.errors import ConfigError
from etl.reuse.ledger import Ledger
from etl.spec import OutputSpec
from etl.stages.batching import resolve_batching
from etl.stages.tokenizer import Layout
from etl.state.claims import ClaimBook
from etl.state.manifest import Manifest
from etl.storage.base import Storage
from etl.worker.runner import ResultCallback, Runner


class ShardWorker:
    """Loads the tokenizer and the model on ``device`` and checks them with the largest batch,
    so that a model that does not load or fit fails before anything is written."""

    def __init__(self, cfg: JobConfig, spec: OutputSpec, device: str | None = None) -> None:
        from etl.stages.device import resolve_device
        from etl.stages.encoder import Encoder
        from etl.stages.tokenizer import layout, load_tokenizer, prompt_length

        self.cfg = cfg
        self.device = resolve_device(device or cfg.device)
        self.tokenizer = load_tokenizer(spec.model, spec.backend, cfg.trust_remote_code)
        self.layout = layout(self.tokenizer)
        check_room(spec, self.layout, self.tokenizer)
        skip = prompt_length(self.tokenizer, spec.prompt, spec.max_length)
        self.encoder = Encoder(spec, cfg, self.device, skip)
        tokens = sum(spec.model.hidden_size for c in spec.columns if c.tokens)
        self.batching = resolve_batching(
            cfg.batch_tokens,
            cfg.batch_size,
            cfg.sort_window,
            spec.max_length,
            self.device.type,
            token_width=tokens,
        )
        self.encoder.warm_up(*self.batching.largest_batch())

    def process(
        self,
        shards: Sequence[Shard],
        spec: OutputSpec,
        storage: Storage,
        total_rows: int = 0,
        progress: bool | None = False,
        on_result: ResultCallback | None = None,
        reuse: Any = None,
    ) -> list[ShardResult]:
        """Claim and embed every shard nobody else holds; one result per shard.

        ``spec`` has the columns the worker was loaded for; it may differ in how vectors are
        stored (the int8 ranges, or float32 for the calibration sample). ``reuse`` (an
        etl.reuse.plan.ReusePlan) names the vector stores to consult and add to; None embeds
        every row.
        """
        from etl.stages.device import default_threads
        from etl.stages.loader import ShardStream, default_workers, make_loader

        manifest = Manifest(storage)
        claims = ClaimBook(manifest, spec.fingerprint)
        lookup = store = ledger = None
        if reuse is not None:
            lookup, store = reuse.lookup(), reuse.target(storage.uri())
            ledger = Ledger(len(shards))  # made before the readers fork
        stream = ShardStream(
            shards, spec, self.tokenizer, self.layout, self.batching, claims, lookup, ledger
        )
        workers = self.cfg.num_workers
        if workers is None:
            workers = default_workers(self.device.type, default_threads())
        loader = make_loader(stream, workers, pin_memory=self.device.type == "cuda")
        runner = Runner(
            list(shards), spec, self.encoder, manifest, claims, on_result, store, ledger
        )
        return runner.consume(loader, total_rows, progress)


def check_room(spec: OutputSpec, layout: Layout, tokenizer: Any) -> None:
    """A window must hold the special tokens, the prompt and more text than the overlap."""
    from etl.stages.tokens import content_ids

    prompt = len(content_ids(tokenizer, spec.prompt)) if spec.prompt else 0
    room = spec.max_length - layout.specials - prompt
    needed = spec.chunk_overlap + 1 if spec.long_text == "chunk" else 1
    if room < needed:
        what = f"--chunk-overlap {spec.chunk_overlap}" if spec.long_text == "chunk" else "text"
        raise ConfigError(
            f"--max-length {spec.max_length}: a sequence holds {layout.specials} special tokens "
            f"and {prompt} prompt tokens, which leaves {room} for the text; {what} needs "
            f"{needed}"
        )
