"""The input side: list, stat and open input files by local path or URI, through the storage that
serves the same scheme's outputs (open_storage), so a job talks to each store with one client
family and one resolution of credentials and endpoint, whichever way the data flows.

A URI is split into its store's root (scheme://bucket, scheme://container) and the key inside
it. Each root's storage is opened once per process and per the settings its client reads from
the environment (AWS_*, AZURE_*, GOOGLE_*...), so thousands of shards do not make thousands of
clients, and a changed setting takes effect. A file opens for random access (ranged reads), so
a Parquet reader fetches its footer, then one row group at a time, never the whole object.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from etl.redact import query_of
from etl.storage import open_storage
from etl.storage.base import Storage, is_uri

# The environment a storage's client reads its credentials and endpoint from.
SETTINGS_PREFIXES = ("AWS_", "AZURE_", "AZURITE_", "GOOGLE_", "EMBED_ETL_")


@dataclass(frozen=True)
class FileInfo:
    location: str  # the path or URI, as given or listed
    size: int
    mtime_ns: int


def locate(location: str | Path) -> tuple[Storage, str, str]:
    """(storage, key inside it, the storage's root as users write it) for a path or a URI."""
    text = str(location)
    if not is_uri(text):
        path = os.path.abspath(os.path.expanduser(text))
        folder, name = os.path.split(path)
        return _inputs_folder(folder), name, folder
    query = query_of(text)  # options of the store (s3://...?region=...), not part of a key
    scheme, rest = text[: len(text) - len(query)].split("://", 1)
    authority, _, key = rest.partition("/")
    root = f"{scheme}://{authority}"
    return _storage(root + query, _settings()), key.strip("/"), root


@functools.lru_cache(maxsize=64)
def _inputs_folder(folder: str) -> Storage:
    """A local folder of inputs, whose files may be links to anywhere (outputs may not)."""
    from etl.storage.local import LocalStorage

    return LocalStorage(folder, confined=False)


def _settings() -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith(SETTINGS_PREFIXES)))


@functools.lru_cache(maxsize=64)
def _storage(root: str, settings: tuple[tuple[str, str], ...]) -> Storage:
    return open_storage(root)


def info(location: str) -> FileInfo:
    """Size and modification time; FileNotFoundError if there is no such file."""
    storage, key, _ = locate(location)
    found = storage.stat(key) if key else None
    if found is None:
        raise FileNotFoundError(location)
    return FileInfo(location, found.size, found.mtime_ns)


def walk(location: str) -> list[FileInfo]:
    """Every file under a folder or prefix, recursively, sorted by location."""
    storage, key, root = locate(location)
    query = query_of(location)  # each file keeps the options its store was opened with
    files = [
        FileInfo(f"{root}/{entry.key}{query}", entry.size, entry.mtime_ns)
        for entry in storage.list(key)
    ]
    return sorted(files, key=lambda f: f.location)


def read_bytes(location: str) -> bytes:
    """A whole (small) file: a calibration file, say."""
    storage, key, _ = locate(location)
    data = storage.read(key) if key else None
    if data is None:
        raise FileNotFoundError(location)
    return data


def open_input(location: str) -> BinaryIO:
    """A random-access file: a Parquet reader fetches only what it reads."""
    storage, key, _ = locate(location)
    if not key:
        raise FileNotFoundError(location)
    return storage.open(key)
