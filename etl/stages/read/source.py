"""Stream one shard's rows: pyarrow record batches of only the needed columns."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from etl.errors import InputError
from etl.spec import OutputSpec
from etl.storage import files, is_uri

READ_BUFFER = 1 << 20  # bytes of a local column chunk read at a time
REMOTE_READ_BUFFER = 8 << 20  # of a remote one (one ranged read each)
PRE_BUFFER_BYTES = 64 << 20  # a remote row group up to this size is fetched whole, ahead


def open_shard(path: str, spec: OutputSpec) -> pq.ParquetFile:
    """Open a shard and check that it has the columns the job needs, with usable types.

    A remote shard is opened for random access: the reader fetches the footer, then one row
    group at a time (its column chunks fetched together, ahead of decoding), never the file.
    """
    try:
        parquet = parquet_file(path)
    except FileNotFoundError as exc:
        raise InputError(f"{path}: file not found") from exc
    except (OSError, pa.ArrowException) as exc:
        raise InputError(f"{path}: not a readable Parquet file: {exc}") from exc
    check_columns(parquet.schema_arrow, path, spec)
    return parquet


def parquet_file(path: str) -> pq.ParquetFile:
    """A local path, or a URI opened for random access (row group by row group).

    Column chunks are read a buffer at a time as batches are decoded, never whole: a row group
    of 10^7 rows costs its batches, not its size. A remote file's row groups are fetched whole
    ahead of decoding (pre-buffered, for fewer requests) only where each is at most
    PRE_BUFFER_BYTES."""
    if not is_uri(path):
        return pq.ParquetFile(path, buffer_size=READ_BUFFER, pre_buffer=False)
    source = files.open_input(path)
    parquet = pq.ParquetFile(source, pre_buffer=True)
    meta = parquet.metadata
    largest = max(
        (meta.row_group(g).total_byte_size for g in range(meta.num_row_groups)), default=0
    )
    if largest <= PRE_BUFFER_BYTES:
        return parquet
    source.close()  # opened again to read by buffers, its footer not read twice
    return pq.ParquetFile(
        files.open_input(path), metadata=meta, buffer_size=REMOTE_READ_BUFFER, pre_buffer=False
    )


def check_columns(schema: pa.Schema, path: str, spec: OutputSpec) -> None:
    """Raise InputError naming the file, the column and what it has, when a column is unusable."""
    names = schema.names
    wanted = [
        ("--text-column", spec.text_column),
        ("--id-column", spec.id_column),
        *(("--keep-column", c) for c in spec.keep_columns),
    ]
    for option, column in wanted:
        if column not in names:
            raise InputError(
                f"{path}: no column {column!r} ({option}); the file has: {', '.join(names)}"
            )
    text_type = schema.field(spec.text_column).type
    if not is_text_type(text_type):
        raise InputError(
            f"{path}: column {spec.text_column!r} (--text-column) has type {text_type}; "
            "expected a string column (string, large_string or dictionary of strings)"
        )


def is_text_type(t: pa.DataType) -> bool:
    if pa.types.is_dictionary(t):
        t = t.value_type
    return pa.types.is_string(t) or pa.types.is_large_string(t) or _is_string_view(t)


def _is_string_view(t: pa.DataType) -> bool:
    check = getattr(pa.types, "is_string_view", None)
    return bool(check and check(t))


def iter_windows(
    parquet: pq.ParquetFile, path: str, columns: list[str], window_rows: int
) -> Iterator[pa.RecordBatch]:
    """Yield record batches of window_rows rows (the last one fewer), only the given columns,
    in file order.

    The file is read one row group at a time: a reader over the whole file keeps every row
    group it pre-buffered until it is done (a 1 GB shard cost 1.1 GB), one per row group frees
    each as it goes. Windows are cut across row groups, so their size does not depend on how
    the file was written.
    """
    pending: list[pa.RecordBatch] = []
    held = 0
    try:
        for group in range(parquet.num_row_groups):
            for batch in parquet.iter_batches(
                batch_size=window_rows, columns=columns, row_groups=[group]
            ):
                pending.append(batch)
                held += batch.num_rows
                while held >= window_rows:
                    window, pending = _cut(pending, window_rows)
                    held -= window.num_rows
                    yield window
        if held:
            yield _cut(pending, held)[0]
    except (OSError, pa.ArrowException) as exc:
        raise InputError(f"{path}: read failed: {exc}") from exc


def _cut(batches: list[pa.RecordBatch], rows: int) -> tuple[pa.RecordBatch, list[pa.RecordBatch]]:
    """The first ``rows`` rows as one record batch, and the batches that remain."""
    table = pa.Table.from_batches(batches)
    head = table.slice(0, rows).combine_chunks()
    window = head.to_batches()[0] if head.num_rows else pa.RecordBatch.from_pylist([], table.schema)
    rest = table.slice(rows)
    return window, rest.to_batches() if rest.num_rows else []


def text_values(array: pa.Array, max_bytes: int | None = None) -> list[str | None]:
    """Python strings (None for nulls, and for texts over ``max_bytes``, which never become
    Python objects) from a string, large_string or dictionary column."""
    if max_bytes is not None:
        array = without(array, text_sizes(array) > max_bytes)
    return plain_text(array).to_pylist()


def text_sizes(array: pa.Array) -> np.ndarray:
    """(n,) int64 bytes of each text, 0 for a null (read from the offsets: no text is copied)."""
    sizes = pc.binary_length(plain_text(array)).fill_null(0)
    return sizes.to_numpy(zero_copy_only=False).astype(np.int64)


def without(array: pa.Array, rows: np.ndarray) -> pa.Array:
    """The text column (decoded) with the texts at ``rows`` ((n,) bool) made null: nothing of
    theirs is copied."""
    array = plain_text(array)
    if not rows.any():
        return array
    return pc.if_else(pa.array(rows), pa.nulls(len(array), array.type), array)


def refusals(window, first_row: int, rows: np.ndarray, spec) -> tuple:
    """Why each of these rows of a window (etl.stages.read.blocks.Rows: over --max-text-bytes)
    gets no vector, a line each."""
    ids = window.batch.column(spec.id_column).take(pa.array(rows)).to_pylist()
    return tuple(
        f"row {first_row + int(row)} (id {row_id!r}): {int(window.sizes[row]):,} bytes of "
        f"text, over --max-text-bytes {spec.max_text_bytes:,}"
        for row, row_id in zip(rows, ids, strict=True)
    )


def present_rows(array: pa.Array, over: np.ndarray | None = None) -> np.ndarray:
    """(n,) positions of the rows whose text is not null (nor ``over``, if given)."""
    keep = array.is_valid().to_numpy(zero_copy_only=False) if array.null_count else None
    if over is not None and over.any():
        keep = ~over if keep is None else keep & ~over
    if keep is None:
        return np.arange(len(array), dtype=np.int64)
    return np.flatnonzero(keep)


def model_texts(array: pa.Array, rows: np.ndarray, prompt: str) -> list[str]:
    """The texts at ``rows``, each after the prompt: what the model sees, joined by Arrow."""
    array = plain_text(array)
    if len(rows) != len(array):
        array = array.take(pa.array(rows))
    if prompt:
        if not pa.types.is_string(array.type):
            array = array.cast(pa.large_string())
        array = pc.binary_join_element_wise(
            pa.scalar(prompt, array.type), array, pa.scalar("", array.type)
        )
    return array.to_pylist()


def plain_text(array: pa.Array) -> pa.Array:
    """A dictionary column decoded; other text columns as they are."""
    if pa.types.is_dictionary(array.type):
        return array.dictionary_decode()
    return array
