"""What verify checks in the stored values: finite, unit length where the job normalized (each
token's vector for token columns), and for sparse columns indices sorted, unique and below the
vocabulary size, with finite positive weights. Polars expressions over a lazy scan."""

from __future__ import annotations

from typing import Any

NORM_TOLERANCE = {"float32": 1e-3, "float16": 1e-2}  # |norm - 1| allowed, by stored dtype
FLOAT_TYPES = ("float32", "float16")


def check_values(
    scan: Any, columns: dict[str, tuple[str, str]], identity: dict, sample: float
) -> list[str]:
    """Finite values; unit length where the job normalized (each token's vector, for token
    columns); sparse rows sorted by index, unique, below the vocabulary size, positive."""
    import polars as pl

    problems: list[str] = []
    every = max(1, round(1 / sample))
    scan = scan.with_row_index("row")
    if every > 1:
        scan = scan.filter(pl.col("row") % every == 0)
    widths = {c["name"]: c["dim"] for c in identity["columns"]}
    for name, (dtype, pooling) in columns.items():
        if dtype not in FLOAT_TYPES:
            continue
        column = scan.select("row", name).drop_nulls(name)
        if pooling == "sparse":
            problems += _check_sparse(column, name, _base(name, widths))
            continue
        if pooling == "tokens":  # one vector per token: check them all alike
            column = column.explode(name).drop_nulls(name)
        v = pl.col(name)
        bad = v.arr.eval(pl.element().is_nan() | pl.element().is_infinite()).arr.any()
        checks = [bad.sum().alias("bad")]
        if identity["normalize"]:
            norm = v.arr.eval(pl.element().cast(pl.Float64).pow(2)).arr.sum().sqrt()
            checks.append(((norm - 1).abs() > NORM_TOLERANCE[dtype]).sum().alias("norm"))
        counts = column.select(checks).collect(engine="streaming").row(0, named=True)
        what = "token vectors" if pooling == "tokens" else "vectors"
        if counts["bad"]:
            problems.append(f"{name}: {counts['bad']} {what} with NaN or infinity")
        if counts.get("norm"):
            problems.append(
                f"{name}: {counts['norm']} {what} not of unit length "
                f"(|norm - 1| > {NORM_TOLERANCE[dtype]}) in a normalized job"
            )
    return problems


def _check_sparse(column: Any, name: str, vocab_size: int) -> list[str]:
    import polars as pl

    problems = []
    pairs = column.explode(name).drop_nulls(name).unnest(name)
    index, value = pl.col("index"), pl.col("value")
    same_row = pl.col("row").diff() == 0
    counts = (
        pairs.select(
            ((index < 0) | (index >= vocab_size)).sum().alias("outside"),
            (same_row & (index.diff() <= 0)).sum().alias("unsorted"),
            (value.is_nan() | value.is_infinite() | (value <= 0)).sum().alias("bad"),
        )
        .collect()
        .row(0, named=True)
    )
    if counts["outside"]:
        problems.append(
            f"{name}: {counts['outside']} indices outside the vocabulary (0..{vocab_size - 1})"
        )
    if counts["unsorted"]:
        problems.append(f"{name}: {counts['unsorted']} indices not sorted or repeated")
    if counts["bad"]:
        problems.append(f"{name}: {counts['bad']} weights not finite and positive")
    return problems


def _base(name: str, widths: dict[str, int]) -> int:
    """The width of the job's column behind a stored one (name, or name_<dtype>)."""
    return widths.get(name) or widths[name.rsplit("_", 1)[0]]
