"""The `embed-etl store` commands: count, check, compact and trim a vector store by its URI."""

from __future__ import annotations

import json
import sys

import click

from etl.errors import ExitCode, exit_codes_help
from etl.reuse.rewrite import GRACE_SECONDS
from jobs.cli_guard import echo, guarded, setup_logging

OK, FAILED, USAGE = ExitCode.OK, ExitCode.SHARDS_FAILED, ExitCode.USAGE

STORE_URI = click.argument("uri", metavar="URI")
STORE_JSON = click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout.")
GRACE = click.option(
    "--grace",
    type=click.FloatRange(min=0),
    default=GRACE_SECONDS,
    show_default=True,
    metavar="SECONDS",
    help="How long a replaced segment stays readable for jobs that loaded the store before; "
    "deleted by a later compact or gc once older.",
)


@click.group()
def store() -> None:
    """Look after a vector store: an output's own (give the output) or one --store names.

    A store keeps every vector a job computed, by text, so that repeats, reruns and
    tomorrow's re-export embed only what is new. These commands count, check, compact and
    trim it; all are safe beside jobs that read and write it.
    """


@store.command("stats", epilog=exit_codes_help({OK: "done", USAGE: "not a store of this version"}))
@STORE_URI
@STORE_JSON
def store_stats(uri: str, as_json: bool) -> None:
    """What the store holds: segments, records, bytes, ages; runs and what each served."""
    setup_logging(False)

    def show() -> int:
        from etl import store_stats as stats

        report = stats(uri)
        echo(json.dumps(report.to_dict()) if as_json else report.to_text())
        return OK

    sys.exit(guarded(show, False))


@store.command(
    "check",
    epilog=exit_codes_help({OK: "all whole", USAGE: "not a store", FAILED: "damage found"}),
)
@STORE_URI
@STORE_JSON
def store_check(uri: str, as_json: bool) -> None:
    """Read the whole store and report every damaged part.

    Every journal entry, and every segment it names: the trailer, each index block and each
    record against its checksum, each record's hash against the index. A job skips exactly
    what this reports and embeds those texts again.
    """
    setup_logging(False)

    def show() -> int:
        from etl import check_store

        report = check_store(uri)
        echo(json.dumps(report.to_dict()) if as_json else report.to_text())
        return OK if report.ok else FAILED

    sys.exit(guarded(show, False))


@store.command(
    "compact",
    epilog=exit_codes_help({OK: "done (or nothing to merge)", USAGE: "not a store"}),
)
@STORE_URI
@GRACE
@STORE_JSON
def store_compact(uri: str, grace: float, as_json: bool) -> None:
    """Merge small segments, in the order they were written, into larger ones.

    A job does this itself when it leaves more than 64 small segments (under 64 MiB). Safe
    beside jobs; a kill leaves the store as it was, and running it again finishes.
    """
    setup_logging(False)

    def show() -> int:
        from etl import compact_store

        report = compact_store(uri, grace)
        echo(json.dumps(report.to_dict()) if as_json else report.to_text())
        return OK

    sys.exit(guarded(show, False))


@store.command("gc", epilog=exit_codes_help({OK: "done", USAGE: "usage error or not a store"}))
@STORE_URI
@click.option(
    "--keep-runs",
    type=click.IntRange(min=1),
    default=None,
    metavar="K",
    help="Keep the vectors the last K runs stored or served.",
)
@click.option(
    "--keep-days",
    type=click.FloatRange(min=0),
    default=None,
    metavar="D",
    help="Keep the vectors runs of the last D days stored or served (with --keep-runs: "
    "either keeps).",
)
@GRACE
@STORE_JSON
def store_gc(
    uri: str, keep_runs: int | None, keep_days: float | None, grace: float, as_json: bool
) -> None:
    """Keep only the vectors recent runs used; delete the rest.

    Each run writes down the texts it stored and served. Segments with nothing kept go,
    segments with some kept are written again with only those; what nothing names any more
    (replaced segments, a killed writer's, old journal entries) is deleted once older than
    --grace. Safe beside jobs; a kill leaves a store that reads correctly, and running it again
    finishes.
    """
    setup_logging(False)

    def show() -> int:
        from etl import gc_store

        report = gc_store(uri, keep_runs, keep_days, grace)
        echo(json.dumps(report.to_dict()) if as_json else report.to_text())
        return OK

    sys.exit(guarded(show, False))
