"""A directory as an output location (also a shared file system every node mounts).

Writes are atomic through temporary files renamed or linked into place. Nothing half-written is
ever left behind: every temporary file is registered before it exists, so
``discard_temporaries`` (run on the way out, however the run ends) removes each one that is
still there, whatever instant an interrupt arrived at.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from etl.errors import StorageError
from etl.storage.base import Entry, Storage, Upload
from etl.storage.marks import CREATE_MARK, PUT_MARK, TEMPORARY_MARKS, UPLOAD_MARK


class LocalUpload(Upload):
    """A file written for one key that appears under the key only once published."""

    def __init__(self, storage: LocalStorage, key: str, temp: Path) -> None:
        self.storage = storage
        self.key = key
        self.temp = temp

    @property
    def target(self) -> str:
        """Where the writer writes (a local file)."""
        return str(self.temp)

    def publish(self) -> None:
        """Make the whole file appear under its key at once, durably."""
        final = self.storage.local_path(self.key)
        _fsync(self.temp)
        os.replace(self.temp, final)
        _fsync(final.parent)
        self.storage.forget(self.temp)

    def discard(self) -> None:
        self.temp.unlink(missing_ok=True)
        self.storage.forget(self.temp)


class LocalStorage(Storage):
    """A directory on a local or shared file system. Picklable; each process tracks its own
    temporary files."""

    def __init__(self, root: str | Path, confined: bool = True) -> None:
        self.root = Path(root).expanduser().absolute()
        self.confined = confined  # outputs: no link leads out; inputs may be links anywhere
        self._real_root = self.root.resolve()  # once: every key is checked against it
        self._temporaries: set[Path] = set()
        self._lock = threading.Lock()

    def __getstate__(self) -> dict:
        return {"root": self.root, "confined": self.confined}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["root"], state.get("confined", True))

    def __repr__(self) -> str:
        return f"LocalStorage({str(self.root)!r})"

    def child(self, prefix: str) -> LocalStorage:
        """A storage rooted at a folder key of this one."""
        return LocalStorage(self.local_path(prefix))

    def uri(self, key: str = "") -> str:
        """The key as users see it in messages and records."""
        return str(self.local_path(key))

    def local_path(self, key: str) -> Path:
        """The key's file, which no link or '..' may place outside the root."""
        if not key:
            return self.root
        path = self.root / key
        if self.confined and not (real := path.resolve()).is_relative_to(self._real_root):
            raise StorageError(
                f"{path}: leads to {real}, outside {self.root}; a job reads and writes only "
                "inside its location (remove the link)"
            )
        return path

    def read(self, key: str) -> bytes | None:
        """The object's bytes, or None if there is none."""
        try:
            return self.local_path(key).read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None

    def open(self, key: str) -> BinaryIO:
        """The object for reading (a Parquet footer, say); FileNotFoundError if absent."""
        return open(self.local_path(key), "rb")

    def read_ranges(self, key: str, ranges: list[tuple[int, int]]) -> list[bytes]:
        """The file opened once, each range read with pread."""
        fd = os.open(self.local_path(key), os.O_RDONLY)
        try:
            return [os.pread(fd, length, offset) for offset, length in ranges]
        finally:
            os.close(fd)

    def exists(self, key: str) -> bool:
        return self.local_path(key).is_file()

    def stat(self, key: str) -> Entry | None:
        try:
            st = self.local_path(key).stat()
        except OSError:
            return None
        return Entry(key, st.st_size, st.st_mtime_ns)

    def list(self, prefix: str) -> list[Entry]:
        """Every object under ``prefix`` (a folder key), sorted; temporaries left out."""
        base = self.local_path(prefix)
        if not base.is_dir():
            return []
        found = []
        for dirpath, _, filenames in os.walk(base):
            for name in filenames:
                if name.startswith("."):
                    continue  # temporaries and locks
                path = Path(dirpath) / name
                try:
                    st = path.stat()
                except OSError:
                    continue  # deleted meanwhile
                key = path.relative_to(self.root).as_posix()
                found.append(Entry(key, st.st_size, st.st_mtime_ns))
        return sorted(found, key=lambda e: e.key)

    def create(self, key: str, data: bytes) -> bool:
        """Write the object unless the key exists; False if it does (someone else was first).

        The bytes go to a private file first and are linked into place, so a reader sees the
        whole object or none.
        """
        final = self.local_path(key)
        private = self._temporary(final, f"{CREATE_MARK}{uuid.uuid4().hex[:8]}")
        try:
            private.write_bytes(data)
            os.link(private, final)
            return True
        except FileExistsError:
            return False
        finally:
            private.unlink(missing_ok=True)
            self.forget(private)

    def put(self, key: str, data: bytes) -> None:
        """Write the whole object, replacing any other at once."""
        final = self.local_path(key)
        temp = self._temporary(final, f"{PUT_MARK}{uuid.uuid4().hex[:8]}")
        try:
            temp.write_bytes(data)
            os.replace(temp, final)
        finally:
            temp.unlink(missing_ok=True)
            self.forget(temp)

    def swap(self, key: str, expected: bytes | None, data: bytes) -> bool:
        """Replace the object only if it still holds ``expected`` (None: only if absent)."""
        final = self.local_path(key)
        final.parent.mkdir(parents=True, exist_ok=True)
        with _flock(final.parent / ".swap.lock"):
            if self.read(key) != expected:
                return False
            self.put(key, data)
            return True

    def delete(self, key: str) -> None:
        self.local_path(key).unlink(missing_ok=True)

    def delete_prefix(self, prefix: str) -> None:
        """Delete every object under a folder key."""
        shutil.rmtree(self.local_path(prefix), ignore_errors=True)

    def touch(self, key: str) -> None:
        """Refresh the object's modification time (a heartbeat); no-op if it is gone."""
        with contextlib.suppress(FileNotFoundError):
            os.utime(self.local_path(key))

    def upload(self, key: str) -> Upload:
        """Start writing an object; it appears under ``key`` only when published."""
        final = self.local_path(key)
        return LocalUpload(self, key, self._temporary(final, f"{UPLOAD_MARK}{os.getpid()}"))

    def discard_stale_uploads(self, key: str, prefix: bool = False) -> None:
        """Remove uploads of ``key`` (``prefix``: of keys that start with it) left by processes
        that died (call only while holding the key's claim, so that nobody else is writing it)."""
        final = self.local_path(key)
        if not final.parent.is_dir():
            return
        start = f".{final.name}"
        for leftover in final.parent.iterdir():
            name = leftover.name
            if not name.startswith(start) or UPLOAD_MARK not in name:
                continue
            if (prefix or name.startswith(f"{start}{UPLOAD_MARK}")) and (
                leftover not in self._temporaries
            ):
                leftover.unlink(missing_ok=True)

    def discard_abandoned_uploads(self, prefix: str, older_than: float) -> int:
        """Remove this folder's temporary files older than ``older_than`` seconds that no
        thread of this process is writing."""
        base = self.local_path(prefix)
        if not base.is_dir():
            return 0
        now, removed = time.time(), 0
        for path in base.iterdir():
            if not path.name.startswith(".") or path in self._temporaries:
                continue
            if not any(mark in path.name for mark in TEMPORARY_MARKS):
                continue
            try:
                if now - path.stat().st_mtime < older_than:
                    continue
                path.unlink()
                removed += 1
            except FileNotFoundError:
                continue
        return removed

    def discard_temporaries(self) -> None:
        """Remove every temporary file this process registered and did not finish."""
        with self._lock:
            leftovers, self._temporaries = self._temporaries, set()
        for path in leftovers:
            path.unlink(missing_ok=True)

    def forget(self, temp: Path) -> None:
        with self._lock:
            self._temporaries.discard(temp)

    def _temporary(self, final: Path, suffix: str) -> Path:
        """A hidden sibling of ``final``, registered for cleanup before it can exist."""
        final.parent.mkdir(parents=True, exist_ok=True)
        temp = final.parent / f".{final.name}{suffix}"
        with self._lock:
            self._temporaries.add(temp)
        return temp


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _flock(path: Path) -> Iterator[None]:
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
