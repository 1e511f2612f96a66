"""The size of an upload's parts (S3, GCS) or blocks (Azure): 8 MiB, or EMBED_ETL_PART_SIZE.

A part is also the memory an upload holds while it fills. The size is read when a storage is
opened (never at import), by every store that uploads in parts, from one variable.
EMBED_ETL_S3_PART_SIZE, its name for s3:// before, is still read there (deprecated).
"""

from __future__ import annotations

import logging
import os
import warnings

PART_SIZE = 8 << 20  # S3 wants at least 5 MiB for all parts but the last
PART_SIZE_ENV = "EMBED_ETL_PART_SIZE"
DEPRECATED_S3_ENV = "EMBED_ETL_S3_PART_SIZE"  # s3:// only, where PART_SIZE_ENV is unset
S3_MIN_PART = 5 << 20  # AWS S3's smallest part but the last (an emulator may allow less)

log = logging.getLogger(__name__)


def upload_part_size(s3: bool = False) -> int:
    """The part size in bytes: EMBED_ETL_PART_SIZE, else PART_SIZE. ``s3``: an s3:// store,
    which still honours EMBED_ETL_S3_PART_SIZE where EMBED_ETL_PART_SIZE is unset."""
    value = os.environ.get(PART_SIZE_ENV)
    if value is None and s3 and DEPRECATED_S3_ENV in os.environ:
        warnings.warn(
            f"{DEPRECATED_S3_ENV} is deprecated; set {PART_SIZE_ENV}", FutureWarning, stacklevel=2
        )
        value = os.environ[DEPRECATED_S3_ENV]
    size = int(value) if value is not None else PART_SIZE
    if s3 and size < S3_MIN_PART:
        log.warning(
            "%s %d: under S3's %d-byte minimum part, an output of more than one part fails "
            "on AWS S3 (an emulator or another store may allow it)",
            PART_SIZE_ENV,
            size,
            S3_MIN_PART,
        )
    return size
