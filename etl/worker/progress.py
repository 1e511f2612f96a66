"""The progress bar on stderr: rows as they complete, and the model's tokens per second.

Given the job's estimated tokens (etl.sampling.bar_tokens, a sample drawn where the bar is
shown), the bar counts tokens, so that its ETA holds when rows differ in length from shard to
shard; the rows done are shown beside it.
"""

from __future__ import annotations

import sys
import time

import numpy as np

from etl.contract import Batch


def rows_done(batch: Batch, multi: np.ndarray | None) -> int:
    """Rows a batch completes: one per sequence, except that a row split into windows counts
    once, with its window's first batch, as do its null rows and the rows that copy a vector
    instead of going through the model: the bar counts rows, whatever they cost."""
    rows = len(batch.rows)  # a sequence's row, or with --chunking late a passage's
    if rows and multi is not None:
        rows = int((~multi[batch.rows.numpy()]).sum())
    if batch.window is not None:
        rows += batch.window.rows_at_start
    return rows


class Progress:
    """A tqdm bar over the job's rows, or over its ``total_tokens`` when they are estimated;
    None for ``enabled`` shows it only on a terminal."""

    def __init__(
        self, total_rows: int, enabled: bool | None, total_tokens: int | None = None
    ) -> None:
        from tqdm import tqdm

        tqdm.monitor_interval = 0  # no monitor thread: DataLoader workers fork after this
        self.by_tokens = bool(total_tokens)
        self.bar = tqdm(
            total=total_tokens if self.by_tokens else total_rows,
            unit="tok" if self.by_tokens else "rows",
            unit_scale=self.by_tokens,
            file=sys.stderr,
            disable=not enabled if enabled is not None else None,
            dynamic_ncols=True,
            smoothing=0.05,
        )
        self.started = time.perf_counter()
        self.total_rows = total_rows
        self.rows = 0
        self.tokens = 0

    def update(self, rows: int, tokens: int) -> None:
        self.tokens += tokens
        self.rows += rows
        if not self.by_tokens:
            self.bar.update(rows)
            rate = self.tokens / max(time.perf_counter() - self.started, 1e-9)
            self.bar.set_postfix_str(f"{rate:,.0f} tok/s", refresh=False)
            return
        if self.bar.total is not None and self.bar.n + tokens > self.bar.total:
            self.bar.total = self.bar.n + tokens  # more than the sample said: done is done
        self.bar.update(tokens)
        rows = (
            f"{self.rows:,}/{self.total_rows:,}"
            if self.rows <= self.total_rows
            else f"{self.rows:,}"
        )
        self.bar.set_postfix_str(f"{rows} rows", refresh=False)  # passages outnumber rows

    def close(self) -> None:
        if self.by_tokens and self.rows >= self.total_rows:
            self.bar.total = self.bar.n  # every row done: the sample's guess no longer matters
            self.bar.refresh()
        self.bar.close()
