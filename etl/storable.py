"""What a vector store can hold: fixed-width vectors, each made from its own text alone.

A store's records are fixed-width (etl.reuse.records) and keyed by the hash of one text
(etl.reuse.hashing): token vectors and sparse rows vary in length from text to text, and a late
chunk's vector depends on the whole text around it, so none of them is kept in a store. The
options' check (etl.config) and the run's stores (etl.reuse.plan) both ask ``unstorable``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Unstorable:
    """Vectors a store cannot hold: what they are (a message's plural subject), and why."""

    what: str
    why: str


def unstorable(
    *, tokens: bool = False, sparse: bool = False, late: bool = False
) -> Unstorable | None:
    """Why a vector store cannot hold a run's vectors (``tokens``: token vectors, ``sparse``:
    sparse vectors, ``late``: late chunks); None where it can hold them all."""
    if late:
        return Unstorable(
            "late chunks", "a late chunk's vector depends on its whole text, not its own"
        )
    if sparse or tokens:
        return Unstorable(
            "sparse vectors" if sparse else "token vectors", "its records are fixed-width vectors"
        )
    return None
