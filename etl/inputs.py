"""Find the input shards, map each to its output key, and split them into parts."""

from __future__ import annotations

import glob
import os
from pathlib import Path

from etl.contract import Shard
from etl.errors import ConfigError

PARQUET_SUFFIXES = (".parquet", ".parq", ".pq")


def discover(inputs: tuple[str, ...], output_dir: str | None) -> list[Shard]:
    """Expand files, directories and globs into shards, sorted by their relative name.

    The relative name (what follows the directory or the glob's fixed prefix) is kept under the
    output directory, so outputs mirror the input tree. Files under the output directory itself
    are never taken as inputs.
    """
    out_root = Path(output_dir or ".").resolve()
    found: dict[str, Path] = {}
    for spec in inputs:
        matches = list(_expand(spec))
        if output_dir is not None:
            matches = [(p, rel) for p, rel in matches if not _is_within(p.resolve(), out_root)]
        if not matches:
            raise ConfigError(f"INPUT {spec}: no Parquet files found (looked for {_suffixes()})")
        for path, rel in matches:
            previous = found.get(rel)
            if previous is not None and previous.resolve() != path.resolve():
                raise ConfigError(
                    f"INPUT: {previous} and {path} have the same relative name {rel!r} and "
                    "would both be written to one output; give their common parent directory"
                )
            found[rel] = path
    return [
        Shard(input_path=str(path), rel_name=rel, output_key=output_key(rel))
        for rel, path in sorted(found.items())
    ]


def input_identity(path: str) -> dict[str, int]:
    """Size and modification time of an input: a changed input makes its shard pending again."""
    st = os.stat(path)
    return {"input_size": st.st_size, "input_mtime_ns": st.st_mtime_ns}


def partition(shards: list[Shard], num_parts: int) -> list[list[Shard]]:
    """Split shards into num_parts disjoint parts, round-robin over the sorted relative names.

    Deterministic for the same inputs, so N processes or scheduler tasks given the same INPUT
    and their own index never overlap and together cover everything.
    """
    ordered = sorted(shards, key=lambda s: s.rel_name)
    return [ordered[i::num_parts] for i in range(num_parts)]


def _expand(spec: str):
    """(path, relative name) pairs. Relative names are lexical, so symlinked files and
    directories keep the names they have under INPUT, wherever they point."""
    path = Path(spec).expanduser()
    if glob.has_magic(spec):
        root = _glob_root(spec)
        for hit in sorted(glob.glob(os.path.expanduser(spec), recursive=True)):
            hit_path = Path(hit)
            if hit_path.is_file() and _is_parquet(hit_path):
                yield hit_path, _relative(hit_path, root)
            elif hit_path.is_dir():
                yield from _walk(hit_path, root)
    elif path.is_dir():
        yield from _walk(path, Path(os.path.abspath(path)))
    elif path.is_file():
        yield path, path.name
    elif not path.exists():
        raise ConfigError(f"INPUT {spec}: no such file or directory")


def _walk(directory: Path, root: Path):
    seen = set()  # real directories already walked: a symlink loop is walked once
    for dirpath, dirnames, filenames in os.walk(directory, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:
            dirnames[:] = []
            continue
        seen.add(real)
        # Hidden and underscore-prefixed entries are metadata or temporary files by convention.
        dirnames[:] = sorted(d for d in dirnames if not d.startswith((".", "_")))
        for name in sorted(filenames):
            candidate = Path(dirpath) / name
            if not name.startswith((".", "_")) and _is_parquet(candidate) and candidate.is_file():
                yield candidate, _relative(candidate, root)


def _relative(path: Path, root: Path) -> str:
    return Path(os.path.relpath(os.path.abspath(path), root)).as_posix()


def _glob_root(spec: str) -> Path:
    """The directory part of a glob before its first wildcard (absolute, links kept)."""
    parts = Path(os.path.expanduser(spec)).parts
    fixed = []
    for part in parts:
        if glob.has_magic(part):
            break
        fixed.append(part)
    return Path(os.path.abspath(Path(*fixed))) if fixed else Path(os.path.abspath("."))


def _is_parquet(path: Path) -> bool:
    return path.suffix.lower() in PARQUET_SUFFIXES


def _is_within(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def output_key(rel: str) -> str:
    """Where the output of the input with this relative name goes, under --output."""
    return rel if rel.lower().endswith(".parquet") else f"{Path(rel).with_suffix('')}.parquet"


def _suffixes() -> str:
    return ", ".join(f"*{s}" for s in PARQUET_SUFFIXES)
