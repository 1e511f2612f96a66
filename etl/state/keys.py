"""Where each piece of job state lives under the output location (storage keys)."""

from __future__ import annotations

import hashlib
import urllib.parse

STATE_DIR = "_embed_etl"
JOB = f"{STATE_DIR}/job.json"
CALIBRATION = f"{STATE_DIR}/calibration.json"
RECORDS = f"{STATE_DIR}/shards"
CLAIMS = f"{STATE_DIR}/claims"
DONE = f"{STATE_DIR}/done"  # one empty marker per done shard, its facts in its name
VECTORS = f"{STATE_DIR}/vectors"  # the job's own vector store (etl.reuse), unless --store


def state_name(rel_name: str) -> str:
    """A flat name for a shard's record and claim: its relative name, quoted (or hashed if long)."""
    quoted = urllib.parse.quote(rel_name, safe="")
    if len(quoted) <= 180:
        return quoted
    return f"{quoted[:120]}~{hashlib.sha256(rel_name.encode()).hexdigest()[:16]}"


def record_key(rel_name: str) -> str:
    return f"{RECORDS}/{state_name(rel_name)}.json"


def done_key(rel_name: str, marker: str) -> str:
    """A done marker: the shard's state name, '@' (which quoting never leaves), its facts."""
    return f"{DONE}/{state_name(rel_name)}@{marker}"


def claim_key(rel_name: str) -> str:
    return f"{CLAIMS}/{state_name(rel_name)}.claim"
