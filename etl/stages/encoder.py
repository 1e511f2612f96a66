"""Load the tokenizer and model once, cut the model to the deepest layer asked for, run batches."""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Any

import torch

from etl.config import JobConfig
from etl.contract import Batch
from etl.errors import ConfigError, ModelError
from etl.model.facts import ModelInfo
from etl.spec import OutputSpec
from etl.stages.pooling import pool

log = logging.getLogger(__name__)

# oneDNN caches one compiled primitive per input shape, each with its own buffers, up to 1024 of
# them; batches cut on a token budget rarely repeat a shape, so the cache only grows (to over a
# GB) without speeding anything up. 16 entries: flat memory, same speed (see README).
ONEDNN_CACHE_CAPACITY = "16"

# Where BERT-family models keep their list of transformer layers.
LAYER_PATHS = ("encoder.layer", "transformer.layer", "encoder.layers", "layers")


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


def load_tokenizer(model: ModelInfo) -> Any:
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(model.path)
    except Exception as exc:
        raise ModelError(f"--model {model.name}: cannot load its tokenizer: {exc}") from exc
    if tokenizer.pad_token_id is None:
        raise ModelError(f"--model {model.name}: its tokenizer has no padding token")
    # We always pass max_length explicitly; a huge limit keeps transformers from warning when
    # we count the tokens of a long row before truncation.
    tokenizer.model_max_length = 1 << 30
    return tokenizer


class Encoder:
    """The model on its device, cut to the deepest requested layer, turning batches into vectors."""

    def __init__(self, spec: OutputSpec, cfg: JobConfig, device: torch.device) -> None:
        self.spec = spec
        self.device = device
        # Read by oneDNN when it first runs, which is our warm-up; a user's setting wins.
        os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", ONEDNN_CACHE_CAPACITY)
        torch.set_num_threads(cfg.threads or default_threads())
        self.model = _load_model(spec, device)
        if device.type == "cpu" and not _cpu_supports(spec.dtype):
            log.warning(
                "--dtype %s: this CPU has no native %s instructions; expect it to be slower "
                "than float32",
                spec.dtype,
                spec.dtype,
            )
        self.autocast = (
            torch.autocast(device_type=device.type, dtype=getattr(torch, spec.dtype))
            if spec.dtype != "float32"
            else contextlib.nullcontext()
        )

    def encode(self, batch: Batch) -> dict[str, torch.Tensor]:
        """One forward pass; every requested (pooling, layer) as (B, H) float32 on the CPU."""
        non_blocking = self.device.type == "cuda"
        ids = batch.input_ids.to(self.device, non_blocking=non_blocking)  # (B, T)
        mask = batch.attention_mask.to(self.device, non_blocking=non_blocking)  # (B, T)
        inner = self.spec.inner_layers
        with torch.inference_mode(), self.autocast:
            out = self.model(input_ids=ids, attention_mask=mask, output_hidden_states=bool(inner))
            result = {}
            for column in self.spec.columns:
                if column.pooling == "pooler":
                    vectors = out.pooler_output.float()  # (B, H)
                else:
                    hidden = (
                        out.last_hidden_state
                        if column.layer == self.spec.deepest_layer
                        else out.hidden_states[column.layer]
                    )  # (B, T, H)
                    vectors = pool(hidden, mask, column.pooling)  # (B, H)
                result[column.name] = vectors  # normalized by the sink, after chunks are joined
        return {name: v.to("cpu", non_blocking=False) for name, v in result.items()}

    def warm_up(self, rows: int, length: int) -> None:
        """Run the largest batch the job can produce, so out-of-memory shows before any output."""
        token = min(1000, self.model.config.vocab_size - 1)  # any ordinary token will do
        ids = torch.full((rows, length), token, dtype=torch.long)
        mask = torch.ones_like(ids)
        try:
            self.encode(Batch(-1, -1, torch.arange(rows), ids, mask))
        except torch.OutOfMemoryError as exc:
            raise ModelError(
                f"warm-up batch of {rows} x {length} tokens ran out of memory on {self.device}; "
                "lower --batch-tokens or --batch-size"
            ) from exc


def _load_model(spec: OutputSpec, device: torch.device) -> torch.nn.Module:
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    info = spec.model
    attention = attention_backend(device, spec.dtype)
    try:
        model, loading = AutoModel.from_pretrained(
            info.path, output_loading_info=True, attn_implementation=attention
        )
    except Exception as exc:
        raise ModelError(
            f"--model {info.name}: cannot load weights from {info.path}: {exc}"
        ) from exc
    missing = sorted(loading.get("missing_keys", ()))
    pooler_missing = [k for k in missing if "pooler" in k]
    if spec.needs_pooler and (pooler_missing or getattr(model, "pooler", None) is None):
        raise ModelError(
            f"--pooling pooler: {info.name} has no trained pooler weights; use cls or mean"
        )
    used_missing = [k for k in missing if "pooler" not in k]
    if used_missing:
        names = ", ".join(used_missing[:5])
        raise ModelError(f"--model {info.name}: weights missing from the checkpoint: {names}")
    if not spec.needs_pooler and getattr(model, "pooler", None) is not None:
        model.pooler = None  # the dense+tanh head is only computed when asked for
    _keep_layers(model, spec.deepest_layer, info)
    return model.eval().to(device)


def attention_backend(device: torch.device, dtype: str) -> str | None:
    """FlashAttention-2 where it is installed (CUDA, half precision): it skips the padding
    instead of computing it. None lets transformers choose (SDPA where the model has it)."""
    if device.type == "cuda" and dtype in ("float16", "bfloat16"):
        try:
            from transformers.utils import is_flash_attn_2_available
        except ImportError:  # pragma: no cover - older transformers
            return None
        if is_flash_attn_2_available():
            log.info("attention: flash_attention_2 (padding is skipped)")
            return "flash_attention_2"
    return None


def _keep_layers(model: torch.nn.Module, keep: int, info: ModelInfo) -> None:
    """Drop transformer layers above `keep`, so asking for layer k runs k layers."""
    if keep == info.num_layers:
        return
    layers = _find_layers(model, info.num_layers)
    if layers is None:
        raise ModelError(
            f"--layer {keep}: cannot find the layer list of {info.name} "
            f"({type(model).__name__}) to run only its first {keep} layers"
        )
    del layers[keep:]
    for attr in ("num_hidden_layers", "n_layers"):
        if hasattr(model.config, attr):
            setattr(model.config, attr, keep)


def _find_layers(model: torch.nn.Module, count: int) -> torch.nn.ModuleList | None:
    for path in LAYER_PATHS:
        obj: Any = model
        for part in path.split("."):
            obj = getattr(obj, part, None)
        if isinstance(obj, torch.nn.ModuleList) and len(obj) == count:
            return obj
    return None


def _cpu_supports(dtype: str) -> bool:
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
