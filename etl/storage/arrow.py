"""Any other file system pyarrow or fsspec knows (memory://, hdfs://...), inputs and outputs.

pyarrow's own file systems serve hdfs:// and viewfs://, fsspec every other scheme it knows;
files open for random access, so a Parquet reader fetches one row group at a time. An upload is
written under a hidden name and moved into place when published. These file systems offer no
create-if-absent or compare-and-swap write, so the lock and the read-compare-write below are
embed-etl's own: atomic for memory://, which lives in this one process; for the others claims
cannot keep two processes apart, and the job says so: split the work with
--shard-index/--num-shards instead. (s3://, az:// and gs:// have their own modules.)
"""

from __future__ import annotations

import contextlib
import os
import threading
import uuid
from typing import Any, BinaryIO

import pyarrow as pa
import pyarrow.fs as pafs

from etl.errors import ConfigError
from etl.storage.base import Entry, Storage, Upload, join
from etl.storage.marks import PUT_MARK, UPLOAD_MARK

_LOCK = threading.Lock()  # memory:// is one process's: its compare-and-write happen under this


class ArrowStorage(Storage):
    """A folder of a pyarrow file system, named by a URI. Picklable."""

    def __init__(self, uri: str) -> None:
        self.root_uri = uri if uri.endswith("://") else uri.rstrip("/")  # memory:// is a root
        self.scheme = uri.split("://", 1)[0].lower()
        self.conditional = self.scheme == "memory"
        self._fs: Any = None
        self._temporaries: set[str] = set()

    @classmethod
    def from_uri(cls, uri: str) -> ArrowStorage:
        storage = cls(uri)
        storage.fs  # noqa: B018 - an unknown scheme fails here, before anything is written
        return storage

    def __getstate__(self) -> dict:
        return {"uri": self.root_uri}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["uri"])

    def __repr__(self) -> str:
        return f"ArrowStorage({self.root_uri!r})"

    @property
    def fs(self) -> pafs.FileSystem:
        if self._fs is None:
            self._fs, self._root = filesystem(self.root_uri)
        return self._fs

    def path(self, key: str) -> str:
        self.fs  # noqa: B018 - resolves the root
        root = self._root.rstrip("/")
        return f"{root}/{key.strip('/')}" if key else root

    def uri(self, key: str = "") -> str:
        if not key:
            return self.root_uri
        base = self.root_uri[:-1] if self.root_uri.endswith("://") else self.root_uri
        return f"{base}/{key.strip('/')}"

    def child(self, prefix: str) -> ArrowStorage:
        return ArrowStorage(self.uri(prefix))

    def read(self, key: str) -> bytes | None:
        try:
            with self.fs.open_input_stream(self.path(key)) as stream:
                return stream.read()
        except (FileNotFoundError, pa.ArrowException, OSError):
            return None

    def open(self, key: str) -> BinaryIO:
        return self.fs.open_input_file(self.path(key))

    def read_ranges(self, key: str, ranges: list[tuple[int, int]]) -> list[bytes]:
        with self.fs.open_input_file(self.path(key)) as handle:
            return [handle.read_at(length, offset) for offset, length in ranges]

    def exists(self, key: str) -> bool:
        return self.stat(key) is not None

    def stat(self, key: str) -> Entry | None:
        found = self.fs.get_file_info(self.path(key))
        if found.type != pafs.FileType.File:
            return None
        return Entry(key, int(found.size or 0), int(found.mtime_ns or 0))

    def list(self, prefix: str) -> list[Entry]:
        base = self.path(prefix)
        selector = pafs.FileSelector(base, recursive=True, allow_not_found=True)
        found = []
        for item in self.fs.get_file_info(selector):
            name = item.path.rsplit("/", 1)[-1]
            if item.type != pafs.FileType.File or name.startswith("."):
                continue
            key = join(prefix, item.path[len(base) :])
            found.append(Entry(key, int(item.size or 0), int(item.mtime_ns or 0)))
        return sorted(found, key=lambda e: e.key)

    def create(self, key: str, data: bytes) -> bool:
        with _LOCK:
            if self.exists(key):
                return False
            self.put(key, data)
            return True

    def put(self, key: str, data: bytes) -> None:
        final = self.path(key)
        temp = self._hidden(final, f"{PUT_MARK}{uuid.uuid4().hex[:8]}")
        self._temporaries.add(temp)
        try:
            self.fs.create_dir(final.rsplit("/", 1)[0], recursive=True)
            with self.fs.open_output_stream(temp) as stream:
                stream.write(data)
            self.fs.move(temp, final)
        finally:
            self._temporaries.discard(temp)

    def swap(self, key: str, expected: bytes | None, data: bytes) -> bool:
        with _LOCK:
            if self.read(key) != expected:
                return False
            self.put(key, data)
            return True

    def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError, pa.ArrowException, OSError):
            self.fs.delete_file(self.path(key))

    def upload(self, key: str) -> ArrowUpload:
        final = self.path(key)
        self.fs.create_dir(final.rsplit("/", 1)[0], recursive=True)
        temp = self._hidden(final, f"{UPLOAD_MARK}{os.getpid()}")
        self._temporaries.add(temp)
        return ArrowUpload(self, key, temp, final)

    def discard_stale_uploads(self, key: str, prefix: bool = False) -> None:
        final = self.path(key)
        folder, name = final.rsplit("/", 1)
        selector = pafs.FileSelector(folder, allow_not_found=True)
        for item in self.fs.get_file_info(selector):
            leftover = item.path.rsplit("/", 1)[-1]
            mine = leftover.startswith(f".{name}") if prefix else leftover.startswith(f".{name}.")
            if mine and UPLOAD_MARK in leftover and item.path not in self._temporaries:
                self.fs.delete_file(item.path)

    def discard_temporaries(self) -> None:
        leftovers, self._temporaries = self._temporaries, set()
        for temp in leftovers:
            with contextlib.suppress(FileNotFoundError, pa.ArrowException, OSError):
                self.fs.delete_file(temp)

    def _hidden(self, final: str, tag: str) -> str:
        folder, name = final.rsplit("/", 1)
        return f"{folder}/.{name}{tag}"


def filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """(pyarrow file system, path inside it) for a URI."""
    scheme = uri.split("://", 1)[0].lower()
    if scheme in ("hdfs", "viewfs"):
        try:
            return pafs.FileSystem.from_uri(uri)
        except (pa.ArrowException, OSError, ValueError) as exc:
            raise ConfigError(f"{uri}: cannot open this location: {exc}") from exc
    try:
        import fsspec
    except ImportError as exc:  # pragma: no cover - torch depends on fsspec
        raise ConfigError(f"{uri}: this scheme needs fsspec") from exc
    try:
        fs, path = fsspec.core.url_to_fs(uri)
    except (ImportError, ValueError) as exc:
        raise ConfigError(f"{uri}: unknown or unavailable scheme ({exc})") from exc
    return pafs.PyFileSystem(pafs.FSSpecHandler(fs)), path


class ArrowUpload(Upload):
    """A writer's output stream under a hidden name, moved into place when published."""

    def __init__(self, storage: ArrowStorage, key: str, temp: str, final: str) -> None:
        self.storage = storage
        self.key = key
        self.temp = temp
        self.final = final
        self._stream: Any = None

    @property
    def target(self) -> Any:
        if self._stream is None:
            self._stream = self.storage.fs.open_output_stream(self.temp)
        return self._stream

    def publish(self) -> None:
        if self._stream is not None and not self._stream.closed:
            self._stream.close()  # the writer leaves a stream it was given open
        self.storage.fs.move(self.temp, self.final)
        self.storage._temporaries.discard(self.temp)

    def discard(self) -> None:
        if self._stream is not None and not self._stream.closed:
            self._stream.close()
        with contextlib.suppress(FileNotFoundError, pa.ArrowException, OSError):
            self.storage.fs.delete_file(self.temp)
        self.storage._temporaries.discard(self.temp)
