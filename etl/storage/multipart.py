"""An S3 upload as a file a Parquet writer writes to: parts go up as they fill (a multipart
upload), and the object appears only when the upload is completed, at publish; an object
smaller than one part is a single PUT then. Discarding aborts the upload."""

from __future__ import annotations

import contextlib
from typing import Any

from etl.storage.base import StreamedUpload
from etl.storage.parts import PART_SIZE

MAX_PARTS = 10_000  # S3's limits: parts in an upload, bytes in a part, bytes in an object
MAX_PART = 5 << 30
MAX_OBJECT = 5 << 40
PARTS_PER_DOUBLING = 800  # the part size doubles every this many parts


def part_size(number: int, first: int = PART_SIZE) -> int:
    """The size of part ``number`` (from 1): ``first``, doubling every PARTS_PER_DOUBLING parts,
    up to S3's 5 GiB. An output of a few GB goes up in 8 MiB parts (the memory an upload holds);
    10,000 parts reach past S3's 5 TiB object limit even from 5 MiB ones."""
    return min(first << ((number - 1) // PARTS_PER_DOUBLING), MAX_PART)


class S3Upload(StreamedUpload):
    """A binary file object for a writer: parts go up as they fill; published on complete."""

    def __init__(self, storage: Any, key: str) -> None:  # an S3Storage
        self.storage = storage
        self.key = key
        self.upload_id: str | None = None
        self.parts: list[dict] = []
        self.buffer = bytearray()

    # The rest of the file protocol is StreamedUpload's.
    def write(self, data: bytes) -> int:
        self.buffer += data
        self.written += len(data)
        while len(self.buffer) >= (size := part_size(len(self.parts) + 1, self.storage.part_size)):
            self._send(bytes(self.buffer[:size]))
            del self.buffer[:size]
        return len(data)

    def publish(self) -> None:
        storage, full = self.storage, self.storage.full(self.key)
        if self.upload_id is None:
            storage.put(self.key, bytes(self.buffer))
        else:
            if self.buffer:
                self._send(bytes(self.buffer))
            storage.client.complete_multipart_upload(
                Bucket=storage.bucket,
                Key=full,
                UploadId=self.upload_id,
                MultipartUpload={"Parts": self.parts},
            )
        self.buffer = bytearray()
        storage.forget(self)

    def discard(self) -> None:
        storage = self.storage
        if self.upload_id is not None:
            # Already gone, or the store is unreachable: the next claimant aborts leftovers.
            with contextlib.suppress(Exception):
                storage.client.abort_multipart_upload(
                    Bucket=storage.bucket, Key=storage.full(self.key), UploadId=self.upload_id
                )
            self.upload_id = None
        self.buffer = bytearray()
        storage.forget(self)

    def _send(self, part: bytes) -> None:
        storage, full = self.storage, self.storage.full(self.key)
        client = storage.client
        if self.upload_id is None:
            started = client.create_multipart_upload(Bucket=storage.bucket, Key=full)
            self.upload_id = started["UploadId"]
        number = len(self.parts) + 1
        sent = client.upload_part(
            Bucket=storage.bucket, Key=full, UploadId=self.upload_id, PartNumber=number, Body=part
        )
        self.parts.append({"PartNumber": number, "ETag": sent["ETag"]})
