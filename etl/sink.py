"""Write one shard's output: explicit schema, rows in input order, temp file then rename."""

from __future__ import annotations

import contextlib
import json
import os
from concurrent.futures import Executor, Future
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from etl import __version__
from etl.contract import OutputSpec, Shard, WindowInfo

METADATA_PREFIX = "embed_etl."


def output_schema(input_schema: pa.Schema, spec: OutputSpec, shard: Shard) -> pa.Schema:
    """id column, kept columns (types as in the input), then one vector column per output."""
    fields = [input_schema.field(spec.id_column)]
    fields += [input_schema.field(name) for name in spec.keep_columns]
    fields += [pa.field(c.name, pa.list_(pa.float32(), spec.dim)) for c in spec.columns]
    return pa.schema(fields, metadata=file_metadata(spec, shard))


def file_metadata(spec: OutputSpec, shard: Shard) -> dict[str, str]:
    """Key-value metadata that says how every vector in the file was made."""
    model = spec.model
    values = {
        "version": __version__,
        "fingerprint": spec.fingerprint,
        "input": shard.rel_name,
        "model": model.name,
        "model_type": model.model_type,
        "model_config_sha256": model.config_sha256,
        "num_layers": str(model.num_layers),
        "dim": str(spec.dim),
        "pooling": ",".join(dict.fromkeys(c.pooling for c in spec.columns)),
        "layers": ",".join(str(k) for k in dict.fromkeys(c.layer for c in spec.columns)),
        "columns": json.dumps([[c.name, c.pooling, c.layer] for c in spec.columns]),
        "normalize": json.dumps(spec.normalize),
        "max_length": str(spec.max_length),
        "dtype": spec.dtype,
        "text_column": spec.text_column,
    }
    return {METADATA_PREFIX + key: value for key, value in values.items()}


class _Window:
    """One window's vectors while its batches arrive; rows are filled by position."""

    def __init__(self, info: WindowInfo, spec: OutputSpec) -> None:
        self.info = info
        self.vectors = {
            c.name: np.zeros((info.num_rows, spec.dim), dtype=np.float32) for c in spec.columns
        }
        self.filled = np.zeros(info.num_rows, dtype=bool)
        self.batches_seen = 0

    @property
    def complete(self) -> bool:
        return self.batches_seen == self.info.num_batches


class ShardWriter:
    """Collects a shard's windows and writes them, in input order, to a temporary file.

    Arrow conversion and Parquet writes run on the ``io`` executor (one thread, so in order),
    off the thread that drives the model. ``commit`` checks the file and renames it into place,
    so a final name never holds a partial file; ``abort`` removes the temporary file. Both
    return futures that complete once everything submitted before them is done.
    """

    def __init__(
        self,
        shard: Shard,
        spec: OutputSpec,
        input_schema: pa.Schema,
        io: Executor | None = None,
    ) -> None:
        self.shard = shard
        self.spec = spec
        self.schema = output_schema(input_schema, spec, shard)
        final = Path(shard.output_path)
        final.parent.mkdir(parents=True, exist_ok=True)
        # We hold the shard's claim, so any other temporary file for it was left by a process
        # that died (SIGKILL, power loss): remove it.
        for leftover in final.parent.glob(f".{final.name}.inprogress-*"):
            leftover.unlink(missing_ok=True)
        self.temp_path = final.parent / f".{final.name}.inprogress-{os.getpid()}"
        passthrough = [spec.id_column, *spec.keep_columns]
        self._writer = pq.ParquetWriter(
            self.temp_path,
            self.schema,
            use_dictionary=passthrough,
            write_statistics=passthrough,
        )
        self._io = io or InlineExecutor()
        self._windows: dict[int, _Window] = {}
        self._next_window = 0
        self._error: BaseException | None = None  # first failed write, raised by commit
        self.rows_written = 0

    def add(
        self, window_index: int, info: WindowInfo | None, rows: np.ndarray, vectors: dict
    ) -> None:
        """Place a batch's vectors (name -> (B, H)) at their rows; write windows that are done."""
        if info is not None:
            self._windows[window_index] = _Window(info, self.spec)
        window = self._windows[window_index]
        if len(rows):
            for name, values in vectors.items():
                window.vectors[name][rows] = values
            window.filled[rows] = True
        window.batches_seen += 1
        while self._next_window in self._windows and self._windows[self._next_window].complete:
            self._io.submit(self._write, self._windows.pop(self._next_window))
            self._next_window += 1

    def _write(self, window: _Window) -> None:
        if self._error is not None:
            return
        try:
            nulls = pa.array(~window.filled) if not window.filled.all() else None
            arrays = list(window.info.passthrough.columns)
            for column in self.spec.columns:
                flat = pa.array(window.vectors[column.name].reshape(-1))
                arrays.append(pa.FixedSizeListArray.from_arrays(flat, self.spec.dim, mask=nulls))
            batch = pa.RecordBatch.from_arrays(arrays, schema=self.schema)
            self._writer.write_batch(batch)
            self.rows_written += batch.num_rows
        except BaseException as exc:  # noqa: BLE001 - kept, and raised by commit
            self._error = exc

    def commit(self, expected_rows: int) -> Future:
        """Once every window is written: close, check rows and schema, rename into place."""
        unfinished = sorted(self._windows)
        return self._io.submit(self._commit, expected_rows, unfinished)

    def _commit(self, expected_rows: int, unfinished: list[int]) -> None:
        if self._error is not None:
            raise self._error
        if unfinished:
            raise RuntimeError(f"{self.shard.input_path}: windows never completed: {unfinished}")
        self._writer.close()
        written = pq.read_metadata(self.temp_path)
        if written.num_rows != expected_rows or self.rows_written != expected_rows:
            raise RuntimeError(
                f"{self.temp_path}: wrote {written.num_rows} rows, expected {expected_rows}"
            )
        if not written.schema.to_arrow_schema().equals(self.schema, check_metadata=False):
            raise RuntimeError(f"{self.temp_path}: schema differs from the planned one")
        _fsync(self.temp_path)
        os.replace(self.temp_path, self.shard.output_path)
        _fsync(Path(self.shard.output_path).parent)

    def abort(self) -> Future:
        """Drop the temporary file; the final name is untouched."""
        return self._io.submit(self._abort)

    def _abort(self) -> None:
        with contextlib.suppress(Exception):  # already failing; removing the file matters
            self._writer.close()
        self.temp_path.unlink(missing_ok=True)


class InlineExecutor(Executor):
    """Runs each task at once in the calling thread (for callers that want no thread)."""

    def submit(self, fn, /, *args, **kwargs) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # noqa: BLE001 - delivered through the future
            future.set_exception(exc)
        return future


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
