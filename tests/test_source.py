"""Reading a shard: windows cut across row groups, in order, one row group in memory at a time."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from etl.stages.read.source import iter_windows, parquet_file


def test_windows_cross_row_groups_in_order_with_bounded_memory(tmp_path):
    path = tmp_path / "s.parquet"
    rows, group = 60_000, 1_000  # 60 row groups of ~1 MB of text each
    rng = np.random.default_rng(0)
    text = pa.array([rng.bytes(500).hex() for _ in range(group)])  # does not compress
    with pq.ParquetWriter(path, pa.schema([("id", pa.int64()), ("text", pa.string())])) as w:
        for start in range(0, rows, group):
            ids = pa.array(range(start, start + group), pa.int64())
            w.write_table(pa.table({"id": ids, "text": text}), row_group_size=group)
    parquet = parquet_file(str(path))
    assert parquet.metadata.num_row_groups == rows // group
    ids, sizes, peak = [], [], 0
    for window in iter_windows(parquet, str(path), ["id", "text"], 2_500):
        ids += window.column("id").to_pylist()
        sizes.append(window.num_rows)
        peak = max(peak, pa.total_allocated_bytes())
        del window
    assert ids == list(range(rows))  # every row once, in file order
    assert sizes == [2_500] * 24  # windows cut across row group boundaries
    # A whole-file reader held every pre-buffered row group (about 60 MB here); one row group
    # at a time holds a window and a row group or two.
    assert peak < 12 * 2**20, peak
