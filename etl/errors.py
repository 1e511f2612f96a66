"""The library's few exception classes and the one table of exit codes the command ends with.

Each error class carries the exit code the CLI ends with when it stops a command; the codes
that are no error (some shards failed, work left, interrupted) sit in the same table, so that
the CLI's help, the README and the code all take their numbers from here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import IntEnum


class ExitCode(IntEnum):
    """What the `embed-etl` command's exit status says."""

    OK = 0
    ERROR = 1  # the job could not run: model, output directory, internal error
    USAGE = 2  # bad options or inputs; nothing was written
    SHARDS_FAILED = 3  # the job ran, but one or more shards failed (see `status`)
    INCOMPLETE = 4  # `status` only: shards pending or running, none failed
    INTERRUPTED = 130  # SIGINT or SIGTERM: 128 + SIGINT, as shells report it


# What each code means, as --help and the README say it.
EXIT_MEANINGS: dict[ExitCode, str] = {
    ExitCode.OK: "every shard done (or nothing left to do)",
    ExitCode.ERROR: "the job could not run (model, --output holds other options' results, "
    "internal error)",
    ExitCode.USAGE: "usage error, nothing written",
    ExitCode.SHARDS_FAILED: "some shards failed, the others are done (see `embed-etl status`)",
    ExitCode.INCOMPLETE: "some shards pending or running, none failed (`embed-etl status`)",
    ExitCode.INTERRUPTED: "interrupted (SIGINT or SIGTERM; rerun to finish)",
}


def exit_codes_help(codes: Iterable[ExitCode] | Mapping[ExitCode, str]) -> str:
    """A command's "Exit codes: ..." line: the codes it can end with, each with what the table
    says, or (a mapping) with what the code means for that command."""
    says = codes if isinstance(codes, Mapping) else {code: EXIT_MEANINGS[code] for code in codes}
    return "Exit codes: " + "; ".join(f"{code.value} {text}" for code, text in says.items()) + "."


class EmbedEtlError(Exception):
    """Base class: a problem the user can act on, reported as one line without a traceback."""

    exit_code = ExitCode.ERROR


class ConfigError(EmbedEtlError):
    """An option or combination of options is invalid (a usage error: nothing was written)."""

    exit_code = ExitCode.USAGE


class ModelError(EmbedEtlError):
    """The model or tokenizer could not be loaded, or cannot produce what was asked for."""


class InputError(EmbedEtlError):
    """One input shard cannot be embedded: unreadable file, missing or mistyped column."""


class OutputConflictError(EmbedEtlError):
    """The output directory holds results that this run must not mix with or overwrite."""


class StorageError(EmbedEtlError):
    """A store refused or failed a request: access denied, unreachable (names the URI)."""


def reason(exc: BaseException) -> str:
    """One line for a shard's failure: our own errors and the ordinary ones (OSError,
    ValueError, pyarrow's) as their message says; anything else is a bug, named as one."""
    message = " ".join(str(exc).split())
    if isinstance(exc, (EmbedEtlError, OSError, ValueError)) and message:
        return message
    return f"internal error ({type(exc).__name__}: {message}); rerun with --verbose for details"
