"""JobConfig: every option of a run, with its default and its check, validated once on creation.

The CLI takes its choices and defaults from here; resolving the options against a model (layers,
lengths, column names) is etl.spec's job."""

from __future__ import annotations

from dataclasses import dataclass

from etl.errors import ConfigError
from etl.storable import unstorable
from etl.storage import fork_safe

# --pooling: sentence-transformers' modes, the model's pooler, and per-token vectors.
POOLINGS = (
    "mean",
    "cls",
    "max",
    "mean_sqrt_len_tokens",
    "weightedmean",
    "lasttoken",
    "pooler",
    "tokens",
)
DEVICES_HELP = "auto, cpu, cuda, cuda:N or mps"
DTYPES = ("auto", "float32", "float16", "bfloat16")
ENGINES = ("local", "ray")
LONG_TEXT = ("truncate", "chunk", "error")
CHUNK_BOUNDARIES = ("tokens", "sentence")
CHUNKING = ("naive", "late")  # --chunking: each passage alone, or pooled from its text's pass
CHUNK_COLUMNS = ("chunk", "chunk_start", "chunk_end")  # with --chunk-tokens, after the id
CHUNK_LAYOUTS = ("rows", "nested")  # a row per passage, or a row per input row with lists
CHUNK_SPANS = "chunk_spans"  # the nested layout's list of each passage's (start, end)
WHOLE_TEXT = "embed_etl.whole_text"  # nested, text kept: a row's text on its first passage row
OUTPUT_DTYPES = ("float32", "float16", "int8", "binary")
ROW_COLUMNS = ("n_tokens", "truncated")  # written for every row, beside the vectors
CALIBRATION_ROWS = 2048  # int8: rows sampled from the corpus to fix the ranges
ESTIMATE_ROWS = 65536  # `plan --estimate`: rows tokenized (within 1% on tokens, here)
CALIBRATE_ROWS = 8192  # ... of which `--calibrate` embeds this many on a CPU (all on a GPU)
TASKS = ("query", "document")  # --task: what encode_query/_document pass; a Router's routes

MAX_TEXT_BYTES = 8 << 20  # 8 MiB: some 2M tokens, 250x the longest window of any encoder


@dataclass(frozen=True)
class JobConfig:
    """All options of one job. Built by the CLI or by Python callers; validated on creation."""

    inputs: tuple[str, ...]
    output_dir: str
    model: str | None = None  # None: the packaged all-MiniLM-L6-v2
    text_column: str = "text"
    id_column: str = "id"
    keep_columns: tuple[str, ...] = ()
    poolings: tuple[str, ...] = ()  # empty: the model's own recipe (sentence-transformers')
    layers: tuple[int, ...] = (-1,)
    normalize: bool | None = None  # None: as the model's recipe says (off without one)
    max_length: int | None = None  # None: the model's configured limit
    batch_size: int = 256  # most rows in one batch
    batch_tokens: int | None = None  # padded-token budget per batch; None: picked by device
    sort_window: int = 4096  # rows sorted by length together; bounds memory and reordering
    device: str = "auto"
    dtype: str = "auto"
    num_workers: int | None = None  # reading processes; 0: a thread; None: 0 CPU, 1-4 GPU
    threads: int | None = None  # torch intra-op threads; None: the cores this process may use
    progress: bool | None = None  # None: a bar only when stderr is a terminal
    overwrite: bool = False  # replace outputs made with other options instead of refusing
    only_failed: bool = False  # redo only shards recorded as failed
    shard_index: int | None = None  # with num_shards: run only this part of the inputs
    num_shards: int | None = None
    workers: int = 1  # worker processes (or Ray actors), each with its own model
    devices: tuple[str, ...] = ()  # one worker per device, e.g. ("cuda:0", "cuda:1")
    engine: str = "local"  # local | ray
    ray_address: str | None = None  # None: a local Ray, or RAY_ADDRESS if set
    ray_timeout: float = 600.0  # seconds for every Ray actor to be placed and load the model
    long_text: str = "truncate"  # truncate | chunk | error, for texts over max_length tokens
    chunk_overlap: int = 0  # tokens shared by consecutive windows, or passages
    chunk_tokens: int | None = None  # passages as output: one row each, of at most this many
    chunk_boundary: str = (
        "tokens"  # where passages end: tokens | sentence (etl.stages.read.passages)
    )
    chunking: str = "naive"  # passages embedded alone (naive) or pooled from their text's pass
    chunk_layout: str = "rows"  # rows (one a passage) | nested (one an input row, lists)
    # A text of more bytes (UTF-8) is not read into Python, hashed or tokenized: its row gets
    # null vectors, and the shard record says which and why (memory bounded by the job).
    max_text_bytes: int = MAX_TEXT_BYTES
    output_dtypes: tuple[str, ...] = ("float32",)  # each of float32 | float16 | int8 | binary
    truncate_dim: int | None = None  # keep only the first D dimensions
    calibration: str | None = None  # int8: calibration.json of another job, or a Parquet sample
    calibration_rows: int = CALIBRATION_ROWS
    prompt: str | None = None  # prepended to every text
    prompt_name: str | None = None  # one of the model's configured prompts
    task: str | None = None  # query | document: a Router's route, a multi-vector model's side
    sparse_top_k: int | None = None  # sparse models: keep the K largest weights of a row
    trust_remote_code: bool = False  # allow models that ship their own Python code
    backend: str = "auto"  # the model's code: auto | plain-bert | transformers (etl.model.backend)
    store: str | None = None  # the vector store this job consults and adds to; None: its own
    reuse: tuple[str, ...] = ()  # other outputs or stores consulted too (read only)
    no_reuse: bool = False  # embed every row, consult and keep no store

    def locations(self) -> tuple[str, ...]:
        """What the job reads and writes: the inputs, the output, the vector stores (under the
        output unless --store says otherwise); what reader processes open after a fork."""
        return (*self.inputs, self.output_dir, self.store or "", *self.reuse)

    def __post_init__(self) -> None:
        if not self.inputs:
            raise ConfigError("INPUT: give at least one Parquet file, directory or glob")
        if not self.output_dir:
            raise ConfigError("--output: an output directory is required")
        for option, value in (("--text-column", self.text_column), ("--id-column", self.id_column)):
            if not value:
                raise ConfigError(f"{option}: expected a column name, got an empty string")
        if self.text_column == self.id_column:
            raise ConfigError(f"--text-column and --id-column are both {self.text_column!r}")
        _no_duplicates("--keep-column", self.keep_columns)
        if self.id_column in self.keep_columns:
            raise ConfigError(f"--keep-column {self.id_column}: the id column is always kept")
        for pooling in self.poolings:
            if pooling not in POOLINGS:
                raise ConfigError(f"--pooling {pooling}: expected one of {', '.join(POOLINGS)}")
        if not self.layers:
            raise ConfigError("--layer: give at least one hidden-states index")
        _positive("--max-length", self.max_length, allow_none=True)
        _positive("--max-text-bytes", self.max_text_bytes)
        _positive("--batch-size", self.batch_size)
        _positive("--batch-tokens", self.batch_tokens, allow_none=True)
        _positive("--sort-window", self.sort_window)
        _positive("--threads", self.threads, allow_none=True)
        if self.num_workers is not None and self.num_workers < 0:
            raise ConfigError(f"--num-workers: expected 0 or more, got {self.num_workers}")
        if self.dtype not in DTYPES:
            raise ConfigError(f"--dtype {self.dtype}: expected one of {', '.join(DTYPES)}")
        _check_device("--device", self.device)
        for device in self.devices:
            _check_device("--devices", device)
            if device == "auto":
                raise ConfigError("--devices: name each device, e.g. cuda:0,cuda:1")
        _positive("--workers", self.workers)
        if self.devices and self.workers not in (1, len(self.devices)):
            raise ConfigError(
                f"--workers {self.workers} --devices {','.join(self.devices)}: one worker runs "
                "per device; give one of the two"
            )
        if self.engine not in ENGINES:
            raise ConfigError(f"--engine {self.engine}: expected one of {', '.join(ENGINES)}")
        if self.ray_address and self.engine != "ray":
            raise ConfigError("--ray-address goes with --engine ray")
        if not isinstance(self.ray_timeout, (int, float)) or self.ray_timeout <= 0:
            raise ConfigError(f"--ray-timeout: expected seconds above 0, got {self.ray_timeout}")
        if (self.shard_index is None) != (self.num_shards is None):
            raise ConfigError("--shard-index and --num-shards go together")
        if self.num_shards is not None:
            _positive("--num-shards", self.num_shards)
            if not 0 <= self.shard_index < self.num_shards:
                raise ConfigError(
                    f"--shard-index {self.shard_index}: expected 0..{self.num_shards - 1} "
                    f"for --num-shards {self.num_shards}"
                )
        for name in self.keep_columns:
            if name in ROW_COLUMNS:
                raise ConfigError(
                    f"--keep-column {name}: the output has its own {name} column; "
                    "rename the input column"
                )
            if name == self.text_column:
                continue  # copying the text through is allowed
            if name.startswith("emb_"):
                raise ConfigError(f"--keep-column {name}: names starting with emb_ are reserved")
        if self.id_column in ROW_COLUMNS:
            raise ConfigError(
                f"--id-column {self.id_column}: the output has its own {self.id_column} column"
            )
        if self.long_text not in LONG_TEXT:
            raise ConfigError(
                f"--long-text {self.long_text}: expected one of {', '.join(LONG_TEXT)}"
            )
        if not isinstance(self.chunk_overlap, int) or self.chunk_overlap < 0:
            raise ConfigError(
                f"--chunk-overlap: expected 0 or more tokens, got {self.chunk_overlap}"
            )
        if self.chunk_overlap and self.long_text != "chunk" and self.chunk_tokens is None:
            raise ConfigError("--chunk-overlap goes with --chunk-tokens or --long-text chunk")
        _positive("--chunk-tokens", self.chunk_tokens, allow_none=True)
        if self.chunk_boundary != "tokens" and self.chunk_tokens is None:
            raise ConfigError("--chunk-boundary goes with --chunk-tokens")
        if self.chunking not in CHUNKING:
            raise ConfigError(f"--chunking {self.chunking}: expected one of {', '.join(CHUNKING)}")
        if self.chunking != "naive" and self.chunk_tokens is None:
            raise ConfigError(f"--chunking {self.chunking} goes with --chunk-tokens")
        if self.chunk_layout != "rows" and self.chunk_tokens is None:
            raise ConfigError("--chunk-layout goes with --chunk-tokens")
        if self.chunk_tokens is not None:
            if self.long_text == "chunk":
                raise ConfigError(
                    "--chunk-tokens and --long-text chunk: give one (passages as rows, or one "
                    "vector a row from its windows)"
                )
            if self.chunk_overlap >= self.chunk_tokens:
                raise ConfigError(
                    f"--chunk-overlap {self.chunk_overlap}: must be less than --chunk-tokens "
                    f"{self.chunk_tokens}"
                )
            if self.chunk_boundary not in CHUNK_BOUNDARIES:
                raise ConfigError(
                    f"--chunk-boundary {self.chunk_boundary}: expected one of "
                    + ", ".join(CHUNK_BOUNDARIES)
                )
            if self.chunk_layout not in CHUNK_LAYOUTS:
                raise ConfigError(
                    f"--chunk-layout {self.chunk_layout}: expected one of "
                    + ", ".join(CHUNK_LAYOUTS)
                )
            named = (self.id_column, self.text_column, *self.keep_columns)
            clash = [c for c in (*CHUNK_COLUMNS, CHUNK_SPANS) if c in named]
            if clash:
                raise ConfigError(
                    f"--chunk-tokens: the output has its own {clash[0]} column; rename the "
                    "input's (--id-column, --text-column, --keep-column)"
                )
        if not self.output_dtypes:
            raise ConfigError("--output-dtype: give at least one of " + ", ".join(OUTPUT_DTYPES))
        for dtype in self.output_dtypes:
            if dtype not in OUTPUT_DTYPES:
                raise ConfigError(
                    f"--output-dtype {dtype}: expected one of {', '.join(OUTPUT_DTYPES)}"
                )
        _no_duplicates("--output-dtype", self.output_dtypes)
        _positive("--truncate-dim", self.truncate_dim, allow_none=True)
        if self.calibration and "int8" not in self.output_dtypes:
            raise ConfigError("--calibration goes with --output-dtype int8")
        _positive("--calibration-rows", self.calibration_rows)
        if self.prompt is not None and self.prompt_name is not None:
            raise ConfigError("--prompt and --prompt-name: give one of the two")
        if self.task is not None and self.task not in TASKS:
            raise ConfigError(f"--task {self.task}: expected one of {', '.join(TASKS)}")
        _positive("--sparse-top-k", self.sparse_top_k, allow_none=True)
        if self.no_reuse and (self.reuse or self.store):
            given = "--reuse" if self.reuse else "--store"
            raise ConfigError(f"--no-reuse and {given}: give one of the two")
        refused = unstorable(tokens="tokens" in self.poolings)
        if refused is not None and (self.reuse or self.store):
            given = "--reuse" if self.reuse else "--store"
            raise ConfigError(
                f"--pooling tokens {given}: {refused.what} are not stored, so a job with them "
                "embeds every row"
            )
        for option, value in (("--store", self.store), *(("--reuse", r) for r in self.reuse)):
            if value is not None and not value:
                raise ConfigError(f"{option}: expected a path or URI, got an empty string")
        packed = [d for d in self.output_dtypes if d in ("int8", "binary")]
        if "tokens" in self.poolings and packed:
            raise ConfigError(
                f"--pooling tokens --output-dtype {packed[0]}: token vectors are stored as "
                "float32 or float16"
            )
        if self.num_workers and not fork_safe(self.locations()):
            raise ConfigError(
                f"--num-workers {self.num_workers}: reader processes are forked, and the obstore "
                "client that az:// and gs:// go through does not survive a fork; use "
                "--num-workers 0 (a reader thread)"
            )


def _check_device(option: str, device: str) -> None:
    base, _, index = device.partition(":")
    if (
        base not in ("auto", "cpu", "cuda", "mps")
        or (index and not index.isdigit())
        or (index and base != "cuda")
    ):
        raise ConfigError(f"{option} {device}: expected {DEVICES_HELP}")


def _positive(option: str, value: int | None, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if not isinstance(value, int) or value < 1:
        raise ConfigError(f"{option}: expected a whole number of at least 1, got {value}")


def _no_duplicates(option: str, values: tuple[str, ...]) -> None:
    seen = set()
    for value in values:
        if value in seen:
            raise ConfigError(f"{option} {value}: given twice")
        seen.add(value)
