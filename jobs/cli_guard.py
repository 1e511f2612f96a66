"""How every command speaks and ends: library errors as one line and an exit code, logs on stderr.

Results go to stdout and everything else to stderr, credentials in URIs redacted either way;
the exit code comes from etl/errors.py's table (each error class carries its own).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

import click

from etl.errors import EmbedEtlError, ExitCode
from etl.redact import RedactingFormatter, redact


def guarded(action: Callable[[], int], verbose: bool) -> int:
    """Run the action; turn the library's errors into one line on stderr and an exit code.

    While it runs, the job's log lines go through tqdm's own redirect, so they do not tear the
    progress bar (the handler keeps the stream and format setup_logging gave it).
    """
    from tqdm.contrib.logging import logging_redirect_tqdm

    try:
        with logging_redirect_tqdm([logging.getLogger(name) for name in LOGGERS]):
            return action()
    except EmbedEtlError as exc:
        _error(exc, verbose)
        return exc.exit_code
    except KeyboardInterrupt:
        echo("embed-etl: interrupted; rerun the same command to finish", err=True)
        return ExitCode.INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - no traceback for users unless --verbose
        _error(exc, verbose, prefix="internal error: ")
        if not verbose:
            echo("embed-etl: rerun with --verbose for the traceback", err=True)
        return ExitCode.ERROR


def echo(message: str, err: bool = False) -> None:
    """A line for the user, on stdout or stderr, credentials in URIs redacted (etl.redact)."""
    click.echo(redact(message), err=err)


def _error(exc: BaseException, verbose: bool, prefix: str = "") -> None:
    if verbose:
        logging.getLogger("embed_etl").exception("%s", exc)
    echo(f"embed-etl: error: {prefix}{exc}", err=True)


LOGGERS = ("etl", "embed_etl")  # the library's loggers, and the CLI's own
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup_logging(verbose: bool) -> None:
    """The job's log lines on stderr, DEBUG with --verbose (guarded routes them past the bar)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(RedactingFormatter(LOG_FORMAT))
    for name in LOGGERS:
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(logging.DEBUG if verbose else logging.INFO)
        logger.propagate = False
