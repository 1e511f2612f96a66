"""One window's vectors, placed by row as its batches arrive and assembled for the sink.

A row split into several windows (--long-text chunk) is joined here: the token-weighted mean of
its window vectors, or their element-wise max for max pooling. Rows that did not go through the
model get their vectors here too (etl.reuse): a repeat copies its text's vector, from this
window or from the shard's spill; a text found in a store takes the stored one; and the window's
new vectors join the spill, all before truncation, normalization and encoding, so that every
row of a text is stored alike. Token outputs keep each row's token vectors and ids; a chunked
row's windows are put back in text order, each token once (the specials, prompt and overlap a
later window repeats are dropped).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from etl.contract import WindowInfo
from etl.reuse.shard import EMBED, SHARD
from etl.reuse.spill import NewVectors
from etl.spec import OutputSpec
from etl.stages.write.sparse_rows import SparseRows
from etl.stages.write.token_rows import TokenRows
from etl.stages.write.vectors import encode, finish, l2_normalize, to_arrow

TokenInput = tuple[np.ndarray, np.ndarray, np.ndarray | None]  # ids (B, T), mask (B, T), parts


class Window:
    """Collects one window's batches; ``complete`` once all of them arrived."""

    def __init__(
        self,
        info: WindowInfo,
        spec: OutputSpec,
        spill: NewVectors | None = None,
    ) -> None:
        self.info = info
        self.spec = spec
        self.spill = spill  # the shard's new vectors, with reuse
        self.dtypes = spec.output_dtypes
        pooled = [c for c in spec.columns if not c.tokens and not c.sparse]
        self.sparse = {c.name: SparseRows(info.num_rows) for c in spec.columns if c.sparse}
        self.vectors = {c.name: np.zeros((info.num_rows, c.dim), np.float32) for c in pooled}
        self.maxed = {c.name for c in pooled if c.pooling == ("max",) and not c.dense}
        token_columns = [c.name for c in spec.columns if c.tokens]
        self.dims = {c.name: c.dim for c in spec.columns}
        self.tokens = TokenRows(info.num_rows, token_columns, info.drop_head, info.drop_tail)
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

    def add(
        self,
        rows: np.ndarray,
        vectors: dict,
        weights: np.ndarray | None,
        tokens: TokenInput | None = None,
    ) -> None:
        """Place a batch: (B, D) vectors per column at their rows; (B, T, H) token columns."""
        multi = self.info.multi
        for name, rows_of in self.sparse.items():
            rows_of.add(rows, vectors[name])
        pooled = {name: v for name, v in vectors.items() if name in self.vectors}
        if multi is None or not multi[rows].any():
            for name, values in pooled.items():
                self.vectors[name][rows] = values
        else:
            joined = multi[rows]  # (B,) sequences that are one window of a chunked row
            alone = ~joined
            w = weights[joined].astype(np.float32)[:, None]  # (b, 1) tokens per window
            for name, values in pooled.items():
                self.vectors[name][rows[alone]] = values[alone]
                if name in self.maxed:
                    np.maximum.at(self.vectors[name], rows[joined], values[joined])
                else:
                    np.add.at(self.vectors[name], rows[joined], values[joined] * w)
            np.add.at(self.weight, rows[joined], weights[joined])
        if tokens is not None:
            ids, mask, parts = tokens
            self.tokens.add(rows, parts, ids, mask, vectors)
        self.filled[rows] = True

    def assemble(self) -> None:
        """Once every batch is in: join chunked rows; with reuse, spill the new vectors and
        give the other rows theirs."""
        multi = self.info.multi
        if multi is not None and multi.any():
            for name, values in self.vectors.items():
                if name not in self.maxed:
                    values[multi] /= self.weight[multi, None].astype(np.float32)
        plan = self.info.reuse
        if plan is None or self.spill is None:
            return
        layout, vectors = self.spill.layout, self.vectors
        embed = np.flatnonzero(plan.kind == EMBED)  # spill numbers first_spill, +1, ...
        n_tokens = self.info.n_tokens
        if self.spill.count != plan.first_spill:  # records are found by their spill number
            raise RuntimeError(
                f"window {self.info.index}: spill holds {self.spill.count} records, the reader "
                f"numbered this window's from {plan.first_spill}"
            )
        records = layout.pack(plan.embed_hashes, n_tokens[embed], vectors_of(vectors, embed))
        self.spill.append(plan.embed_hashes, records)
        if len(plan.stored_rows):
            _, stored = layout.unpack(plan.stored)
            for name, values in stored.items():
                vectors[name][plan.stored_rows] = values
        copies = np.flatnonzero(plan.kind == SHARD)
        refs = plan.ref[copies]
        here = refs >= plan.first_spill  # its text's first row is in this window
        for values in vectors.values():
            values[copies[here]] = values[embed[refs[here] - plan.first_spill]]
        if not here.all():
            _, older = layout.unpack(self.spill.read(refs[~here]))
            for name, values in older.items():
                vectors[name][copies[~here]] = values
        self.filled[plan.stored_rows] = True
        self.filled[copies] = True

    def finished(self, name: str) -> list[pa.Array]:
        """The column as stored, once per --output-dtype, all from the same vectors (assemble()
        first): truncated, normalized, encoded; nulls for null texts."""
        nulls = pa.array(~self.filled) if not self.filled.all() else None
        if name in self.tokens.names:
            return [self._finished_tokens(name, nulls, d) for d in self.dtypes]
        if name in self.sparse:
            return [self.sparse[name].array(d, nulls) for d in self.dtypes]
        values = self.vectors[name]
        if not self.filled.all():
            values[~self.filled] = 0.0  # null rows: masked out, but keep the values finite
        spec = self.spec
        values = finish(values, spec.truncate_dim, spec.normalize)
        ranges = spec.calibration["columns"][name] if spec.int8 else None
        return [to_arrow(encode(values, dtype, ranges), nulls) for dtype in self.dtypes]

    def finished_token_ids(self) -> pa.Array:
        nulls = pa.array(~self.filled) if not self.filled.all() else None
        return self.tokens.ids(nulls)

    def _finished_tokens(self, name: str, nulls: pa.Array | None, dtype: str) -> pa.Array:
        spec = self.spec
        dim = self.dims[name]  # the hidden size, or a multi-vector model's projection
        width = spec.truncate_dim or dim
        flat = self.tokens.vectors(name, dim)[:, :width]  # (all tokens, D)
        if spec.normalize:
            flat = l2_normalize(flat)
        vectors = to_arrow(encode(flat, dtype), None)
        return pa.ListArray.from_arrays(self.tokens.offsets(), vectors, mask=nulls)


def vectors_of(vectors: dict[str, np.ndarray], rows: np.ndarray) -> dict[str, np.ndarray]:
    return {name: values[rows] for name, values in vectors.items()}
