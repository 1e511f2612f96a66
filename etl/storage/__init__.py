"""The one seam to where data lives: local paths, s3://, az://, gs:// and the other stores.

A location is a Storage: list, read, create-if-absent, put a whole object, replace only what was
read (swap), delete, and an upload that appears only when published. Every read and write the
job makes, inputs included (through ``files``), goes through one, and ``storage_at`` (which
``open_storage`` asks) is the one place that maps a scheme to its backend, so each kind of
store has one client family.

base    the operations every backend offers, the upload, a ranged reader
local   a directory (also any shared file system)
s3      s3:// and S3-compatible stores (MinIO, R2...), through boto3
blob    az://, abfs[s]:// (Azure Blob Storage) and gs:// (Google Cloud Storage), through obstore
arrow   any other pyarrow or fsspec file system (memory://, hdfs://...)
files   the input side: list, stat and open files by path or URI
location  a path or URI parsed once: scheme, store root, key, query, glob
"""

from __future__ import annotations

from pathlib import Path

from etl.storage.base import Entry, Storage, Upload, join
from etl.storage.location import Location, is_uri

S3 = ("s3", "s3a")
OBSTORE = ("az", "abfs", "abfss", "adl", "azure", "gs", "gcs")  # etl.storage.blob


def open_storage(location: str | Path | Location) -> Storage:
    """The storage behind a location: a path, or a URI."""
    return storage_at(Location.parse(location))


def storage_at(where: Location) -> Storage:
    """The storage behind a location parsed already."""
    scheme, text = where.kind, str(where)
    if scheme in ("", "file"):
        from etl.storage.local import LocalStorage

        return LocalStorage(where.authority + where.path + where.query if scheme else text)
    if scheme in S3:
        from etl.storage.s3 import S3Storage

        return S3Storage.from_uri(text)
    if scheme in OBSTORE:
        from etl.storage.blob import BlobStorage

        return BlobStorage.from_uri(text)
    from etl.storage.arrow import ArrowStorage

    return ArrowStorage.from_uri(text)


def fork_safe(locations: tuple[str, ...]) -> bool:
    """Whether a process forked after using these locations can still use them: obstore's
    runtime does not survive a fork (its threads stay behind), boto3 and the others do."""
    return not any(Location.parse(location).kind in OBSTORE for location in locations if location)


__all__ = [
    "Entry",
    "Location",
    "Storage",
    "Upload",
    "fork_safe",
    "is_uri",
    "join",
    "open_storage",
    "storage_at",
]
