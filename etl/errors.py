"""The few exception classes the library raises; the CLI maps each one to an exit code."""

from __future__ import annotations


class EmbedEtlError(Exception):
    """Base class: a problem the user can act on, reported as one line without a traceback."""


class ConfigError(EmbedEtlError):
    """An option or combination of options is invalid (a usage error: nothing was written)."""


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
