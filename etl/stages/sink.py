"""Write one shard's output: explicit schema, rows in input order, published only when whole."""

from __future__ import annotations

import contextlib
import json
from concurrent.futures import Executor, Future

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from etl.contract import Shard, WindowInfo
from etl.spec import METADATA_PREFIX, OutputSpec
from etl.stages.vectors import arrow_type, encode, finish, to_arrow
from etl.storage import LocalStorage
from etl.version import __version__


def output_schema(input_schema: pa.Schema, spec: OutputSpec, shard: Shard) -> pa.Schema:
    """id column, kept columns (types as in the input), n_tokens, truncated, then one vector
    column per (pooling, layer)."""
    fields = [input_schema.field(spec.id_column)]
    fields += [input_schema.field(name) for name in spec.keep_columns]
    fields += [pa.field("n_tokens", pa.int32()), pa.field("truncated", pa.bool_())]
    kind = arrow_type(spec.output_dtype, spec.out_dim)
    fields += [pa.field(c.name, kind) for c in spec.columns]
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
        "long_text": spec.long_text,
        "output_dtype": spec.output_dtype,
        "output_dim": str(spec.out_dim),
    }
    if spec.long_text == "chunk":
        values["chunk_overlap"] = str(spec.chunk_overlap)
    if spec.truncate_dim is not None:
        values["truncate_dim"] = str(spec.truncate_dim)
    if spec.output_dtype == "int8":
        values["int8_ranges"] = json.dumps(spec.calibration["columns"], sort_keys=True)
        values["int8_formula"] = "x = (code + 128) * (max - min) / 255 + min"
        values["calibration"] = spec.calibration_source
    return {METADATA_PREFIX + key: value for key, value in values.items()}


class _Window:
    """One window's vectors while its batches arrive; rows are filled by position.

    A row split into several windows (--long-text chunk) is joined here: the token-weighted
    mean of its window vectors, or their element-wise max for max pooling.
    """

    def __init__(self, info: WindowInfo, spec: OutputSpec) -> None:
        self.info = info
        self.spec = spec
        self.vectors = {
            c.name: np.zeros((info.num_rows, spec.dim), dtype=np.float32) for c in spec.columns
        }
        self.maxed = {c.name for c in spec.columns if c.pooling == "max"}
        self.weight = None
        if info.multi is not None:
            self.weight = np.zeros(info.num_rows, dtype=np.float64)
            for name in self.maxed:
                self.vectors[name][info.multi] = -np.inf
        self.filled = np.zeros(info.num_rows, dtype=bool)
        self.batches_seen = 0

    @property
    def complete(self) -> bool:
        return self.batches_seen == self.info.num_batches

    def add(self, rows: np.ndarray, vectors: dict, weights: np.ndarray | None) -> None:
        multi = self.info.multi
        if multi is None or not multi[rows].any():
            for name, values in vectors.items():
                self.vectors[name][rows] = values
        else:
            joined = multi[rows]  # (B,) sequences that are one window of a chunked row
            alone = ~joined
            w = weights[joined].astype(np.float32)[:, None]  # (b, 1) tokens per window
            for name, values in vectors.items():
                self.vectors[name][rows[alone]] = values[alone]
                if name in self.maxed:
                    np.maximum.at(self.vectors[name], rows[joined], values[joined])
                else:
                    np.add.at(self.vectors[name], rows[joined], values[joined] * w)
            np.add.at(self.weight, rows[joined], weights[joined])
        self.filled[rows] = True

    def finished(self, name: str) -> np.ndarray:
        """(num_rows, D) the column's vectors as stored: joined, truncated, normalized, encoded."""
        values = self.vectors[name]
        multi = self.info.multi
        if multi is not None and multi.any() and name not in self.maxed:
            values[multi] /= self.weight[multi, None].astype(np.float32)
        if not self.filled.all():
            values[~self.filled] = 0.0  # null rows: masked out, but keep the values finite
        spec = self.spec
        values = finish(values, spec.truncate_dim, spec.normalize)
        ranges = spec.calibration["columns"][name] if spec.output_dtype == "int8" else None
        return encode(values, spec.output_dtype, ranges)


class ShardWriter:
    """Collects a shard's windows and writes them, in input order, to an upload.

    Arrow conversion and Parquet writes run on the ``io`` executor (one thread, so in order),
    off the thread that drives the model. ``commit`` checks the file and publishes it, so the
    output's key never holds a partial file; ``abort`` discards it. Both return futures that
    complete once everything submitted before them is done.
    """

    def __init__(
        self,
        shard: Shard,
        spec: OutputSpec,
        input_schema: pa.Schema,
        storage: LocalStorage,
        io: Executor | None = None,
    ) -> None:
        self.shard = shard
        self.spec = spec
        self.schema = output_schema(input_schema, spec, shard)
        # We hold the shard's claim, so any other upload of it was left by a process that died
        # (SIGKILL, power loss): remove it.
        storage.discard_stale_uploads(shard.output_key)
        self.upload = storage.upload(shard.output_key)  # registered before the file exists
        passthrough = [spec.id_column, *spec.keep_columns]
        dictionary = list(passthrough)
        if spec.output_dtype in ("int8", "binary"):
            # Parquet has no 8-bit physical type: without a dictionary (at most 256 values,
            # indices bit-packed to 8 bits) each byte would be stored as a 4-byte integer.
            dictionary += [f"{c.name}.list.element" for c in spec.columns]
        self._writer = pq.ParquetWriter(
            self.upload.path,
            self.schema,
            use_dictionary=dictionary,
            write_statistics=passthrough,
        )
        self._io = io or InlineExecutor()
        self._windows: dict[int, _Window] = {}
        self._next_window = 0
        self._error: BaseException | None = None  # first failed write, raised by commit
        self.rows_written = 0

    def add(
        self,
        window_index: int,
        info: WindowInfo | None,
        rows: np.ndarray,
        vectors: dict,
        weights: np.ndarray | None = None,
    ) -> None:
        """Place a batch's vectors (name -> (B, H)) at their rows; write windows that are done.

        ``weights`` (B,) are the sequences' token counts, used to join a chunked row's windows.
        """
        if info is not None:
            self._windows[window_index] = _Window(info, self.spec)
        window = self._windows[window_index]
        if len(rows):
            window.add(rows, vectors, weights)
        window.batches_seen += 1
        while self._next_window in self._windows and self._windows[self._next_window].complete:
            self._io.submit(self._write, self._windows.pop(self._next_window))
            self._next_window += 1

    def _write(self, window: _Window) -> None:
        if self._error is not None:
            return
        try:
            nulls = pa.array(~window.filled) if not window.filled.all() else None
            info = window.info
            arrays = list(info.passthrough.columns)
            n_tokens = info.n_tokens
            null_text = n_tokens < 0
            arrays.append(pa.array(n_tokens.astype(np.int32), mask=null_text))
            limit = self.spec.max_length if self.spec.long_text != "chunk" else np.inf
            arrays.append(pa.array(n_tokens > limit, mask=null_text))
            for column in self.spec.columns:
                arrays.append(to_arrow(window.finished(column.name), nulls))
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
        written = pq.read_metadata(self.upload.path)
        if written.num_rows != expected_rows or self.rows_written != expected_rows:
            raise RuntimeError(
                f"{self.upload.path}: wrote {written.num_rows} rows, expected {expected_rows}"
            )
        if not written.schema.to_arrow_schema().equals(self.schema, check_metadata=False):
            raise RuntimeError(f"{self.upload.path}: schema differs from the planned one")
        self.upload.publish()

    def abort(self) -> Future:
        """Drop the temporary file; the final name is untouched."""
        return self._io.submit(self._abort)

    def _abort(self) -> None:
        with contextlib.suppress(Exception):  # already failing; removing the file matters
            self._writer.close()
        self.upload.discard()


class InlineExecutor(Executor):
    """Runs each task at once in the calling thread (for callers that want no thread)."""

    def submit(self, fn, /, *args, **kwargs) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # noqa: BLE001 - delivered through the future
            future.set_exception(exc)
        return future
