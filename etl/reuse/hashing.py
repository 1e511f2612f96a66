"""The key of a text: a 128-bit BLAKE2b hash of the UTF-8 bytes the model is given.

128 bits make an accidental collision a birthday problem: among n distinct texts the odds that
any two share a hash are about n^2 / 2^129, 1.5e-19 at 10^10 texts. BLAKE2b is a cryptographic
hash, so a collision cannot be built on purpose either; it hashes about a GB/s.
"""

from __future__ import annotations

import hashlib

import numpy as np

HASH_BYTES = 16
HASH_DTYPE = np.dtype(f"V{HASH_BYTES}")  # compared, sorted and searched as raw bytes


def text_hashes(texts: list[str], prompt: str = "") -> np.ndarray:
    """(N,) hashes of prompt + text, the exact text the model sees."""
    if not texts:
        return np.zeros(0, HASH_DTYPE)
    blake = hashlib.blake2b
    joined = b"".join(
        blake((prompt + text).encode("utf-8", "surrogatepass"), digest_size=HASH_BYTES).digest()
        for text in texts
    )
    return np.frombuffer(joined, HASH_DTYPE)


def hex_hash(value: np.void) -> str:
    """A hash as 32 hex characters (for messages and tests)."""
    return bytes(value).hex()
