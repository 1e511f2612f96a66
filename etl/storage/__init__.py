"""The one seam to where data lives: local paths, s3:// and the other object stores.

An output location is a Storage: list, read, create-if-absent, put a whole object, replace only
what was read (swap), delete, and an upload that appears only when published. Every read and
write the job makes under --output goes through one. Inputs are read through ``files``: a
pyarrow file system for any path or URI, so a shard streams row group by row group.

base    the operations every backend offers, and the upload
local   a directory (also any shared file system)
s3      s3:// and S3-compatible stores (MinIO, R2...): conditional writes, multipart uploads
arrow   any other pyarrow or fsspec file system (memory://, gs://, abfs://...)
files   the input side: list, stat and open files by path or URI
"""

from __future__ import annotations

from pathlib import Path

from etl.storage.base import Entry, Storage, Upload, is_uri, join


def open_storage(location: str | Path) -> Storage:
    """The storage behind an --output location: a path, or a URI."""
    if not is_uri(location):
        from etl.storage.local import LocalStorage

        return LocalStorage(location)
    text = str(location)
    scheme = text.split("://", 1)[0].lower()
    if scheme in ("s3", "s3a"):
        from etl.storage.s3 import S3Storage

        return S3Storage.from_uri(text)
    if scheme == "file":
        from etl.storage.local import LocalStorage

        return LocalStorage(text.split("://", 1)[1])
    from etl.storage.arrow import ArrowStorage

    return ArrowStorage.from_uri(text)


__all__ = ["Entry", "Storage", "Upload", "is_uri", "join", "open_storage"]
