"""Azure Blob Storage (az://, abfs://, abfss://, adl://, azure://) and Google Cloud Storage
(gs://, gcs://) through obstore: inputs, outputs, the job's records, `status` and `verify`.

obstore gives every guarantee the job needs on Azure: create-if-absent is a PUT with
If-None-Match: * (AlreadyExistsError), a swap a PUT with If-Match on the ETag read
(PreconditionError), reads are ranged GETs, and its writer stages an output as blocks that
appear under the key only when the block list is committed, at publish. On GCS the same calls
send x-goog-if-generation-match (0, or the generation read). Settings come from the environment
obstore reads (AZURE_STORAGE_ACCOUNT_NAME, AZURE_STORAGE_ACCOUNT_KEY, AZURE_STORAGE_USE_EMULATOR,
AZURITE_BLOB_STORAGE_URL; GOOGLE_SERVICE_ACCOUNT, GOOGLE_APPLICATION_CREDENTIALS...).

Own code kept, and why: the seekable file a Parquet reader needs (base.RangedReader: obstore's
ReadableFile lacks the `closed` a pyarrow file wants), and the read-compare-swap that turns
obstore's conditional put into "replace only what was read". Unfinished uploads of a killed
process cannot be listed or dropped through obstore: on Azure they are uncommitted blocks, never
listed, dropped by the next commit of the blob or by Azure after 7 days; on GCS they are XML
multipart uploads, for a lifecycle rule to remove. gs:// stays `conditional = False` (no
--workers) until its preconditions are tested: no GCS emulator here honours them.
"""

from __future__ import annotations

import contextlib
import os
import threading
from typing import Any, BinaryIO

from etl.errors import ConfigError, EmbedEtlError, StorageError
from etl.storage.base import Entry, Storage, join, nanoseconds, ranged_file
from etl.storage.blob_upload import BlobUpload
from etl.storage.location import Location
from etl.storage.parts import upload_part_size

AZURE = ("az", "abfs", "abfss", "adl", "azure")
GCS = ("gs", "gcs")


class BlobStorage(Storage):
    """Objects under scheme://container-or-bucket/prefix/. Picklable; each process opens its own
    store (obstore's runtime must not cross a fork: see etl.storage.fork_safe)."""

    range_gap = 1 << 20  # a request costs more than a MiB read with it

    def __init__(self, root: str, prefix: str = "") -> None:
        self.root = root.rstrip("/")  # scheme://container or scheme://bucket
        self.prefix = prefix.strip("/")
        self.scheme = root.split("://", 1)[0].lower()
        self.conditional = self.scheme in AZURE  # proven on Azurite; see the docstring for gs
        self.part_size = upload_part_size()  # a block (Azure) or part (GCS)
        self._store: Any = None
        self._store_pid = -1
        self._uploads: set[BlobUpload] = set()
        self._lock = threading.Lock()

    @classmethod
    def from_uri(cls, uri: str) -> BlobStorage:
        where = Location.parse(uri)
        scheme = where.scheme
        if where.redacted != uri:  # a password or a query (abfss://container@account is a name)
            raise ConfigError(
                f"{where.redacted}: a {scheme}:// URI carries no credentials or options here; give "
                "them in the environment (AZURE_STORAGE_*, GOOGLE_*), never in a URI that records "
                "and logs would name"
            )
        if not where.authority:
            raise ConfigError(f"{uri}: expected {scheme}://container/prefix")
        return cls(str(where.root), where.path[1:])

    def __getstate__(self) -> dict:
        return {"root": self.root, "prefix": self.prefix}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["root"], state["prefix"])

    def __repr__(self) -> str:
        return f"BlobStorage({self.uri()!r})"

    @property
    def store(self) -> Any:
        """obstore's store for the container or bucket, made in this process."""
        if self._store is None or self._store_pid != os.getpid():
            try:
                from obstore.store import AzureStore, GCSStore
            except ImportError as exc:
                extra = "azure" if self.scheme in AZURE else "gcs"
                needs = f"{self.scheme}:// needs obstore; pip install 'embed-etl[{extra}]'"
                raise ConfigError(f"{self.uri()}: {needs}") from exc
            try:
                if self.scheme in AZURE:
                    self._store = AzureStore.from_url(self.root)
                else:
                    self._store = GCSStore.from_url(f"gs://{self.root.split('://', 1)[1]}")
            except Exception as exc:
                raise ConfigError(f"{self.uri()}: cannot open this location: {exc}") from exc
            self._store_pid = os.getpid()
        return self._store

    def full(self, key: str) -> str:
        return join(self.prefix, key)

    def uri(self, key: str = "") -> str:
        return f"{self.root}/{self.full(key)}"

    def child(self, prefix: str) -> BlobStorage:
        child = BlobStorage(self.root, self.full(prefix))
        if self._store_pid == os.getpid():
            child._store, child._store_pid = self._store, self._store_pid  # one client
        return child

    def check(self) -> None:
        import obstore as obs

        with self._errors(""):
            next(iter(obs.list(self.store, self.full("") or None, chunk_size=1)), None)

    def read(self, key: str) -> bytes | None:
        import obstore as obs

        try:
            with self._errors(key):
                return bytes(obs.get(self.store, self.full(key)).bytes())
        except FileNotFoundError:
            return None

    def open(self, key: str) -> BinaryIO:
        entry = self.stat(key)
        if entry is None:
            raise FileNotFoundError(self.uri(key))
        return ranged_file(self, key, entry.size)

    def read_ranges(self, key: str, ranges: list[tuple[int, int]]) -> list[bytes]:
        """The ranges in one call; obstore fetches them concurrently, nearby ones together."""
        import obstore as obs

        wanted = [(o, n) for o, n in ranges if n > 0]
        with self._errors(key):
            got = (
                obs.get_ranges(
                    self.store,
                    self.full(key),
                    starts=[o for o, _ in wanted],
                    ends=[o + n for o, n in wanted],
                )
                if wanted
                else []
            )
        found = iter(bytes(b) for b in got)
        return [next(found) if n > 0 else b"" for _, n in ranges]

    def exists(self, key: str) -> bool:
        return self.stat(key) is not None

    def stat(self, key: str) -> Entry | None:
        import obstore as obs

        try:
            with self._errors(key):
                meta = obs.head(self.store, self.full(key))
        except FileNotFoundError:
            return None
        return Entry(key, int(meta["size"]), nanoseconds(meta["last_modified"]))

    def list(self, prefix: str) -> list[Entry]:
        import obstore as obs

        base = self.full(prefix)
        skip = len(self.full("")) + 1 if self.prefix else 0
        found = []
        with self._errors(prefix):
            for chunk in obs.list(self.store, base or None, chunk_size=1000):
                for meta in chunk:
                    when = nanoseconds(meta["last_modified"])
                    found.append(Entry(meta["path"][skip:], int(meta["size"]), when))
        return sorted(found, key=lambda e: e.key)

    def create(self, key: str, data: bytes) -> bool:
        return self._put(key, data, "create")

    def put(self, key: str, data: bytes) -> None:
        self._put(key, data, "overwrite")

    def swap(self, key: str, expected: bytes | None, data: bytes) -> bool:
        import obstore as obs

        if expected is None:
            return self.create(key, data)
        try:
            with self._errors(key):
                current = obs.get(self.store, self.full(key))
                held = bytes(current.bytes())
        except FileNotFoundError:
            return False
        if held != expected:
            return False
        meta = current.meta
        version = {k: meta[k] for k in ("e_tag", "version") if meta.get(k) is not None}
        return self._put(key, data, version)

    def delete(self, key: str) -> None:
        import obstore as obs

        with contextlib.suppress(FileNotFoundError), self._errors(key):
            obs.delete(self.store, self.full(key))

    def upload(self, key: str) -> BlobUpload:
        upload = BlobUpload(self, key)
        with self._lock:
            self._uploads.add(upload)
        return upload

    def discard_stale_uploads(self, key: str, prefix: bool = False) -> None:
        """Nothing to do, nor any way to: see the module's docstring."""

    def discard_temporaries(self) -> None:
        with self._lock:
            uploads, self._uploads = self._uploads, set()
        for upload in uploads:
            upload.discard()

    def forget(self, upload: BlobUpload) -> None:
        with self._lock:
            self._uploads.discard(upload)

    def _put(self, key: str, data: bytes, mode: Any) -> bool:
        import obstore as obs
        from obstore.exceptions import AlreadyExistsError, PreconditionError

        try:
            with self._errors(key):
                obs.put(self.store, self.full(key), data, mode=mode, use_multipart=False)
        except (AlreadyExistsError, PreconditionError, FileNotFoundError):
            if mode == "overwrite":
                raise
            return False
        return True

    @contextlib.contextmanager
    def _errors(self, key: str) -> Any:
        """obstore's errors as one line naming the URI once; not-found, already-exists and
        precondition errors pass through for the caller to decide."""
        from obstore.exceptions import AlreadyExistsError, BaseError, PreconditionError

        try:
            yield
        except FileNotFoundError as exc:
            if _missing_root(exc):
                raise _error(exc, self.uri(key), self.root) from exc
            raise
        except (AlreadyExistsError, PreconditionError, EmbedEtlError):
            raise
        except (BaseError, OSError) as exc:
            raise _error(exc, self.uri(key), self.root) from exc


def _error(exc: BaseException, uri: str, root: str) -> EmbedEtlError:
    """One line naming the URI once and what the store said (no exception class names)."""
    from obstore.exceptions import PermissionDeniedError, UnauthenticatedError

    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if _missing_root(exc):
        return ConfigError(f"{uri}: the container or bucket {root} does not exist")
    if isinstance(exc, (PermissionDeniedError, UnauthenticatedError)) or "403" in str(exc):
        return StorageError(f"{uri}: access denied; check the store's credentials ({text})")
    return StorageError(f"{uri}: {text}")


def _missing_root(exc: BaseException) -> bool:
    """A 404 for the container or bucket itself, not for an object in it."""
    return any(code in str(exc) for code in ("ContainerNotFound", "NoSuchBucket"))
