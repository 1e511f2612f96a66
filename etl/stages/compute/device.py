"""Where the model runs and in what precision: device, compute dtype, threads."""

from __future__ import annotations

import logging
import os

import torch

from etl.errors import ConfigError

log = logging.getLogger(__name__)


def resolve_device(device: str) -> torch.device:
    """'auto' picks CUDA, then MPS, then the CPU; an explicit device must exist."""
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {device}: CUDA is not available on this machine")
        index = torch.device(device).index or 0
        if index >= torch.cuda.device_count():
            raise ConfigError(
                f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)"
            )
    if device == "mps" and not _mps_available():
        raise ConfigError("--device mps: MPS is not available on this machine")
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device) -> str:
    """'auto' is float32 on CPU and MPS (exact), bfloat16 or float16 on CUDA."""
    if dtype != "auto":
        return dtype
    if device.type == "cuda":
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    return "float32"


def default_threads() -> int:
    """The cores this process may run on (respects taskset, cgroups' cpusets)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS
        return os.cpu_count() or 1


def cpu_supports(dtype: str) -> bool:
    """Whether oneDNN has native kernels for this dtype here (AVX512-BF16, AMX, AVX512-FP16)."""
    probe = {
        "bfloat16": "_is_mkldnn_bf16_supported",
        "float16": "_is_mkldnn_fp16_supported",
    }.get(dtype)
    if probe is None:
        return True
    try:
        return bool(getattr(torch.ops.mkldnn, probe)())
    except (AttributeError, RuntimeError):
        return True  # cannot tell: say nothing


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend and backend.is_available())
