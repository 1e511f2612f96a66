"""Find the input shards (local paths, directories, globs, or URIs: s3://bucket/prefix/, globs
in them), map each to its output key, and split them into parts."""

from __future__ import annotations

import glob
import os
from pathlib import Path

from etl.contract import Shard
from etl.errors import ConfigError
from etl.storage import Location, files

PARQUET_SUFFIXES = (".parquet", ".parq", ".pq")


def discover(inputs: tuple[str, ...], output_dir: str | None) -> list[Shard]:
    """Expand files, directories and globs into shards, sorted by their relative name.

    The relative name (what follows the directory or the glob's fixed prefix) is kept under the
    output directory, so outputs mirror the input tree. Files under the output directory itself
    are never taken as inputs.
    """
    out_root = _canonical(output_dir or ".")
    found: dict[str, str] = {}
    listed: dict[str, tuple[int, int]] = {}  # size and mtime of remote files, from listings
    for spec in inputs:
        where = Location.parse(spec)
        matches = list(_expand_uri(where, listed) if where.is_uri else _expand(spec))
        if output_dir is not None:
            matches = [(p, rel) for p, rel in matches if not _within(_canonical(p), out_root)]
        if not matches:
            raise ConfigError(f"INPUT {spec}: no Parquet files found (looked for {_suffixes()})")
        for path, rel in matches:
            previous = found.get(rel)
            if previous is not None and _canonical(previous) != _canonical(path):
                raise ConfigError(
                    f"INPUT: {previous} and {path} have the same relative name {rel!r} and "
                    "would both be written to one output; give their common parent directory"
                )
            found[rel] = str(path)
    shards = []
    for rel, path in sorted(found.items()):
        size, mtime = listed.get(path) or _identity(path)
        shards.append(Shard(path, rel, output_key(rel), size, mtime))
    return shards


def input_identity(path: str) -> dict[str, int]:
    """Size and modification time of an input: a changed input makes its shard pending again."""
    found = files.info(path)
    return {"input_size": found.size, "input_mtime_ns": found.mtime_ns}


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


def _identity(path: str) -> tuple[int | None, int | None]:
    try:
        found = files.info(path)
    except OSError:
        return None, None  # unreadable: its shard fails on its own, later
    return found.size, found.mtime_ns


def _expand_uri(spec: Location, listed: dict[str, tuple[int, int]]):
    """(Location, relative name) pairs under a prefix, a glob, or one object; each listed file's
    size and modification time go into ``listed``."""
    if spec.is_glob:
        root = spec.glob_root()
        for f in files.walk(root):
            rel = _relative_uri(f.location, root)
            if rel and f.location.matches(spec) and _wanted(rel):
                listed[str(f.location)] = (f.size, f.mtime_ns)
                yield f.location, rel
        return
    if not spec.is_folder:  # a prefix written as one is no object
        try:
            found = files.info(spec)
        except FileNotFoundError:
            found = None
        if found is not None:
            listed[str(spec)] = (found.size, found.mtime_ns)
            yield spec, spec.name
            return
    under = files.walk(spec)
    if not under:
        raise ConfigError(f"INPUT {spec}: no such {spec.scheme}:// object or prefix")
    for f in under:
        rel = _relative_uri(f.location, spec)
        if _wanted(rel):
            listed[str(f.location)] = (f.size, f.mtime_ns)
            yield f.location, rel


def _relative_uri(location: Location, root: Location) -> str:
    """The name under ``root``, without the credentials and options either URI carries."""
    rel = location.relative_to(root)
    if ".." in rel.split("/"):
        raise ConfigError(
            f"INPUT {location.redacted}: a '..' in its key would put its output outside --output; "
            "rename the object"
        )
    return rel


def _wanted(rel: str) -> bool:
    """A Parquet file with no hidden or underscore-prefixed part in its name."""
    parts = rel.split("/")
    return _is_parquet(Path(parts[-1])) and not any(p.startswith((".", "_")) for p in parts)


def _canonical(location: str | Path | Location) -> str:
    """A comparable form: a resolved local path, or the URI's identity (no credentials, no
    options, no trailing slash)."""
    where = Location.parse(location)
    return where.identity if where.is_uri else str(Path(location).resolve())


def _within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def output_key(rel: str) -> str:
    """Where the output of the input with this relative name goes, under --output."""
    return rel if rel.lower().endswith(".parquet") else f"{Path(rel).with_suffix('')}.parquet"


def _suffixes() -> str:
    return ", ".join(f"*{s}" for s in PARQUET_SUFFIXES)
