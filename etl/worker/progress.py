"""The progress bar on stderr: rows as they complete, and the model's tokens per second."""

from __future__ import annotations

import sys
import time

import numpy as np

from etl.contract import Batch


def rows_done(batch: Batch, multi: np.ndarray | None) -> int:
    """Rows a batch completes: one per sequence, except that a row split into windows counts
    once, with its window's first batch, as do its null rows and the rows that copy a vector
    instead of going through the model: the bar counts rows, whatever they cost."""
    rows = batch.size
    if rows and multi is not None:
        rows = int((~multi[batch.rows.numpy()]).sum())
    if batch.window is not None:
        rows += batch.window.rows_at_start
    return rows


class Progress:
    """A tqdm bar over the job's rows; None for ``enabled`` shows it only on a terminal."""

    def __init__(self, total_rows: int, enabled: bool | None) -> None:
        from tqdm import tqdm

        tqdm.monitor_interval = 0  # no monitor thread: DataLoader workers fork after this
        self.bar = tqdm(
            total=total_rows,
            unit="rows",
            file=sys.stderr,
            disable=not enabled if enabled is not None else None,
            dynamic_ncols=True,
            smoothing=0.05,
        )
        self.started = time.perf_counter()
        self.tokens = 0

    def update(self, rows: int, tokens: int) -> None:
        self.tokens += tokens
        self.bar.update(rows)
        rate = self.tokens / max(time.perf_counter() - self.started, 1e-9)
        self.bar.set_postfix_str(f"{rate:,.0f} tok/s", refresh=False)

    def close(self) -> None:
        self.bar.close()
