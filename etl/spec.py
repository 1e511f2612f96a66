"""What every output file holds, resolved against the model, and the fingerprint that guards it.

build_output_spec turns a JobConfig and a model's facts into an OutputSpec: the model's own
recipe unless --pooling says otherwise, absolute layers, column names and widths, the prompt, max
length. Its identity (everything that changes the bytes of the vectors) hashes to the
fingerprint that output files, the manifest and reruns compare.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from etl.columns import ColumnSpec
from etl.config import CHUNK_COLUMNS, WHOLE_TEXT, JobConfig
from etl.errors import ConfigError
from etl.kinds import output_columns
from etl.model.backend import STATIC, Backend, choose_backend
from etl.model.digests import recipe_digest
from etl.model.facts import ModelInfo
from etl.model.recipe import SPARSE, choose_prompt

# The rules that cut texts into passages (etl.stages.read.passages, passage_rows): bump it whenever
# they change, so that a resumed --chunk-tokens job never mixes two ways of cutting.
PASSAGE_CUTTER_VERSION = 1
METADATA_PREFIX = "embed_etl."  # file metadata keys: embed_etl.model, embed_etl.fingerprint, ...
OUTPUT_FORMAT_VERSION = 5  # bump when the output layout changes so that old files differ
# 2: n_tokens and truncated columns; output dtypes, --truncate-dim, --long-text
# 3: the model's own recipe (pooling modes, Dense, Normalize, prompts); token vectors
# 4: the content of weights, tokenizer and configuration files, and the backend, identify it
# 5: the versions of the code that computes the vectors (Backend.code)


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
    backend: Backend  # the code that computes the vectors (etl.model.backend)
    long_text: str = "truncate"  # truncate | chunk | error
    max_text_bytes: int = 8 << 20  # longer texts get null vectors (refused rows)
    chunk_overlap: int = 0  # tokens shared by consecutive windows or passages
    chunk_tokens: int | None = None  # passages as output rows (etl.stages.read.passage_rows)
    chunk_boundary: str = "tokens"
    chunking: str = "naive"  # naive | late: each passage alone, or pooled from its text's pass
    chunk_layout: str = "rows"  # rows | nested: a row per passage, or per input row (lists)
    output_dtypes: tuple[str, ...] = ("float32",)  # each column stored in each of these
    truncate_dim: int | None = None  # keep the first D dimensions
    calibration_source: str | None = None  # int8: "sample" or "file:<sha256>"
    prompt: str = ""  # prepended to every text
    prompt_name: str | None = None  # the model's name for that prompt, if it is one of them
    top_k: int | None = None  # sparse: the largest weights kept per row (None: every nonzero)
    # The versions of the code that computes the vectors (Backend.code), read once where the
    # job is planned: every worker, on any machine, compares its own (require_same_code).
    code: dict[str, Any] = field(default_factory=dict)
    # int8 only: per-column ranges, fixed once per job. Not part of the identity: resuming a
    # job must not need the model, and the ranges follow from the identity's calibration source.
    calibration: dict[str, Any] | None = field(default=None, compare=False)

    def recipe_identity(self) -> dict[str, Any]:
        """Everything that changes a text's vector before it is stored (truncated, normalized,
        encoded): the model's files and code, the columns, lengths, prompt and precision. What
        the vector store is keyed by, with the text."""
        recipe = self.model.recipe
        return {
            "model_config_sha256": self.model.config_sha256,
            "model_weights": self.model.weights_sha256,
            "model_tokenizer": self.model.tokenizer_sha256,
            "backend": self.backend.describe(),
            "code": self.code,
            "recipe": recipe.identity() if recipe.from_model else None,
            "columns": [c.describe() for c in self.columns],
            "max_length": self.max_length,
            "dtype": self.dtype,
            "long_text": self.long_text,
            "chunk_overlap": self.chunk_overlap if self.long_text == "chunk" else None,
            "prompt": self.prompt,
            **({"top_k": self.top_k} if self.sparse else {}),
        }

    def identity(self) -> dict[str, Any]:
        """Everything that changes the output files; two runs mix only if this is equal."""
        return {
            "format": OUTPUT_FORMAT_VERSION,
            **self.recipe_identity(),
            "text_column": self.text_column,
            "id_column": self.id_column,
            "keep_columns": list(self.keep_columns),
            "normalize": self.normalize,
            "output_dtypes": list(self.output_dtypes),
            "truncate_dim": self.truncate_dim,
            "calibration": self.calibration_source,
            "max_text_bytes": self.max_text_bytes,
            **(
                {
                    "passages": {
                        "tokens": self.chunk_tokens,
                        "overlap": self.chunk_overlap,
                        "boundary": self.chunk_boundary,
                        # Only when late: naive outputs keep the fingerprints they had.
                        **({"chunking": self.chunking} if self.chunking != "naive" else {}),
                        **({"layout": self.chunk_layout} if self.chunk_layout != "rows" else {}),
                        "cutter": PASSAGE_CUTTER_VERSION,
                    }
                }
                if self.chunk_tokens is not None
                else {}
            ),
        }

    @property
    def passthrough(self) -> list[str]:
        """The columns written as the input (or the passages) give them: the id, the kept
        columns, and with --chunk-tokens (rows layout) each passage's number and span."""
        rows = self.chunk_tokens is not None and not self.nested
        return [self.id_column, *self.keep_columns, *(CHUNK_COLUMNS if rows else ())]

    @property
    def carried(self) -> list[str]:
        """The columns each window carries from the reader to the sink: the passthrough ones,
        and for the nested layout what it folds passage rows by (etl.stages.write.nested)."""
        whole = [WHOLE_TEXT] if self.text_column in self.keep_columns else []
        return [*self.passthrough, *CHUNK_COLUMNS, *whole] if self.nested else self.passthrough

    @property
    def nested(self) -> bool:  # --chunk-layout nested: a row per input row, passages as lists
        return self.chunk_tokens is not None and self.chunk_layout == "nested"

    @property
    def fingerprint(self) -> str:
        return _digest(self.identity())

    @property
    def recipe_fingerprint(self) -> str:
        """The whole sha256 of the recipe: what a vector store declares, and every segment."""
        return recipe_digest(self.recipe_identity())

    def out_dim(self, column: ColumnSpec) -> int:
        """Dimensions of a column kept in the output (before binary packing)."""
        return min(self.truncate_dim or column.dim, column.dim)

    def stored(self, column: ColumnSpec) -> list[tuple[str, str]]:
        """(output column name, dtype) for each encoding of a column: the column's own name
        with one --output-dtype, name_<dtype> with several."""
        if len(self.output_dtypes) == 1:
            return [(column.name, self.output_dtypes[0])]
        return [(f"{column.name}_{dtype}", dtype) for dtype in self.output_dtypes]

    @property
    def int8(self) -> bool:
        return "int8" in self.output_dtypes

    @property
    def deepest_layer(self) -> int:
        return max(c.layer for c in self.columns)

    @property
    def needs_pooler(self) -> bool:
        return any(c.pooling == ("pooler",) for c in self.columns)

    @property
    def inner_layers(self) -> tuple[int, ...]:
        """Requested layers below the deepest one: these need the model's hidden_states."""
        deepest = self.deepest_layer
        return tuple(sorted({c.layer for c in self.columns if c.layer != deepest}))

    @property
    def has_tokens(self) -> bool:
        return any(c.tokens for c in self.columns)

    @property
    def kind(self) -> str:
        """dense | sparse | multivector: what the model's own vectors are."""
        return self.model.recipe.kind

    @property
    def sparse(self) -> bool:
        return self.kind == SPARSE

    @property
    def special_tokens(self) -> bool:
        """Whether the tokenizer adds its special tokens ([CLS], [SEP]): all but a static
        sparse route, which tokenizes the bare text."""
        return self.backend.model != STATIC


def _digest(identity: dict[str, Any]) -> str:
    return recipe_digest(identity)[:16]


def build_output_spec(
    cfg: JobConfig, model: ModelInfo, dtype: str, device_type: str = "cpu"
) -> OutputSpec:
    """Resolve the recipe, layers, column names, prompt and lengths against the model, and the
    code that will compute the vectors on ``device_type``."""
    recipe = model.recipe
    columns, max_length, top_k = output_columns(cfg, model)
    prompt, prompt_name = choose_prompt(model.recipe, model.name, cfg.prompt, cfg.prompt_name)
    truncate = cfg.truncate_dim if any(cfg.truncate_dim != c.dim for c in columns) else None
    backend = choose_backend(
        model.path, model.custom_code, device_type, dtype, forced=cfg.backend, kind=recipe
    )
    return OutputSpec(
        model=model,
        columns=tuple(columns),
        text_column=cfg.text_column,
        id_column=cfg.id_column,
        keep_columns=cfg.keep_columns,
        # The model's Normalize belongs to its recipe: --pooling leaves the whole head out.
        normalize=(
            cfg.normalize if cfg.normalize is not None else recipe.normalize and not cfg.poolings
        )
        and recipe.kind != SPARSE,
        max_length=max_length,
        dtype=dtype,
        backend=backend,
        long_text=cfg.long_text,
        max_text_bytes=cfg.max_text_bytes,
        chunk_overlap=cfg.chunk_overlap,
        chunk_tokens=cfg.chunk_tokens,
        chunk_boundary=cfg.chunk_boundary,
        chunking=cfg.chunking,
        chunk_layout=cfg.chunk_layout,
        output_dtypes=cfg.output_dtypes,
        truncate_dim=truncate,
        calibration_source=calibration_source(cfg) if "int8" in cfg.output_dtypes else None,
        prompt=prompt,
        prompt_name=prompt_name,
        top_k=top_k,
        code=backend.code(),
    )


def calibration_source(cfg: Any) -> str:
    """What fixes the int8 ranges, for the fingerprint: the corpus sample or a file's content."""
    if not cfg.calibration:
        return f"sample:{cfg.calibration_rows}"
    from etl.storage.files import read_bytes

    try:
        data = read_bytes(cfg.calibration)
    except (FileNotFoundError, IsADirectoryError, OSError) as exc:
        raise ConfigError(
            f"--calibration {cfg.calibration}: no such file (expected a calibration.json "
            "written by another job, or a Parquet file of sample texts)"
        ) from exc
    digest = hashlib.sha256(data).hexdigest()[:16]
    return f"file:{digest}"
