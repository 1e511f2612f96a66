"""Write one shard's output: explicit schema, rows in input order, published only when whole;
then the vectors it computed, as one segment of the vector store (etl.reuse)."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable
from concurrent.futures import Executor, Future

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from etl.config import CHUNK_COLUMNS
from etl.contract import Shard, WindowInfo
from etl.reuse.hashing import HASH_DTYPE
from etl.reuse.publish import Publisher
from etl.reuse.shard import EARLIER
from etl.reuse.spill import NewVectors
from etl.spec import METADATA_PREFIX, OutputSpec
from etl.stages.write.nested import Nest, nested_schema
from etl.stages.write.vectors import arrow_type, sparse_type
from etl.stages.write.window import TokenInput, Window
from etl.storage.base import Storage
from etl.version import __version__

log = logging.getLogger(__name__)

TOKEN_IDS = "token_ids"  # with token outputs: the ids of the tokens, aligned with their vectors


def output_schema(input_schema: pa.Schema, spec: OutputSpec, shard: Shard) -> pa.Schema:
    """id column, kept columns (types as in the input), n_tokens, truncated, token_ids (with
    token outputs), then one column per (pooling, layer); --chunk-layout nested: lists."""
    fields = [input_schema.field(spec.id_column)]
    fields += [input_schema.field(name) for name in spec.keep_columns]
    if spec.chunk_tokens is not None:  # each passage: its number in its row, its span
        fields += [pa.field(name, pa.int32()) for name in CHUNK_COLUMNS]
    fields += [pa.field("n_tokens", pa.int32()), pa.field("truncated", pa.bool_())]
    if spec.has_tokens:
        fields.append(pa.field(TOKEN_IDS, pa.list_(pa.int32())))
    for c in spec.columns:
        for name, dtype in spec.stored(c):
            if c.tokens:
                kind = pa.list_(arrow_type(dtype, min(spec.truncate_dim or c.dim, c.dim)))
            elif c.sparse:
                kind = sparse_type(dtype)
            else:
                kind = arrow_type(dtype, spec.out_dim(c))
            fields.append(pa.field(name, kind))
    schema = pa.schema(fields, metadata=file_metadata(spec, shard))
    return nested_schema(schema) if spec.nested else schema


def file_metadata(spec: OutputSpec, shard: Shard) -> dict[str, str]:
    """Key-value metadata that says how every vector in the file was made."""
    model = spec.model
    recipe = model.recipe
    values = {
        "version": __version__,
        "fingerprint": spec.fingerprint,
        "input": shard.rel_name,
        "model": model.name,
        "model_type": model.model_type,
        "model_config_sha256": model.config_sha256,
        "model_weights_sha256": model.weights_sha256,
        "model_tokenizer_sha256": model.tokenizer_sha256,
        "backend": spec.backend.describe(),
        "num_layers": str(model.num_layers),
        "hidden_size": str(model.hidden_size),
        "recipe": "model" if recipe.from_model else "default",
        "pooling": ",".join(dict.fromkeys("+".join(c.pooling) for c in spec.columns)),
        "layers": ",".join(str(k) for k in dict.fromkeys(c.layer for c in spec.columns)),
        "columns": json.dumps([c.describe() for c in spec.columns]),
        "normalize": json.dumps(spec.normalize),
        "max_length": str(spec.max_length),
        "dtype": spec.dtype,
        "text_column": spec.text_column,
        "long_text": spec.long_text,
        "output_dtype": ",".join(spec.output_dtypes),
        "prompt": spec.prompt,
    }
    if recipe.from_model:
        values["dense"] = json.dumps([[d.path, d.out_features, d.activation] for d in recipe.dense])
    if spec.prompt_name:
        values["prompt_name"] = spec.prompt_name
    if recipe.kind != "dense":
        values["kind"] = recipe.kind
        values["task"] = recipe.task or ""
        values["route"] = recipe.route or ""
        values["vocab_size"] = str(model.vocab_size)
    if spec.top_k is not None:
        values["sparse_top_k"] = str(spec.top_k)
    if spec.long_text == "chunk":
        values["chunk_overlap"] = str(spec.chunk_overlap)
    if spec.truncate_dim is not None:
        values["truncate_dim"] = str(spec.truncate_dim)
    if spec.int8:
        values["int8_ranges"] = json.dumps(spec.calibration["columns"], sort_keys=True)
        values["int8_formula"] = "x = (code + 128) * (max - min) / 255 + min"
        values["calibration"] = spec.calibration_source
    return {METADATA_PREFIX + key: value for key, value in values.items()}


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
        storage: Storage,
        io: Executor | None = None,
        store: Publisher | None = None,
        finished: Callable[[bool], None] | None = None,
        input_rows: int = 0,  # from the input's footer: the nested layout's row count
    ) -> None:
        self.shard = shard
        self.spec = spec
        self.schema = output_schema(input_schema, spec, shard)
        self.nest = Nest(self.schema, spec, input_rows) if spec.nested else None
        self.store = store
        # Said once the shard is published or dropped: whether its segment is in the store.
        self.finished = finished or (lambda stored: None)
        self.spill = NewVectors(store.target.store.layout) if store is not None else None
        self._used: list[np.ndarray] = []  # hashes served from earlier runs' segments
        self.upload = storage.upload(shard.output_key)  # registered before the file exists
        passthrough = spec.passthrough
        dictionary = list(passthrough)
        # Parquet has no 8-bit physical type: without a dictionary (at most 256 values, indices
        # bit-packed to 8 bits) each byte would be stored as a 4-byte integer.
        dictionary += [
            f"{name}.list.element" + ".list.element" * spec.nested
            for c in spec.columns
            for name, dtype in spec.stored(c)
            if dtype in ("int8", "binary")
        ]
        self._writer = pq.ParquetWriter(
            self.upload.target,
            self.schema,
            use_dictionary=dictionary,
            write_statistics=passthrough,
        )
        self._io = io or InlineExecutor()
        self._windows: dict[int, Window] = {}
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
        tokens: TokenInput | None = None,
    ) -> None:
        """Place a batch's vectors (name -> (B, D)) at their rows; write windows that are done.

        ``weights`` (B,) are the sequences' token counts, used to join a chunked row's windows;
        ``tokens`` the batch's ids, mask and window numbers, for token outputs.
        """
        if info is not None:
            self._windows[window_index] = Window(info, self.spec, self.spill)
        window = self._windows[window_index]
        if len(rows):
            window.add(rows, vectors, weights, tokens)
        window.batches_seen += 1
        while self._next_window in self._windows and self._windows[self._next_window].complete:
            self._io.submit(self._write, self._windows.pop(self._next_window))
            self._next_window += 1

    def _write(self, window: Window) -> None:
        if self._error is not None:
            return
        try:
            window.assemble()
            info = window.info
            plan = info.reuse
            if plan is not None and len(plan.stored_rows):
                earlier = plan.kind[plan.stored_rows] == EARLIER
                self._used.append(self.spill.layout.hashes(plan.stored[earlier]))
            arrays = []  # each row's, after the passthrough columns
            n_tokens = info.n_tokens
            null_text = n_tokens < 0
            arrays.append(pa.array(n_tokens.astype(np.int32), mask=null_text))
            limit = self.spec.max_length if self.spec.long_text != "chunk" else np.inf
            arrays.append(pa.array(n_tokens > limit, mask=null_text))
            if self.spec.has_tokens:
                arrays.append(window.finished_token_ids())
            for column in self.spec.columns:
                arrays += window.finished(column.name)  # one array per --output-dtype
            if self.nest is not None:  # each input row whose passages are all in, as one row
                self._put(self.nest.add(info.passthrough, arrays))
            else:
                arrays = [*info.passthrough.columns, *arrays]
                self._put(pa.RecordBatch.from_arrays(arrays, schema=self.schema))
        except BaseException as exc:  # noqa: BLE001 - kept, and raised by commit
            self._error = exc

    def _put(self, batch: pa.RecordBatch | None) -> None:
        if batch is not None:
            self._writer.write_batch(batch)
            self.rows_written += batch.num_rows

    def rows_out(self, sent_rows: int) -> int:
        """The rows the published file holds: those the reader sent (passages with
        --chunk-tokens), or with --chunk-layout nested, one per input row."""
        return sent_rows if self.nest is None else self.nest.input_rows

    def commit(self, expected_rows: int) -> Future:
        """Once every window is written: close, check rows and schema, rename into place."""
        unfinished = sorted(self._windows)
        return self._io.submit(self._commit, expected_rows, unfinished)

    def _commit(self, expected_rows: int, unfinished: list[int]) -> None:
        stored = False
        try:
            stored = self._publish(expected_rows, unfinished)
        finally:
            self.finished(stored)

    def _publish(self, expected_rows: int, unfinished: list[int]) -> bool:
        if self._error is not None:
            raise self._error
        if unfinished:
            raise RuntimeError(f"{self.shard.input_path}: windows never completed: {unfinished}")
        if self.nest is not None:  # the row held for a next window had none
            self._put(self.nest.finish(expected_rows, self.upload.key))
            expected_rows = self.nest.input_rows
        self._writer.close()
        target = self.upload.target
        # A local file is read back; an object being uploaded is checked by its writer's count.
        written = (
            pq.read_metadata(target) if isinstance(target, str) else self._writer.writer.metadata
        )
        where = self.upload.key
        if written.num_rows != expected_rows or self.rows_written != expected_rows:
            raise RuntimeError(f"{where}: wrote {written.num_rows} rows, expected {expected_rows}")
        if not written.schema.to_arrow_schema().equals(self.schema, check_metadata=False):
            raise RuntimeError(f"{where}: schema differs from the planned one")
        self.upload.publish()
        return self._add_to_store() if self.store is not None else False

    def _add_to_store(self) -> bool:
        """The shard's new vectors into the store, once its output is published; whether they
        are there. The store is a cache: a failure here costs later runs some embedding, never
        this shard."""
        used = np.concatenate(self._used) if self._used else np.zeros(0, HASH_DTYPE)
        try:
            return self.store.publish(self.shard, self.spill, used)
        except Exception as exc:  # noqa: BLE001 - logged; the shard's output is whole
            log.warning(
                "%s: vectors not added to %s: %s",
                self.shard.rel_name,
                self.store.target.store.uri,
                exc,
            )
            return False
        finally:
            self.spill.close()

    def abort(self) -> Future:
        """Drop the temporary file; the final name is untouched."""
        return self._io.submit(self._abort)

    def _abort(self) -> None:
        with contextlib.suppress(Exception):  # already failing; removing the file matters
            self._writer.close()
        self.upload.discard()
        if self.spill is not None:
            self.spill.close()
        self.finished(False)


class InlineExecutor(Executor):
    """Runs each task at once in the calling thread (for callers that want no thread)."""

    def submit(self, fn, /, *args, **kwargs) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # noqa: BLE001 - delivered through the future
            future.set_exception(exc)
        return future
