"""A JobConfig from options as a command line, environment or scheduler gives them.

JobConfig takes exact values (tuples, ints) and validates them; what people type is lists and
comma-separated strings. This module turns one into the other, once, for the CLI and for Python
callers (an Airflow task handed strings) alike, so that both build the same config.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

from etl.config import JobConfig

COMMA_LISTS = ("devices",)  # given as one string, e.g. --devices cuda:0,cuda:1


def comma_list(text: str | None) -> tuple[str, ...]:
    """``"cuda:0, cuda:1"`` as ``("cuda:0", "cuda:1")``: items stripped, empty ones dropped."""
    return tuple(item.strip() for item in (text or "").split(",") if item.strip())


def _values(name: str, given: str | Iterable[Any] | None, default: Any) -> tuple[Any, ...]:
    """One tuple field: a comma list, or any sequence (one string is one value); nothing
    given (None or empty) means the field's default."""
    if isinstance(given, str):
        values = comma_list(given) if name in COMMA_LISTS else (given,)
    else:
        values = tuple(given or ())
    if not values and default is not dataclasses.MISSING:
        return default
    return values


def config_from_options(**options: Any) -> JobConfig:
    """A validated JobConfig from keyword options named as its fields: every tuple field may
    come as any sequence, a repeatable option given no value keeps its default, and
    ``devices`` may be one comma-separated string."""
    for field in dataclasses.fields(JobConfig):
        if field.name in options and str(field.type).startswith("tuple"):
            options[field.name] = _values(field.name, options[field.name], field.default)
    return JobConfig(**options)
