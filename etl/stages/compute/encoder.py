"""Load the model once, cut it to the deepest layer asked for, turn batches into vectors.

One forward pass gives every output column: each pools one hidden layer (the model's own modes,
or --pooling's), the model's Dense layers follow where its recipe has them, and token vectors
are handed over whole. Normalizing waits for the sink, after a long text's windows are joined.
The job's batches go through ``in_flight`` (etl.stages.compute.inflight): queued on the device and
collected later; ``encode`` is the same pass waited for.
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Any

import torch

from etl.contract import Batch
from etl.errors import ModelError, reason
from etl.model.backend import FLASH_ATTENTION
from etl.model.code.registry import model_code
from etl.model.facts import ModelInfo
from etl.model.runtime import require_safe_torch, require_same_code
from etl.spec import OutputSpec
from etl.stages.compute.device import cpu_supports, default_threads
from etl.stages.compute.head import DenseHead
from etl.stages.compute.inflight import InFlight
from etl.stages.compute.pooling import pool, pool_spans
from etl.stages.compute.sparse_model import SparseModel

log = logging.getLogger(__name__)

# oneDNN caches one compiled primitive per input shape, each with its own buffers, up to 1024 of
# them; batches cut on a token budget rarely repeat a shape, so the cache only grows (to over a
# GB) without speeding anything up. 16 entries: flat memory, same speed (benchmarks/RESULTS.md).
ONEDNN_CACHE_CAPACITY = "16"

# The CPU warm-up's sequence length: enough to run every layer once.
CPU_WARM_UP_TOKENS = 8

# Where the supported architectures keep their list of transformer layers.
LAYER_PATHS = ("encoder.layer", "transformer.layer", "encoder.layers", "layers")
# The norm some architectures (ModernBERT, decoders) apply after their last layer only.
FINAL_NORMS = ("norm", "final_norm")


class Encoder:
    """The model on its device, cut to the deepest requested layer, turning batches into vectors."""

    def __init__(
        self, spec: OutputSpec, settings: Any, device: torch.device, prompt_length: int = 0
    ) -> None:
        require_same_code(spec.code, spec.backend.code())
        self.spec = spec
        self.device = device
        self.prompt_length = prompt_length  # left out of pooling where include_prompt is off
        # Read by oneDNN when it first runs, which is our warm-up; a user's setting wins.
        os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", ONEDNN_CACHE_CAPACITY)
        torch.set_num_threads(settings.threads or _default_threads(spec, device))
        self.sparse = None  # a sparse model's MLM head or static weights, instead of the model
        if spec.sparse:
            self.sparse = SparseModel(spec, device, settings.trust_remote_code)
        else:
            self.model = _load_model(spec, device, settings.trust_remote_code)
        recipe = spec.model.recipe
        self.head = None
        if any(c.dense for c in spec.columns):
            # A dense model's Dense layers over the pooled vector; a multi-vector model's
            # projection over each token's.
            layers = recipe.multivector.projection if recipe.multivector else recipe.dense
            self.head = DenseHead(layers, spec.model.name).eval().to(device)
        self.inner = {c.layer for c in spec.columns if c.layer != spec.deepest_layer}
        if device.type == "cpu" and not cpu_supports(spec.dtype):
            log.warning(
                "--dtype %s: this CPU has no native %s instructions; expect it to be slower "
                "than float32",
                spec.dtype,
                spec.dtype,
            )
        self.autocast = (
            torch.autocast(device_type=device.type, dtype=getattr(torch, spec.dtype))
            if spec.dtype != "float32"
            else contextlib.nullcontext()
        )
        self.in_flight = InFlight(self.forward, device)  # the job's batches go through this

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        """One forward pass, enqueued on the device: (B, D) float32 vectors per column; a token
        column gets its (B, T, H) hidden states (the batch's mask says which tokens are real).
        The results stay on the device (etl.stages.compute.inflight brings them over)."""
        non_blocking = self.device.type == "cuda"
        ids = batch.input_ids.to(self.device, non_blocking=non_blocking)  # (B, T)
        mask = batch.attention_mask.to(self.device, non_blocking=non_blocking)  # (B, T)
        spans = width = None
        if batch.spans is not None:  # --chunking late: (Q, 3) passages to pool
            width = int((batch.spans[:, 2] - batch.spans[:, 1]).max())  # every batch has one
            spans = batch.spans.to(self.device, non_blocking=non_blocking)
        with torch.inference_mode(), self.autocast:
            if self.sparse is not None:
                return {self.spec.columns[0].name: self.sparse(ids, mask)}  # (B, V)
            out = self.model(
                input_ids=ids, attention_mask=mask, output_hidden_states=bool(self.inner)
            )
            result = {}
            for column in self.spec.columns:
                if column.pooling == ("pooler",):
                    result[column.name] = out.pooler_output.float()  # (B, H)
                    continue
                hidden = (
                    out.last_hidden_state
                    if column.layer == self.spec.deepest_layer
                    else out.hidden_states[column.layer]
                )  # (B, T, H)
                if column.tokens:
                    if column.dense and self.head is not None:
                        hidden = self.head(hidden)  # (B, T, D): a multi-vector projection
                    result[column.name] = hidden.float()  # (B, T, D)
                    continue
                if spans is not None:  # (Q, modes x H): a vector per passage
                    vectors = pool_spans(hidden, spans, width, column.pooling)
                else:
                    skip = 0 if column.include_prompt else self.prompt_length
                    vectors = pool(hidden, mask, column.pooling, skip)  # (B, modes x H)
                if column.dense and self.head is not None:
                    vectors = self.head(vectors)  # (B, D)
                result[column.name] = vectors
        return result

    def encode(self, batch: Batch) -> dict[str, torch.Tensor]:
        """forward() brought to the CPU at once, waiting for the device: the synchronous
        reference the batches in flight are checked against."""
        return {name: v.to("cpu") for name, v in self.forward(batch).items()}

    def warm_up(self, rows: int, length: int) -> None:
        """On a GPU, run the largest batch the job can produce, as many at once as the job
        keeps in flight, so out-of-memory shows before any output (and the pinned buffers are
        pinned once, here). On a CPU running out of memory is no exception to catch (the
        kernel kills the process), so one short sequence proves the model embeds, in
        milliseconds."""
        at_once = self.in_flight.depth + 1
        if self.device.type == "cpu":
            rows, length, at_once = 1, min(length, CPU_WARM_UP_TOKENS), 1
        vocab = self.sparse.vocab_size if self.sparse else self.model.config.vocab_size
        token = min(1000, vocab - 1)  # any ordinary token will do
        ids = torch.full((rows, length), token, dtype=torch.long)
        mask = torch.ones_like(ids)
        flying = []
        try:
            for _ in range(at_once):
                flying.append(self.in_flight.submit(Batch(-1, -1, torch.arange(rows), ids, mask)))
            for submitted in flying:
                self.in_flight.collect(submitted)
                self.in_flight.release(submitted)
        except torch.OutOfMemoryError as exc:
            raise ModelError(
                f"warm-up batch of {rows} x {length} tokens ({at_once} in flight) ran out of "
                f"memory on {self.device}; lower --batch-tokens or --batch-size"
            ) from exc
        except Exception as exc:  # an architecture that loads but cannot embed
            raise ModelError(
                f"--model {self.spec.model.name}: a {self.spec.model.model_type} model failed "
                f"on a first batch: {reason(exc)}"
            ) from exc


def _default_threads(spec: OutputSpec, device: torch.device) -> int:
    """torch's threads when --threads is not given: every core, except that a model run to
    layer 0 (embeddings only) costs less than tokenizing its texts, so one thread computes it
    and the other cores are the tokenizer's (8,000 corpus rows on 2 cores: 1.05 to 1.25 s
    against 1.49 to 1.53 s; a whole model is 1.6x slower on one thread, so it gets them all)."""
    if device.type == "cpu" and spec.deepest_layer == 0:
        return 1
    return default_threads()


def _load_model(spec: OutputSpec, device: torch.device, trust_remote_code: bool) -> Any:
    """The model, by the code the spec's backend names (etl.model.code.registry), cut to the
    deepest layer asked for, on its device."""
    info = spec.model
    require_safe_torch()
    if spec.backend.attention == FLASH_ATTENTION:
        log.info("attention: flash_attention_2 (padding is skipped)")
    code = model_code(spec.backend.model)  # exactly the code the plan chose
    model, missing = code.load(info.path, info.name, spec.backend.attention, trust_remote_code)
    pooler_missing = [k for k in missing if "pooler" in k]
    if spec.needs_pooler and (pooler_missing or getattr(model, "pooler", None) is None):
        raise ModelError(
            f"--pooling pooler: {info.name} has no trained pooler weights; use cls or mean"
        )
    used_missing = [k for k in missing if "pooler" not in k]
    if used_missing:
        names = ", ".join(used_missing[:5])
        raise ModelError(f"--model {info.name}: weights missing from the checkpoint: {names}")
    if not spec.needs_pooler and getattr(model, "pooler", None) is not None:
        model.pooler = None  # the dense+tanh head is only computed when asked for
    _keep_layers(model, spec.deepest_layer, info)
    if spec.dtype == "float32":
        # A checkpoint saved in half precision loads in it (transformers 5 does so too); the
        # exact mode computes in float32 all the same.
        model = model.float()
    return model.eval().to(device)


def _keep_layers(model: torch.nn.Module, keep: int, info: ModelInfo) -> None:
    """Drop transformer layers above `keep`, so asking for layer k runs k layers."""
    if keep == info.num_layers:
        return
    layers = _find_layers(model, info.num_layers)
    if layers is None:
        raise ModelError(
            f"--layer {keep}: cannot find the layer list of {info.name} "
            f"({type(model).__name__}) to run only its first {keep} layers"
        )
    del layers[keep:]
    for attr in ("num_hidden_layers", "n_layers"):
        if hasattr(model.config, attr):
            setattr(model.config, attr, keep)
    # A norm meant for the last layer's output must not touch layer k's: hidden_states[k] of
    # the whole model is taken before it.
    for name in FINAL_NORMS:
        if isinstance(getattr(model, name, None), torch.nn.Module):
            setattr(model, name, torch.nn.Identity())


def _find_layers(model: torch.nn.Module, count: int) -> torch.nn.ModuleList | None:
    for path in LAYER_PATHS:
        obj: Any = model
        for part in path.split("."):
            obj = getattr(obj, part, None)
        if isinstance(obj, torch.nn.ModuleList) and len(obj) == count:
            return obj
    return None
