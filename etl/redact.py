"""Credentials kept out of everything the job writes: records, log lines, errors, summaries.

A URI may carry secrets in its userinfo (``s3://KEY:SECRET@bucket/...``) or its query string (a
session token, a presigned URL's signature). The job reads them where it opens a store and
nowhere else: whatever text leaves the process goes through ``redact``, which keeps the scheme,
the host and the path and writes ``<redacted>`` for the rest (``s3://bucket/key?<redacted>``).
A query is a ``?`` followed by a ``key=value``; a ``?`` in a glob (``p?.parquet``) is kept (the
rule etl.storage.location parses one location by; here it finds URIs inside any text).
"""

from __future__ import annotations

import logging
import re
import sys

from etl.errors import ConfigError

HIDDEN = "<redacted>"
_SCHEME = r"[A-Za-z][A-Za-z0-9+.-]*://"
_STOP = r"\s'\"<>\\"  # where a URI ends inside a message, a repr or a JSON string
_USERINFO = re.compile(rf"({_SCHEME})([^/{_STOP}@]+)@")
CONTAINER_AT = ("abfs://", "abfss://")  # abfss://container@account...: a name, not a secret
# Up to the URI's end, leaving the punctuation of the sentence around it (a ':' or ',' after it).
_QUERY = re.compile(
    rf"({_SCHEME}[^?{_STOP}]*)\?(?=[^{_STOP}]*=)[^{_STOP}]*?(?=[:,.;)\]]*(?:[{_STOP}]|$))"
)


def redact(text: str) -> str:
    """``text`` with every URI's userinfo and query string replaced by <redacted>."""
    if "://" not in text:
        return text
    return _USERINFO.sub(_hide_userinfo, _QUERY.sub(rf"\1?{HIDDEN}", text))


def _hide_userinfo(match: re.Match) -> str:
    scheme, userinfo = match.group(1), match.group(2)
    if scheme.lower() in CONTAINER_AT and ":" not in userinfo:
        return match.group(0)
    return f"{scheme}{HIDDEN}@"


def recorded_inputs(job: dict, given: tuple[str, ...]) -> tuple[str, ...]:
    """The inputs to read: those given, else job.json's, which cannot be read again where their
    credentials were redacted (a ConfigError saying to give INPUT)."""
    if given:
        return given
    inputs = tuple(job.get("inputs", ()))
    hidden = [i for i in inputs if HIDDEN in i]
    if hidden:
        raise ConfigError(
            f"INPUT: the job's input {hidden[0]} carried credentials, which job.json does not "
            "keep; give INPUT again (or the credentials in the environment and the plain URI)"
        )
    return inputs


class RedactingFormatter(logging.Formatter):
    """A log line, its exception and stack included, with credentials redacted."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def log_to_stderr(fmt: str, level: int = logging.INFO) -> None:
    """The root logger's one handler: stderr, through RedactingFormatter (worker processes)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(RedactingFormatter(fmt))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
