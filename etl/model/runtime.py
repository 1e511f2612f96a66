"""The libraries a job runs models with: which versions it accepts, and how it reads weights.

torch before 2.6 lets a crafted pickle in a ``.bin`` checkpoint run code even through
``torch.load(weights_only=True)`` (CVE-2025-32434), and transformers reads ``pytorch_model.bin``
with it when a model has no safetensors. A job checks torch's version before it loads any model,
and reads safetensors whenever a model offers them.
"""

from __future__ import annotations

import re
from pathlib import Path

from etl.errors import ModelError

MIN_TORCH = (2, 6)


def version_tuple(version: str) -> tuple[int, ...]:
    """(2, 5, 1) from '2.5.1+cpu' or '2.6.0.dev20250101': the leading numbers only."""
    numbers = re.match(r"\d+(?:\.\d+)*", str(version))
    return tuple(int(n) for n in numbers.group(0).split(".")) if numbers else ()


def require_safe_torch() -> None:
    """Stop, in one line naming the version, if torch is older than MIN_TORCH."""
    import torch

    if version_tuple(torch.__version__) < MIN_TORCH:
        floor = ".".join(map(str, MIN_TORCH))
        raise ModelError(
            f"torch {torch.__version__} is installed; embed-etl needs torch {floor} or later, "
            "whose torch.load(weights_only=True) a crafted .bin checkpoint cannot turn into code "
            f"(CVE-2025-32434): pip install 'torch>={floor}'"
        )


def require_same_code(job: dict, running: dict) -> None:
    """Stop, in one line, a worker whose vector code (embed-etl's VECTOR_CODE_VERSION,
    tokenizers, transformers) is not the one the job's fingerprint was made with: its vectors
    would be mixed with the others' under one fingerprint."""
    if job and running != job:
        differ = ", ".join(
            f"{k} {running.get(k)} here, {job.get(k)} for the job"
            for k in sorted(set(job) | set(running))
            if running.get(k) != job.get(k)
        )
        raise ModelError(
            f"this worker's code makes other vectors than the job's ({differ}); install the "
            "same embed-etl, tokenizers and transformers on every machine of a job"
        )


def use_safetensors(path: Path) -> bool | None:
    """transformers' use_safetensors for a model directory: True where it holds safetensors
    weights (never its .bin beside them), else None (its .bin, read with weights_only=True)."""
    return True if any(Path(path).glob("*.safetensors")) else None
