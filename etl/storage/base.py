"""What every storage backend offers: the objects, the operations, the upload, and a ranged
reader for stores that have ranged reads but no file object a Parquet reader can seek in."""

from __future__ import annotations

import io
from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, BinaryIO

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


@dataclass(frozen=True)
class Entry:
    """One stored object."""

    key: str
    size: int
    mtime_ns: int  # nanoseconds since the epoch, as exact as the store says

    @property
    def mtime(self) -> float:
        """Seconds since the epoch."""
        return self.mtime_ns / 1e9


def nanoseconds(when: datetime) -> int:
    """A store's timestamp as integer nanoseconds since the epoch, with no float rounding."""
    delta = when - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 10**9 + delta.microseconds * 1000


class Upload(ABC):
    """An object being written; it appears under its key only once published, whole."""

    key: str

    @property
    @abstractmethod
    def target(self) -> Any:
        """What a writer writes to: a local path, or a binary file object."""

    @abstractmethod
    def publish(self) -> None:
        """Make the whole object appear under its key at once (after the writer closed)."""

    @abstractmethod
    def discard(self) -> None:
        """Drop what was written; the key is untouched."""


class StreamedUpload(Upload):
    """An upload that is itself the binary file a Parquet writer writes to, sent as it fills
    (an S3 multipart upload, an Azure or GCS block writer): the write-only file protocol
    pyarrow uses, with ``write`` left to the store. close() leaves it to publish or discard."""

    written = 0
    closed = False

    @property
    def target(self) -> StreamedUpload:
        return self

    @abstractmethod
    def write(self, data: bytes) -> int: ...

    def tell(self) -> int:
        return self.written

    def flush(self) -> None:
        return None

    def close(self) -> None:
        self.closed = True

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def readable(self) -> bool:
        return False


class Storage(ABC):
    """An output location. Keys are '/'-separated and relative to it. Picklable: every
    process opens its own connections and tracks its own temporaries."""

    conditional: bool = True  # create-if-absent and swap are atomic across processes
    range_gap: int = 1 << 12  # ranges closer than this are cheaper read as one (a page)

    @abstractmethod
    def uri(self, key: str = "") -> str:
        """The key as users see it in messages and records."""

    @abstractmethod
    def child(self, prefix: str) -> Storage:
        """A storage rooted at a folder key of this one."""

    @abstractmethod
    def read(self, key: str) -> bytes | None:
        """The object's bytes, or None if there is none."""

    @abstractmethod
    def open(self, key: str) -> BinaryIO:
        """The object for reading; FileNotFoundError if absent."""

    def read_ranges(self, key: str, ranges: list[tuple[int, int]]) -> list[bytes]:
        """The bytes of each (offset, length) range of the object; FileNotFoundError if absent.
        Backends read them without fetching the rest of the object."""
        with self.open(key) as handle:
            found = []
            for offset, length in ranges:
                handle.seek(offset)
                found.append(handle.read(length))
            return found

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def stat(self, key: str) -> Entry | None: ...

    @abstractmethod
    def list(self, prefix: str) -> list[Entry]:
        """Every object under a folder key, sorted; temporaries left out."""

    @abstractmethod
    def create(self, key: str, data: bytes) -> bool:
        """Write the object unless the key exists; False if it does (someone else was first)."""

    @abstractmethod
    def put(self, key: str, data: bytes) -> None:
        """Write the whole object, replacing any other at once."""

    @abstractmethod
    def swap(self, key: str, expected: bytes | None, data: bytes) -> bool:
        """Replace the object only if it still holds ``expected`` (None: only if absent)."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Delete the object; deleting one that is gone is fine."""

    def delete_prefix(self, prefix: str) -> None:
        """Delete every object under a folder key (one by one, unless the store does better)."""
        for entry in self.list(prefix):
            self.delete(entry.key)

    def touch(self, key: str) -> None:
        """Refresh the object's modification time (a heartbeat); no-op if it is gone. An
        object store rewrites the object as it is, only if unchanged: its modification time
        moves on."""
        data = self.read(key)
        if data is not None:
            self.swap(key, data, data)

    @abstractmethod
    def upload(self, key: str) -> Upload:
        """Start writing an object that appears under ``key`` only when published."""

    @abstractmethod
    def discard_stale_uploads(self, key: str, prefix: bool = False) -> None:
        """Remove unfinished uploads of ``key`` (``prefix``: of every key that starts with it)
        left by processes that died (call only while holding the key's claim, so that nobody
        else is writing it)."""

    def discard_abandoned_uploads(self, prefix: str, older_than: float) -> int:
        """Remove unfinished uploads under a folder key started over ``older_than`` seconds ago
        (by processes long gone: maintenance, such as `store gc`); how many. Stores that keep
        no unfinished uploads have none."""
        return 0

    @abstractmethod
    def discard_temporaries(self) -> None:
        """Remove every temporary this process started and did not finish."""

    def check(self) -> None:
        """Raise a clear error now if the location cannot be used (no bucket, no access)."""
        return


def join(*parts: str) -> str:
    """Join key parts with '/', ignoring empty ones."""
    return "/".join(p.strip("/") for p in parts if p and p.strip("/"))


class RangedReader(io.RawIOBase):
    """A read-only, seekable view of one object; each read is one ranged read of the storage
    (wrap it in io.BufferedReader). A Parquet reader reads a footer, then the column chunks it
    needs, never the whole object."""

    def __init__(self, storage: Storage, key: str, size: int) -> None:
        super().__init__()
        self.storage, self.key, self.size, self.position = storage, key, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: self.size}[whence]
        self.position = max(0, base + offset)
        return self.position

    def readinto(self, buffer: Any) -> int:
        length = min(len(buffer), self.size - self.position)
        if length <= 0:
            return 0
        (data,) = self.storage.read_ranges(self.key, [(self.position, length)])
        buffer[: len(data)] = data
        self.position += len(data)
        return len(data)


def ranged_file(storage: Storage, key: str, size: int) -> BinaryIO:
    """The object as a buffered, seekable file of ranged reads (64 KiB at least each)."""
    return io.BufferedReader(RangedReader(storage, key, size), buffer_size=1 << 16)
