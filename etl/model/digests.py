"""Content digests of a model's files: what the fingerprint says about weights and tokenizer.

A digest is the sha256 of a file's bytes, never its name or size: a fine-tuned model saved over
the old one (same architecture, same size) gets another digest. Two shortcuts keep a 1 GB model
from being read on every start:

- in a Hugging Face cache, a snapshot's weight file links to ``blobs/<sha256>``: the blob's name
  already is the digest of its content;
- any other file's digest is remembered under the cache directory, keyed by its resolved path,
  device, inode, size, modification and change times. Any write to the file changes its change
  time, which no tool can set back. A file changed within two seconds of being hashed is not
  remembered (the clock may not have moved yet, as with git's "racy" index entries).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from pathlib import Path

log = logging.getLogger(__name__)

RACY_SECONDS = 2.0  # a file changed this recently may change again within one clock tick
_HEX64 = re.compile(r"[0-9a-f]{64}")


def cache_dir() -> Path:
    """Where remembered digests live: EMBED_ETL_CACHE_DIR, else $XDG_CACHE_HOME/embed-etl."""
    explicit = os.environ.get("EMBED_ETL_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "embed-etl"


def file_digest(path: str | Path) -> str:
    """The sha256 of a file's content, as hex; hashed once per version of the file."""
    path = Path(path)
    blob = _hub_blob(path)
    if blob is not None:
        return blob
    real = path.resolve()
    st = real.stat()
    key = json.dumps(
        [str(real), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]
    ).encode()
    entry = cache_dir() / "digests" / hashlib.sha256(key).hexdigest()
    try:
        remembered = entry.read_text().strip()
        if _HEX64.fullmatch(remembered):
            return remembered
    except OSError:
        pass
    started = time.time()
    digest = _sha256(real)
    if started - max(st.st_mtime_ns, st.st_ctime_ns) / 1e9 > RACY_SECONDS:
        _remember(entry, digest)
    return digest


def files_digest(paths: dict[str, Path]) -> str:
    """One digest for several files: sha256 over their names and contents' digests (32 hex)."""
    listing = sorted((name, file_digest(path)) for name, path in paths.items())
    return hashlib.sha256(json.dumps(listing).encode()).hexdigest()[:32]


def json_digest(value: object) -> str:
    """A digest of a JSON value in canonical form (32 hex)."""
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:32]


def recipe_digest(identity: dict[str, object]) -> str:
    """The whole sha256 (64 hex) of an identity in canonical JSON: a vector store's recipe,
    checked against the identity its store.json describes with it."""
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def _hub_blob(path: Path) -> str | None:
    """A hub cache snapshot links each large file to blobs/<sha256 of its content>."""
    if not path.is_symlink():
        return None
    target = path.resolve()
    if target.parent.name == "blobs" and _HEX64.fullmatch(target.name):
        return target.name
    return None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def _remember(entry: Path, digest: str) -> None:
    """Write the entry atomically; a cache that cannot be written only costs a rehash later."""
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        temp = entry.with_name(f".{entry.name}.{os.getpid()}")
        temp.write_text(digest)
        os.replace(temp, entry)
    except OSError as exc:
        log.debug("cannot remember the digest in %s: %s", entry, exc)
