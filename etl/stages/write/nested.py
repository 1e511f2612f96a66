"""--chunk-layout nested: a shard's passage rows folded back into one row per input row.

The job runs on passage rows up to the sink (etl.stages.read.passage_rows); the writer hands each
window's rows, as the rows layout would write them, to a Nest, which groups each input row's
passages (numbered from 0, or the one null row of a null text) into lists: the spans become one
list of {start, end}, every column after them (n_tokens, truncated, token ids, vectors) a list
with an entry per passage, and the id and kept columns are the input row's own (a kept text
whole, carried on the first passage as WHOLE_TEXT). A null text gets null lists. A window is cut
by passage count, so an input row's passages may run on into the next window: each window's
last row is held until a later window (or the shard's end) shows where it ends, and rows leave
in input order. All of it is Arrow offsets, takes and filters per window: no loop per row.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from etl.config import CHUNK_COLUMNS, CHUNK_SPANS, WHOLE_TEXT
from etl.spec import OutputSpec

SPAN = pa.struct([("start", pa.int32()), ("end", pa.int32())])


def nested_schema(rows: pa.Schema) -> pa.Schema:
    """The nested layout's schema from the rows layout's: the passage number and span columns
    become chunk_spans, a list of SPAN; each column after them a list of its type."""
    fields = list(rows)
    at = rows.get_field_index(CHUNK_COLUMNS[0])
    after = [pa.field(f.name, pa.list_(f.type)) for f in fields[at + len(CHUNK_COLUMNS) :]]
    return pa.schema(
        [*fields[:at], pa.field(CHUNK_SPANS, pa.list_(SPAN)), *after], metadata=rows.metadata
    )


class Nest:
    """Folds one shard's passage rows, window after window, into its nested output rows."""

    def __init__(self, schema: pa.Schema, spec: OutputSpec, input_rows: int) -> None:
        self.schema = schema  # nested_schema(...)
        at = schema.get_field_index(CHUNK_SPANS)
        self.row_columns = schema.names[:at]  # the id and kept columns: the input row's
        self.lists = schema.names[at + 1 :]  # an entry per passage
        self.text = spec.text_column if spec.text_column in spec.keep_columns else None
        self.input_rows = input_rows  # the rows the output must hold: the input's
        self.passages = 0  # passage rows added so far
        self._held: list[pa.RecordBatch] = []  # the last input row's passages so far

    def add(self, carried: pa.RecordBatch, arrays: list[pa.Array]) -> pa.RecordBatch | None:
        """A window's passage rows (``carried``: spec.carried; ``arrays``: one per name in
        ``self.lists``): the input rows it finishes, folded, or None."""
        batch = carried
        for name, values in zip(self.lists, arrays, strict=True):
            batch = batch.append_column(name, values)
        self.passages += batch.num_rows
        starts = np.flatnonzero(_starts(batch))
        if not len(starts):  # the whole window goes on with the row held
            self._held.append(batch)
            return None
        last = int(starts[-1])
        done = [b for b in (*self._held, batch.slice(0, last)) if b.num_rows]
        self._held = [batch.slice(last)]
        return self._fold(pa.concat_batches(done)) if done else None

    def finish(self, sent: int, where: str) -> pa.RecordBatch | None:
        """The last row held, folded, once the reader ``sent`` the shard's every passage row
        (``where``: the output, for the message)."""
        if self.passages != sent:
            raise RuntimeError(f"{where}: wrote {self.passages} passage rows, expected {sent}")
        done = [b for b in self._held if b.num_rows]
        self._held = []
        return self._fold(pa.concat_batches(done)) if done else None

    def _fold(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        """Passage rows of whole input rows, the first a row's first, as one row each."""
        number, start, end = (batch.column(name) for name in CHUNK_COLUMNS)
        valid = number.is_valid().to_numpy(zero_copy_only=False)  # (P,) a passage, not a null
        firsts = np.flatnonzero(_starts(batch))  # (R,) each input row's first passage row
        before = np.concatenate([[0], np.cumsum(valid)])  # (P + 1,) passages before each row
        offsets = pa.array(before[np.append(firsts, batch.num_rows)].astype(np.int32))
        null = ~valid[firsts]  # (R,) a null text (or one over --max-text-bytes): null lists
        mask = pa.array(null) if null.any() else None
        keep = pa.array(valid)

        def listed(values: pa.Array) -> pa.Array:
            return pa.ListArray.from_arrays(offsets, values.filter(keep), mask=mask)

        index = pa.array(firsts)  # a kept text: the whole text, on the row's first passage
        columns = [WHOLE_TEXT if c == self.text else c for c in self.row_columns]
        arrays = [batch.column(c).take(index) for c in columns]
        arrays.append(listed(pa.StructArray.from_arrays([start, end], fields=list(SPAN))))
        arrays += [listed(batch.column(name)) for name in self.lists]
        return pa.RecordBatch.from_arrays(arrays, schema=self.schema)


def _starts(batch: pa.RecordBatch) -> np.ndarray:
    """(P,) bool: the passage rows that start an input row (numbered 0, or a null text's)."""
    first = pc.fill_null(pc.equal(batch.column(CHUNK_COLUMNS[0]), 0), True)
    return first.to_numpy(zero_copy_only=False)
