"""The data that passes between stages: small typed records, kept together in one place."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from etl.modelinfo import ModelInfo

if TYPE_CHECKING:  # keep torch and pyarrow out of planning commands
    import numpy as np
    import pyarrow as pa
    import torch

OUTPUT_FORMAT_VERSION = 2  # bump when the output layout changes so that old files differ
# 2: n_tokens and truncated columns; output dtypes, --truncate-dim, --long-text


@dataclass(frozen=True)
class ColumnSpec:
    """One embedding column: which pooling over which hidden-states index."""

    name: str  # emb_<pooling> for the last layer, emb_<pooling>_layer<k> otherwise
    pooling: str  # cls | mean | max | pooler
    layer: int  # absolute hidden-states index: 0 = embedding output, 1..L = encoder layers


@dataclass(frozen=True)
class OutputSpec:
    """What every output file holds, resolved against the model; its fingerprint guards reruns."""

    model: ModelInfo
    columns: tuple[ColumnSpec, ...]
    text_column: str
    id_column: str
    keep_columns: tuple[str, ...]
    normalize: bool
    max_length: int
    dtype: str  # compute dtype actually used: float32 | float16 | bfloat16
    long_text: str = "truncate"  # truncate | chunk | error
    chunk_overlap: int = 0  # tokens shared by consecutive windows (chunk only)
    output_dtype: str = "float32"  # float32 | float16 | int8 | binary
    truncate_dim: int | None = None  # keep the first D dimensions
    calibration_source: str | None = None  # int8: "sample" or "file:<sha256>"
    # int8 only: per-column ranges, fixed once per job. Not part of the identity: resuming a
    # job must not need the model, and the ranges follow from the identity's calibration source.
    calibration: dict[str, Any] | None = field(default=None, compare=False)

    def identity(self) -> dict[str, Any]:
        """Everything that changes the output files; two runs mix only if this is equal."""
        return {
            "format": OUTPUT_FORMAT_VERSION,
            "model_config_sha256": self.model.config_sha256,
            "model_weights": self.model.weights_id,
            "text_column": self.text_column,
            "id_column": self.id_column,
            "keep_columns": list(self.keep_columns),
            "columns": [[c.name, c.pooling, c.layer] for c in self.columns],
            "normalize": self.normalize,
            "max_length": self.max_length,
            "dtype": self.dtype,
            "long_text": self.long_text,
            "chunk_overlap": self.chunk_overlap if self.long_text == "chunk" else None,
            "output_dtype": self.output_dtype,
            "truncate_dim": self.truncate_dim,
            "calibration": self.calibration_source,
        }

    @property
    def fingerprint(self) -> str:
        canonical = json.dumps(self.identity(), sort_keys=True).encode()
        return hashlib.sha256(canonical).hexdigest()[:16]

    @property
    def dim(self) -> int:
        """Width of the model's vectors (what pooling produces)."""
        return self.model.hidden_size

    @property
    def out_dim(self) -> int:
        """Dimensions kept in the output (before binary packing)."""
        return self.truncate_dim or self.model.hidden_size

    @property
    def deepest_layer(self) -> int:
        return max(c.layer for c in self.columns)

    @property
    def needs_pooler(self) -> bool:
        return any(c.pooling == "pooler" for c in self.columns)

    @property
    def inner_layers(self) -> tuple[int, ...]:
        """Requested layers below the deepest one: these need the model's hidden_states."""
        deepest = self.deepest_layer
        return tuple(sorted({c.layer for c in self.columns if c.layer != deepest}))


@dataclass(frozen=True)
class Shard:
    """One input file and where its output goes; the unit of work, output, retry and resume."""

    input_path: str
    rel_name: str  # path relative to its input root, used for the output path and the manifest
    output_path: str


@dataclass
class WindowInfo:
    """Sent with the first batch of each window so the sink can assemble it in input order."""

    index: int  # window number inside the shard, from 0
    num_rows: int
    num_batches: int  # batches this window was cut into (at least 1, possibly empty)
    passthrough: pa.RecordBatch  # id and kept columns, in input order
    null_rows: int = 0  # rows whose text is null: no batch carries them
    real_tokens: int = 0  # tokens fed to the model (after truncation)
    truncated_rows: int = 0
    chunked_rows: int = 0  # rows split into several windows (--long-text chunk)
    n_tokens: np.ndarray | None = None  # (num_rows,) tokens before truncation; -1 = null text
    multi: np.ndarray | None = None  # (num_rows,) bool: row has several windows; None = none


@dataclass
class Batch:
    """A padded model input: B sequences of length T, each sequence mapped to its row."""

    shard_index: int
    window_index: int
    rows: torch.Tensor  # (B,) row position inside the window, one per sequence
    input_ids: torch.Tensor  # (B, T) int64
    attention_mask: torch.Tensor  # (B, T) int64, 1 = real token
    window: WindowInfo | None = None  # set on the first batch of a window only

    def pin_memory(self) -> Batch:
        """Called by DataLoader(pin_memory=True) so host-to-GPU copies can be asynchronous."""
        self.input_ids = self.input_ids.pin_memory()
        self.attention_mask = self.attention_mask.pin_memory()
        return self

    @property
    def size(self) -> int:
        return int(self.input_ids.shape[0])


@dataclass
class ShardStart:
    """A reader began a shard: the input schema lets the sink open its writer."""

    shard_index: int
    schema: pa.Schema
    num_rows: int  # from the Parquet footer
    input_identity: dict[str, int]  # size and modification time when it was opened


@dataclass
class ShardEnd:
    """A reader finished a shard: every window has been sent."""

    shard_index: int
    num_rows: int
    num_windows: int


@dataclass
class ShardFailed:
    """A reader could not finish a shard; whatever was sent for it must be discarded."""

    shard_index: int
    message: str  # one line for the user
    detail: str = ""  # traceback, shown with --verbose


@dataclass
class ShardResult:
    """How one shard ended: counts, timings and, when it failed, why."""

    shard: Shard
    status: str  # done | failed | skipped (done before) | claimed_elsewhere
    rows: int = 0
    null_rows: int = 0
    truncated_rows: int = 0
    chunked_rows: int = 0
    tokens: int = 0  # real tokens fed to the model
    padded_tokens: int = 0  # tokens the model computed, padding included
    seconds: float = 0.0
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class JobSummary:
    """What a run did, printed as one JSON line on stdout at the end."""

    fingerprint: str
    shards: list[ShardResult]
    seconds: float = 0.0

    def count(self, status: str) -> int:
        return sum(1 for r in self.shards if r.status == status)

    @property
    def ok(self) -> bool:
        return self.count("failed") == 0

    def to_dict(self) -> dict[str, Any]:
        done = [r for r in self.shards if r.status == "done"]
        rows = sum(r.rows for r in done)
        tokens = sum(r.tokens for r in done)
        padded = sum(r.padded_tokens for r in done)
        seconds = round(self.seconds, 3)
        return {
            "status": "ok" if self.ok else "failed",
            "rows": rows,
            "tokens": tokens,
            "seconds": seconds,
            "rows_per_s": round(rows / self.seconds, 1) if self.seconds > 0 else None,
            "tokens_per_s": round(tokens / self.seconds, 1) if self.seconds > 0 else None,
            "padding_ratio": round(padded / tokens, 4) if tokens else None,
            "null_rows": sum(r.null_rows for r in done),
            "truncated_rows": sum(r.truncated_rows for r in done),
            "chunked_rows": sum(r.chunked_rows for r in done),
            "shards_done": len(done),
            "shards_failed": self.count("failed"),
            "shards_skipped": self.count("skipped"),  # done before this run
            "shards_elsewhere": self.count("claimed_elsewhere"),  # another process has them
            "fingerprint": self.fingerprint,
            "shards": [
                {
                    "input": r.shard.rel_name,
                    "status": r.status,
                    "rows": r.rows,
                    "null_rows": r.null_rows,
                    "truncated_rows": r.truncated_rows,
                    "chunked_rows": r.chunked_rows,
                    "seconds": round(r.seconds, 3),
                    **({"error": r.error} if r.error else {}),
                }
                for r in self.shards
                if r.status in ("done", "failed")
            ],
        }
