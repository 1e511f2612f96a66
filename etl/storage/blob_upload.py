"""An Azure or GCS upload as a file a Parquet writer writes to: obstore's writer sends a block
(Azure Put Block) or part (GCS multipart) as each fills, and the object appears only when it
commits them, at publish; a small object is one PUT then. Discarding aborts the writer."""

from __future__ import annotations

import contextlib
from typing import Any

from etl.storage.base import StreamedUpload


class BlobUpload(StreamedUpload):
    """A binary file object for a Parquet writer: obstore's writer sends a block (part) as each
    fills; the object appears under its key at publish, when the writer commits them."""

    def __init__(self, storage: Any, key: str) -> None:  # a BlobStorage
        import obstore as obs

        self.storage = storage
        self.key = key
        self._writer: Any = obs.open_writer(
            storage.store, storage.full(key), buffer_size=storage.part_size, max_concurrency=2
        )

    # The rest of the file protocol is StreamedUpload's.
    def write(self, data: bytes) -> int:
        with self.storage._errors(self.key):
            self._writer.write(bytes(data))
        self.written += len(data)
        return len(data)

    def publish(self) -> None:
        with self.storage._errors(self.key):
            self._writer.close()  # commits: the object appears whole, now
        self.storage.forget(self)

    def discard(self) -> None:
        # obstore aborts its writer on leaving a `with` block by an exception; already closed
        # or aborted is fine.
        with contextlib.suppress(Exception):
            self._writer.__exit__(RuntimeError, RuntimeError("discarded"), None)
        self.storage.forget(self)
