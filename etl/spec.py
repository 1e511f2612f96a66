"""What every output file holds, resolved against the model, and the fingerprint that guards it.

build_output_spec turns a JobConfig and a model's facts into an OutputSpec: absolute layers,
column names, max length, dimensions. Its identity (everything that changes the bytes of the
vectors) hashes to the fingerprint that output files, the manifest and reruns compare.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from etl.config import JobConfig
from etl.errors import ConfigError
from etl.model.facts import ModelInfo

METADATA_PREFIX = "embed_etl."  # file metadata keys: embed_etl.model, embed_etl.fingerprint, ...
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


def build_output_spec(cfg: JobConfig, model: ModelInfo, dtype: str) -> OutputSpec:
    """Resolve layers, column names and max length against the model; compute the fingerprint."""
    top = model.num_layers
    absolute = []
    for layer in cfg.layers:
        k = layer if layer >= 0 else top + 1 + layer
        if not 0 <= k <= top:
            raise ConfigError(
                f"--layer {layer}: {model.name} has hidden states 0..{top} "
                f"(0 = embedding layer, {top} = last layer); negative values count from "
                f"-1 (= {top}) down to {-(top + 1)} (= 0)"
            )
        if k not in absolute:
            absolute.append(k)
    columns = []
    for pooling in dict.fromkeys(cfg.poolings):
        for k in absolute:
            if pooling == "pooler" and k != top:
                raise ConfigError(
                    f"--pooling pooler --layer {k}: the pooler exists only on top of the last "
                    f"layer ({top}); ask for other layers in a separate run, or use cls"
                )
            name = f"emb_{pooling}" if k == top else f"emb_{pooling}_layer{k}"
            columns.append(ColumnSpec(name=name, pooling=pooling, layer=k))
    max_length = cfg.max_length or model.default_max_length
    if max_length > model.max_positions:
        raise ConfigError(
            f"--max-length {max_length}: {model.name} accepts at most {model.max_positions} tokens"
        )
    if max_length < 2:
        raise ConfigError("--max-length: expected at least 2 (room for [CLS] and [SEP])")
    if cfg.long_text == "chunk" and cfg.chunk_overlap >= max_length - 2:
        raise ConfigError(
            f"--chunk-overlap {cfg.chunk_overlap}: must be less than the {max_length - 2} text "
            f"tokens of a window (--max-length {max_length} minus [CLS] and [SEP])"
        )
    dim = cfg.truncate_dim or model.hidden_size
    if dim > model.hidden_size:
        raise ConfigError(
            f"--truncate-dim {dim}: {model.name} has {model.hidden_size} dimensions; "
            f"expected 1..{model.hidden_size}"
        )
    if cfg.output_dtype == "binary" and dim % 8:
        raise ConfigError(
            f"--output-dtype binary packs 8 dimensions per byte: {dim} dimensions is not a "
            "multiple of 8 (pick another --truncate-dim)"
        )
    return OutputSpec(
        model=model,
        columns=tuple(columns),
        text_column=cfg.text_column,
        id_column=cfg.id_column,
        keep_columns=cfg.keep_columns,
        normalize=cfg.normalize,
        max_length=max_length,
        dtype=dtype,
        long_text=cfg.long_text,
        chunk_overlap=cfg.chunk_overlap,
        output_dtype=cfg.output_dtype,
        truncate_dim=cfg.truncate_dim if dim != model.hidden_size else None,
        calibration_source=calibration_source(cfg) if cfg.output_dtype == "int8" else None,
    )


def calibration_source(cfg: JobConfig) -> str:
    """What fixes the int8 ranges, for the fingerprint: the corpus sample or a file's content."""
    if not cfg.calibration:
        return f"sample:{cfg.calibration_rows}"
    path = Path(cfg.calibration)
    if not path.is_file():
        raise ConfigError(
            f"--calibration {cfg.calibration}: no such file (expected a calibration.json "
            "written by another job, or a Parquet file of sample texts)"
        )
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    return f"file:{digest}"
