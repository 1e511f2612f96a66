"""The records that cross stage boundaries: shards, batches, reader messages, shard results.

Worker -> reader: a ShardFeed hands out shards the worker holds (readers never claim one).
Reader -> worker: ShardStart, then Batch (the first of each window carries its WindowInfo),
then ShardEnd or ShardFailed. Worker -> engine -> job: one ShardRecord per shard, and a
WorkerInfo per worker that loaded the model.
"""

from __future__ import annotations

import enum
import multiprocessing
import queue
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # keep torch and pyarrow out of planning commands
    import numpy as np
    import pyarrow as pa
    import torch


class ShardStatus(str, enum.Enum):
    """Where a shard stands. Values are what the manifest, the summary and `status` show."""

    DONE = "done"
    FAILED = "failed"
    SKIPPED = "skipped"  # done by an earlier run
    ELSEWHERE = "claimed_elsewhere"  # another process holds it
    RUNNING = "running"
    PENDING = "pending"

    def __str__(self) -> str:
        return self.value


REFUSED_SHOWN = 10  # refused rows a shard record names one by one (all are counted)


@dataclass(frozen=True)
class Shard:
    """One input file and where its output goes; the unit of work, output, retry and resume."""

    input_path: str  # a local path or a URI
    rel_name: str  # path relative to its input root: names the manifest record and the claim
    output_key: str  # where its output goes, relative to --output
    input_size: int | None = None  # as listed when the inputs were found (None: not known)
    input_mtime_ns: int | None = None


@dataclass
class WindowInfo:
    """Sent with the first batch of each window so the sink can assemble it in input order."""

    index: int  # window number inside the shard, from 0
    num_rows: int
    num_batches: int  # batches this window was cut into (at least 1, possibly empty)
    passthrough: pa.RecordBatch  # id and kept columns, in input order
    null_rows: int = 0  # rows whose text is null: no batch carries them
    refused_rows: int = 0  # rows whose text is over --max-text-bytes: no batch carries them
    refused: tuple[str, ...] = ()  # why, for the first REFUSED_SHOWN of them
    real_tokens: int = 0  # tokens fed to the model (after truncation)
    truncated_rows: int = 0
    chunked_rows: int = 0  # rows split into several windows (--long-text chunk)
    n_tokens: np.ndarray | None = None  # (num_rows,) tokens before truncation; -1 = null text
    multi: np.ndarray | None = None  # (num_rows,) bool: row has several windows; None = none
    drop_head: np.ndarray | None = None  # (num_rows,) tokens a later window repeats, per row
    drop_tail: int = 0  # special tokens at the end of every window
    texts_embedded: int = 0  # rows whose text goes through the model (once per text)
    rows_reused: dict[str, int] | None = None  # rows that copy a vector, by source
    texts_not_fetched: int = 0  # found in a store, embedded: a fetch would have cost more
    reuse: Any = None  # etl.reuse.shard.WindowReuse: how the rows not embedded get vectors

    @property
    def rows_at_start(self) -> int:
        """Rows the window's first batch completes: null rows, rows that copy a vector, and
        rows embedded in several windows (their sequences are not counted one by one)."""
        multi = int(self.multi.sum()) if self.multi is not None else 0
        reused = sum((self.rows_reused or {}).values())
        return self.null_rows + self.refused_rows + reused + multi


@dataclass
class Batch:
    """A padded model input: B sequences of length T, each sequence mapped to its row."""

    shard_index: int
    window_index: int
    rows: torch.Tensor  # (B,) row position inside the window, one per sequence
    input_ids: torch.Tensor  # (B, T) int64
    attention_mask: torch.Tensor  # (B, T) int64, 1 = real token
    window: WindowInfo | None = None  # set on the first batch of a window only
    parts: torch.Tensor | None = None  # (B,) window number within its row (--long-text chunk)
    keep: torch.Tensor | None = None  # (B, T) bool: the tokens a token column outputs (None:
    # the real ones; a multi-vector model leaves its skiplist out and keeps query expansion)
    spans: torch.Tensor | None = None  # (Q, 3) int64, --chunking late: each output vector
    # pooled from sequence spans[:, 0], tokens spans[:, 1] to spans[:, 2]; rows is then (Q,)

    def pin_memory(self) -> Batch:
        """Called by DataLoader(pin_memory=True) so host-to-GPU copies can be asynchronous."""
        self.input_ids = self.input_ids.pin_memory()
        self.attention_mask = self.attention_mask.pin_memory()
        return self

    # From a reader process the tensors travel as numpy arrays, by value in the pickle. torch's
    # own reduction hands each tensor over as a file descriptor, through a socket handshake
    # with a thread of the reader (multiprocessing's resource_sharer): an interrupt that cut a
    # handshake short made that thread print a traceback (ConnectionResetError), and it cost a
    # handshake per tensor besides.
    def __getstate__(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        import torch

        fields = vars(self)
        arrays = {k: v.numpy() for k, v in fields.items() if isinstance(v, torch.Tensor)}
        return arrays, {k: v for k, v in fields.items() if k not in arrays}

    def __setstate__(self, state: tuple[dict[str, np.ndarray], dict[str, Any]]) -> None:
        import torch

        arrays, others = state
        vars(self).update(others)
        vars(self).update({k: torch.from_numpy(v) for k, v in arrays.items()})

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
class ShardRecord:
    """One shard's state, the only record of it: what its worker reports, what the manifest
    keeps (etl.state.manifest writes it as JSON), what the summary and `status` show."""

    shard: Shard
    status: ShardStatus
    fingerprint: str = ""  # the job's, for a record in the manifest
    rows_in: int = 0  # input rows
    rows_out: int = 0  # rows in the published output
    null_rows: int = 0
    truncated_rows: int = 0
    chunked_rows: int = 0
    refused_rows: int = 0  # texts over --max-text-bytes: null vectors
    refused: list[str] = field(default_factory=list)  # why, the first REFUSED_SHOWN of them
    tokens: int = 0  # real tokens fed to the model
    padded_tokens: int = 0  # tokens the model computed, padding included
    device_seconds: float = 0.0  # the GPU's time on its batches, by CUDA events (CPU: 0)
    seconds: float = 0.0
    error: str | None = None
    texts_embedded: int = 0  # texts that went through the model
    rows_reused: dict[str, int] = field(default_factory=dict)  # by source: shard, job, earlier
    texts_not_fetched: int = 0  # found in a store but embedded: fetching would have cost more
    output: str = ""  # the output's URI
    input_size: int | None = None  # the input as it was opened (the shard's own may be older)
    input_mtime_ns: int | None = None
    host: str = ""
    pid: int = 0
    version: str = ""
    started_at: float | None = None
    finished_at: float = 0.0


@dataclass(frozen=True)
class WorkerInfo:
    """A worker that loaded the model: which process, where, and how long loading took."""

    pid: int
    device: str
    load_seconds: float
    host: str = ""


ASK = "ask"
STOP = "stop"


class ShardFeed:
    """Which shard a reader reads next: it asks when it is ready for another, and the worker's
    lease (etl.state.lease) answers with one it has claimed, or None when it has no more. So
    a reader holds at most the shard it reads, and a busy worker takes none an idle one could.
    Two queues, requests and answers; shared with forked readers when ``processes``."""

    def __init__(self, processes: bool) -> None:
        if processes:
            context = multiprocessing.get_context("fork")
            self.requests: Any = context.Queue()
            self.answers: Any = context.Queue()
        else:
            self.requests, self.answers = queue.Queue(), queue.Queue()

    def next(self) -> int | None:
        """Reader side: the number of the next shard to read, None when there is none."""
        self.requests.put(ASK)
        return self.answers.get()

    def serve(self, choose: Any) -> None:
        """Owner side, in a thread: answer each request with ``choose()`` until stopped."""
        while self.requests.get() != STOP:
            self.answers.put(choose())

    def stop(self) -> None:
        """Make ``serve`` return once it has answered the requests already made."""
        self.requests.put(STOP)

    def wake(self, readers: int) -> None:
        """After ``serve`` returned: answer None to readers still waiting (and later ones)."""
        for _ in range(readers):
            self.answers.put(None)
