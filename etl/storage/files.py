"""The input side: list, stat and open files by local path or URI, through pyarrow file systems.

s3:// (credentials and endpoint from the standard AWS settings), gs://, abfs:// and the other
schemes pyarrow knows go through pyarrow's own file systems; any other scheme fsspec knows
(memory://, ...) through fsspec. A file is opened for random access, so a Parquet reader
fetches one row group at a time, never the whole object.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs

from etl.errors import ConfigError, StorageError
from etl.storage.base import is_uri


@dataclass(frozen=True)
class FileInfo:
    location: str  # the path or URI, as given or listed
    size: int
    mtime_ns: int


def filesystem(location: str | Path) -> tuple[pafs.FileSystem, str]:
    """(pyarrow file system, path inside it) for a local path or a URI."""
    text = str(location)
    if not is_uri(text):
        return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(text))
    scheme = text.split("://", 1)[0].lower()
    if scheme not in ("s3", "gs", "gcs", "abfs", "abfss", "hdfs", "viewfs", "file"):
        return _fsspec(text)
    try:
        return pafs.FileSystem.from_uri(text)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise ConfigError(f"{text}: cannot open this location: {exc}") from exc


def _fsspec(text: str) -> tuple[pafs.FileSystem, str]:
    try:
        import fsspec
    except ImportError as exc:  # pragma: no cover - torch depends on fsspec
        raise ConfigError(f"{text}: this scheme needs fsspec") from exc
    try:
        fs, path = fsspec.core.url_to_fs(text)
    except (ImportError, ValueError) as exc:
        raise ConfigError(f"{text}: unknown or unavailable scheme ({exc})") from exc
    return pafs.PyFileSystem(pafs.FSSpecHandler(fs)), path


def with_scheme(location: str, path: str) -> str:
    """A path found inside the file system of ``location``, written the way users write it."""
    if not is_uri(location):
        return path
    scheme = location.split("://", 1)[0]
    return f"{scheme}://{path.lstrip('/')}" if scheme != "memory" else f"memory://{path}"


def _file_info(location: str) -> pafs.FileInfo:
    fs, path = filesystem(location)
    try:
        return fs.get_file_info(path)
    except (pa.ArrowException, OSError) as exc:
        raise StorageError(f"{location}: {exc}") from exc


def info(location: str) -> FileInfo:
    """Size and modification time; FileNotFoundError if there is no such file."""
    found = _file_info(location)
    if found.type != pafs.FileType.File:
        raise FileNotFoundError(location)
    mtime = found.mtime_ns if found.mtime_ns is not None else 0
    return FileInfo(location, int(found.size or 0), int(mtime))


def kind(location: str) -> str:
    """'file', 'dir' or 'missing'."""
    found = _file_info(location)
    if found.type == pafs.FileType.File:
        return "file"
    if found.type == pafs.FileType.Directory:
        return "dir"
    return "missing"


def walk(location: str) -> list[FileInfo]:
    """Every file under a folder or prefix, recursively, sorted by location."""
    fs, path = filesystem(location)
    try:
        found = fs.get_file_info(pafs.FileSelector(path, recursive=True, allow_not_found=True))
    except (pa.ArrowException, OSError) as exc:
        raise StorageError(f"{location}: cannot list: {exc}") from exc
    files = [
        FileInfo(with_scheme(location, f.path), int(f.size or 0), int(f.mtime_ns or 0))
        for f in found
        if f.type == pafs.FileType.File
    ]
    return sorted(files, key=lambda f: f.location)


def read_bytes(location: str) -> bytes:
    """A whole (small) file: a calibration file, say."""
    with open_input(location) as handle:
        return handle.read()


def open_input(location: str) -> pa.NativeFile:
    """A random-access file: a Parquet reader fetches only what it reads."""
    fs, path = filesystem(location)
    return fs.open_input_file(path)
