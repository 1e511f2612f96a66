"""The store commands as library calls, by URI: an embed-etl output (its own store) or a store.

    store_stats(uri)                       what it holds (StoreStats)
    check_store(uri)                       every damaged part (CheckReport)
    compact_store(uri, grace)              small segments merged (CompactReport)
    gc_store(uri, keep_runs, keep_days, grace)   only what recent runs used kept (GcReport)

Each raises ConfigError when the URI holds no store of this version.
"""

from __future__ import annotations

from etl.errors import ConfigError
from etl.reuse import audit, collect, compact
from etl.reuse.plan import open_store
from etl.reuse.rewrite import GRACE_SECONDS


def store_stats(uri: str) -> audit.StoreStats:
    return audit.store_stats(open_store("URI", uri))


def check_store(uri: str) -> audit.CheckReport:
    return audit.check_store(open_store("URI", uri))


def compact_store(uri: str, grace: float = GRACE_SECONDS) -> compact.CompactReport:
    return compact.compact(open_store("URI", uri), grace=grace, force=True)


def gc_store(
    uri: str,
    keep_runs: int | None = None,
    keep_days: float | None = None,
    grace: float = GRACE_SECONDS,
) -> collect.GcReport:
    if keep_runs is None and keep_days is None:
        raise ConfigError("store gc: give --keep-runs K or --keep-days D (or both)")
    return collect.collect(open_store("URI", uri), keep_runs, keep_days, grace)
