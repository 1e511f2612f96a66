"""The input side: list, stat and open input files by local path or URI, through the storage that
serves the same scheme's outputs (storage_at), so a job talks to each store with one client
family and one resolution of credentials and endpoint, whichever way the data flows.

A location is parsed once (a Location): its store's root (scheme://bucket, scheme://container,
with the options of its query) and the key inside it. Each root's storage is opened once per
process and per the settings its client reads from the environment (AWS_*, AZURE_*, GOOGLE_*...),
so thousands of shards do not make thousands of clients, and a changed setting takes effect. A
file opens for random access (ranged reads), so a Parquet reader fetches its footer, then one row
group at a time, never the whole object.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from etl.storage import storage_at
from etl.storage.base import Storage
from etl.storage.location import Location

# The environment a storage's client reads its credentials and endpoint from.
SETTINGS_PREFIXES = ("AWS_", "AZURE_", "AZURITE_", "GOOGLE_", "EMBED_ETL_")


@dataclass(frozen=True)
class FileInfo:
    location: Location  # the path or URI, as given or listed
    size: int
    mtime_ns: int


def locate(location: str | Path | Location) -> tuple[Storage, str]:
    """(storage, key inside it) for a path or a URI."""
    where = Location.parse(location)
    if not where.is_uri:
        folder, name = os.path.split(os.path.abspath(os.path.expanduser(where.path)))
        return _inputs_folder(folder), name
    # The query holds options of the store (s3://...?region=...), not part of a key.
    return _storage(where.root, _settings()), where.key


@functools.lru_cache(maxsize=64)
def _inputs_folder(folder: str) -> Storage:
    """A local folder of inputs, whose files may be links to anywhere (outputs may not)."""
    from etl.storage.local import LocalStorage

    return LocalStorage(folder, confined=False)


def _settings() -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith(SETTINGS_PREFIXES)))


@functools.lru_cache(maxsize=64)
def _storage(root: Location, settings: tuple[tuple[str, str], ...]) -> Storage:
    return storage_at(root)


def info(location: str | Location) -> FileInfo:
    """Size and modification time; FileNotFoundError if there is no such file."""
    storage, key = locate(location)
    found = storage.stat(key) if key else None
    if found is None:
        raise FileNotFoundError(str(location))
    return FileInfo(Location.parse(location), found.size, found.mtime_ns)


def walk(location: str | Location) -> list[FileInfo]:
    """Every file under a folder or prefix of a URI, recursively, sorted by location; each
    keeps the credentials and options its store was opened with."""
    where = Location.parse(location)
    storage, key = locate(where)
    found = [
        FileInfo(where.child(entry.key), entry.size, entry.mtime_ns) for entry in storage.list(key)
    ]
    return sorted(found, key=lambda f: str(f.location))


def read_bytes(location: str) -> bytes:
    """A whole (small) file: a calibration file, say."""
    storage, key = locate(location)
    data = storage.read(key) if key else None
    if data is None:
        raise FileNotFoundError(location)
    return data


def open_input(location: str) -> BinaryIO:
    """A random-access file: a Parquet reader fetches only what it reads."""
    storage, key = locate(location)
    if not key:
        raise FileNotFoundError(location)
    return storage.open(key)
