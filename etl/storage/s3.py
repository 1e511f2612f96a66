"""s3:// (and S3-compatible stores: MinIO, R2, Ceph) through boto3: inputs, outputs, the job's
records, `status` and `verify`, one client family with one credential and endpoint resolution.

Credentials, region and endpoint come from where the AWS tools look: AWS_* environment variables
(AWS_ENDPOINT_URL included), profiles, instance roles; or from the URI itself, as pyarrow reads
it: s3://ACCESS_KEY:SECRET_KEY@bucket/prefix?region=...&endpoint_override=...&session_token=...
(kept in the storage object only: uri() and every record and message name s3://bucket/prefix).
Create-if-absent is a conditional PUT (If-None-Match: *), a swap a PUT with If-Match on the ETag
read: two processes never both win. An output is written as a multipart upload that is completed
only when published, after its rows were checked (a small one as a single PUT), so a key holds a
whole object or none; uploads a killed process left unfinished are aborted by whoever claims the
shard next. Reads are ranged GETs (base.RangedReader: boto3 has no seekable object a Parquet
reader can use), so a footer never costs the whole object and a shard streams one row group at a
time.

Why boto3 and not obstore: obstore 0.12.1, checked against the S3 test server (moto), gives
create-if-absent (AlreadyExistsError), compare-and-swap on the ETag (PreconditionError) and
ranged reads, and its writer aborts its own upload (leaving a `with` block by an exception), but
it cannot list the multipart uploads a killed process left, which is how a rerun leaves nothing
behind (ListMultipartUploads, AbortMultipartUpload): that guarantee needs the S3 API itself.
Inputs go through this same module rather than a second client (pyarrow's, obstore's), so one
job resolves its S3 credentials and endpoint once, from one place. (Azure's unfinished uploads
are uncommitted blocks that nothing lists, which is why az:// can use obstore: see blob.py.)
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any, BinaryIO

from etl.errors import ConfigError, EmbedEtlError, StorageError
from etl.storage.base import Entry, Storage, join, nanoseconds, ranged_file
from etl.storage.multipart import S3Upload
from etl.storage.parts import upload_part_size
from etl.storage.s3_uri import parse_s3_uri

CONFLICT = ("PreconditionFailed", "ConditionalRequestConflict", "412", "409")


class S3Storage(Storage):
    """Objects under s3://bucket/prefix/. Picklable; each process makes its own client."""

    conditional = True
    range_gap = 1 << 20  # a request costs more than a MiB read with it

    def __init__(self, bucket: str, prefix: str = "", client_options: dict | None = None) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.client_options = dict(client_options or {})  # from the URI: credentials and all
        self.part_size = upload_part_size(s3=True)  # the first parts' (etl.storage.multipart)
        self._client: Any = None
        self._client_pid = -1
        self._uploads: set[S3Upload] = set()
        self._lock = threading.Lock()

    @classmethod
    def from_uri(cls, uri: str) -> S3Storage:
        return cls(*parse_s3_uri(uri))

    def __getstate__(self) -> dict:
        return {"bucket": self.bucket, "prefix": self.prefix, "options": self.client_options}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["bucket"], state["prefix"], state.get("options"))

    def __repr__(self) -> str:
        return f"S3Storage({self.uri()!r})"

    @property
    def client(self) -> Any:
        """A boto3 client for this process (clients must not cross a fork)."""
        if self._client is None or self._client_pid != os.getpid():
            try:
                import boto3
                from botocore.config import Config
            except ImportError as exc:
                raise ConfigError(
                    f"{self.uri()}: s3:// needs boto3; pip install 'embed-etl[s3]'"
                ) from exc
            config = Config(retries={"mode": "standard"}, max_pool_connections=16)
            self._client = boto3.session.Session().client(
                "s3", config=config, **self.client_options
            )
            self._client_pid = os.getpid()
        return self._client

    def full(self, key: str) -> str:
        return join(self.prefix, key)

    def uri(self, key: str = "") -> str:
        return f"s3://{self.bucket}/{self.full(key)}"

    def child(self, prefix: str) -> S3Storage:
        return S3Storage(self.bucket, self.full(prefix), self.client_options)

    def check(self) -> None:
        try:
            self.client.list_objects_v2(Bucket=self.bucket, Prefix=self.full(""), MaxKeys=1)
        except Exception as exc:
            raise _error(exc, self.uri(), self._client) from exc

    def read(self, key: str) -> bytes | None:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=self.full(key))["Body"].read()
        except Exception as exc:
            if _code(exc) in ("NoSuchKey", "404"):
                return None
            raise _error(exc, self.uri(key), self._client) from exc

    def open(self, key: str) -> BinaryIO:
        """The object for random access by ranged GETs as the reader seeks: a Parquet footer
        costs two small requests, never the whole object."""
        entry = self.stat(key)
        if entry is None:
            raise FileNotFoundError(self.uri(key))
        return ranged_file(self, key, entry.size)

    def read_ranges(self, key: str, ranges: list[tuple[int, int]]) -> list[bytes]:
        """One ranged GET per range (callers merge nearby ranges: see range_gap)."""
        found = []
        for offset, length in ranges:
            if length <= 0:
                found.append(b"")
                continue
            try:
                reply = self.client.get_object(
                    Bucket=self.bucket,
                    Key=self.full(key),
                    Range=f"bytes={offset}-{offset + length - 1}",
                )
            except Exception as exc:
                if _code(exc) in ("NoSuchKey", "404"):
                    raise FileNotFoundError(self.uri(key)) from exc
                raise _error(exc, self.uri(key), self._client) from exc
            found.append(reply["Body"].read())
        return found

    def exists(self, key: str) -> bool:
        return self.stat(key) is not None

    def stat(self, key: str) -> Entry | None:
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self.full(key))
        except Exception as exc:
            if _code(exc) in ("404", "NoSuchKey", "NotFound"):
                return None
            raise _error(exc, self.uri(key), self._client) from exc
        return Entry(key, int(head["ContentLength"]), nanoseconds(head["LastModified"]))

    def list(self, prefix: str) -> list[Entry]:
        base = self.full(prefix)
        base = f"{base}/" if base else ""
        found = []
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=base
            )
            for page in pages:
                for item in page.get("Contents", ()):
                    key = item["Key"][len(self.full("")) :].lstrip("/")
                    when = nanoseconds(item["LastModified"])
                    found.append(Entry(key, int(item["Size"]), when))
        except Exception as exc:
            raise _error(exc, self.uri(prefix), self._client) from exc
        return sorted(found, key=lambda e: e.key)

    def create(self, key: str, data: bytes) -> bool:
        return self._put(key, data, IfNoneMatch="*")

    def put(self, key: str, data: bytes) -> None:
        self._put(key, data)

    def swap(self, key: str, expected: bytes | None, data: bytes) -> bool:
        if expected is None:
            return self.create(key, data)
        try:
            current = self.client.get_object(Bucket=self.bucket, Key=self.full(key))
        except Exception as exc:
            if _code(exc) in ("NoSuchKey", "404"):
                return False
            raise _error(exc, self.uri(key), self._client) from exc
        if current["Body"].read() != expected:
            return False
        return self._put(key, data, IfMatch=current["ETag"])

    def delete(self, key: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self.full(key))
        except Exception as exc:
            raise _error(exc, self.uri(key), self._client) from exc

    def delete_prefix(self, prefix: str) -> None:
        keys = [self.full(e.key) for e in self.list(prefix)]
        for start in range(0, len(keys), 1000):
            chunk = [{"Key": k} for k in keys[start : start + 1000]]
            self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": chunk})

    def upload(self, key: str) -> S3Upload:
        upload = S3Upload(self, key)
        with self._lock:
            self._uploads.add(upload)
        return upload

    def discard_stale_uploads(self, key: str, prefix: bool = False) -> None:
        with self._lock:  # the io thread adds and forgets uploads meanwhile
            ours = {u.upload_id for u in self._uploads}
        full = self.full(key)
        listing = self.client.list_multipart_uploads(Bucket=self.bucket, Prefix=full)
        for item in listing.get("Uploads", ()):
            if (item["Key"] == full or prefix) and item["UploadId"] not in ours:
                self.client.abort_multipart_upload(
                    Bucket=self.bucket, Key=item["Key"], UploadId=item["UploadId"]
                )

    def discard_abandoned_uploads(self, prefix: str, older_than: float) -> int:
        """Abort the multipart uploads under a folder key started over ``older_than`` seconds
        ago that this process is not writing."""
        with self._lock:
            ours = {u.upload_id for u in self._uploads}
        base = self.full(prefix)
        listing = self.client.list_multipart_uploads(
            Bucket=self.bucket, Prefix=f"{base}/" if base else ""
        )
        now, removed = time.time(), 0
        for item in listing.get("Uploads", ()):
            if item["UploadId"] in ours or now - item["Initiated"].timestamp() < older_than:
                continue
            self.client.abort_multipart_upload(
                Bucket=self.bucket, Key=item["Key"], UploadId=item["UploadId"]
            )
            removed += 1
        return removed

    def unfinished_uploads(self) -> list[str]:
        """Keys with a multipart upload started and neither completed nor aborted."""
        listing = self.client.list_multipart_uploads(Bucket=self.bucket, Prefix=self.full(""))
        return [item["Key"] for item in listing.get("Uploads", ())]

    def discard_temporaries(self) -> None:
        with self._lock:
            uploads, self._uploads = self._uploads, set()
        for upload in uploads:
            upload.discard()

    def forget(self, upload: S3Upload) -> None:
        with self._lock:
            self._uploads.discard(upload)

    def _put(self, key: str, data: bytes, **condition: str) -> bool:
        try:
            self.client.put_object(Bucket=self.bucket, Key=self.full(key), Body=data, **condition)
        except Exception as exc:
            if condition and _code(exc) in CONFLICT:
                return False
            if "IfMatch" in condition and _code(exc) in ("NoSuchKey", "404"):
                return False  # deleted since it was read: not the object expected
            raise _error(exc, self.uri(key), self._client) from exc
        return True


def _code(exc: BaseException) -> str:
    response = getattr(exc, "response", None) or {}
    error = response.get("Error", {})
    return str(error.get("Code") or response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))


def _error(exc: BaseException, uri: str, client: Any) -> EmbedEtlError:
    """One line naming the URI once and what the store said (no exception class names)."""
    if isinstance(exc, EmbedEtlError):
        return exc  # ours already (say, boto3 missing): said once, as it is
    code = _code(exc)
    bucket = uri.split("/")[2] if "//" in uri else uri
    if code in ("NoSuchBucket",) or "NoSuchBucket" in str(exc):
        return ConfigError(f"{uri}: the bucket {bucket} does not exist")
    if code in ("AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
        return StorageError(f"{uri}: access denied ({code}); check the AWS credentials")
    name = type(exc).__name__
    if "Endpoint" in name or "Connect" in name:
        endpoint = getattr(getattr(client, "meta", None), "endpoint_url", "?")
        return StorageError(f"{uri}: cannot reach the S3 endpoint {endpoint}")
    if "Credentials" in name:
        return StorageError(
            f"{uri}: AWS credentials missing or incomplete; set them where the AWS tools look"
        )
    response = getattr(exc, "response", None) or {}
    message = response.get("Error", {}).get("Message") or str(exc)
    return StorageError(
        f"{uri}: the store answered {code}: {message}" if code else f"{uri}: {message}"
    )
