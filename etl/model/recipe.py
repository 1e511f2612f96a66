"""A model's own recipe for a sentence vector, read from its sentence-transformers configuration.

modules.json lists the pipeline: Transformer -> Pooling -> Dense layers, in order -> Normalize.
1_Pooling/config.json says how token vectors become one vector (one mode or several,
concatenated), 2_Dense/ holds a linear layer and its activation, sentence_bert_config.json the
max sequence length and lower-casing, config_sentence_transformers.json the prompts. A model
without modules.json gets the job's long-standing default: masked mean, no Dense, no Normalize.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from etl.errors import ConfigError, ModelError
from etl.model.digests import file_digest, json_digest

# Every pooling mode sentence-transformers has, in the order it concatenates them.
POOLING_MODES = ("cls", "max", "mean", "mean_sqrt_len_tokens", "weightedmean", "lasttoken")
_LEGACY_MODES = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}
_SUPPORTED = ("Transformer", "Pooling", "Dense", "Normalize")
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


@dataclass(frozen=True)
class DenseLayer:
    """One sentence-transformers Dense module: y = activation(W x + b) (+ x with a residual)."""

    path: str  # folder holding config.json and the weights
    in_features: int
    out_features: int
    bias: bool
    activation: str  # a torch.nn class path, e.g. torch.nn.modules.activation.Tanh
    residual: bool
    weights: str  # the weights file
    weights_sha256: str  # digest of the weights file's content


@dataclass(frozen=True)
class Recipe:
    """How the model's authors make a sentence vector (or the job's default, without one)."""

    from_model: bool  # True: read from the model's sentence-transformers configuration
    pooling: tuple[str, ...] = ("mean",)  # concatenated in this order
    include_prompt: bool = True  # False: prompt tokens are left out of pooling
    dense: tuple[DenseLayer, ...] = ()
    normalize: bool = False
    max_seq_length: int | None = None
    do_lower_case: bool = False
    prompts: dict[str, str] = field(default_factory=dict)
    default_prompt_name: str | None = None
    # Digest of every configuration file of the pipeline (modules.json, each module's
    # config.json, sentence_bert_config.json, config_sentence_transformers.json without the
    # versions it was saved with): a setting the job does not read still changes the identity.
    files_sha256: str = ""

    def identity(self) -> dict[str, Any]:
        """What changes the vectors (prompts are counted where they are used)."""
        return {
            "from_model": self.from_model,
            "pooling": list(self.pooling),
            "include_prompt": self.include_prompt,
            "dense": [
                [d.path, d.in_features, d.out_features, d.activation, d.residual, d.weights_sha256]
                for d in self.dense
            ],
            "normalize": self.normalize,
            "do_lower_case": self.do_lower_case,
            "files": self.files_sha256,
        }


def read_recipe(path: Path, name: str) -> Recipe:
    """The recipe of the model in ``path``; ModelError naming the file for a broken one."""
    modules_file = path / "modules.json"
    if not modules_file.exists():
        return Recipe(from_model=False)
    modules = _json(modules_file, name)
    if not isinstance(modules, list) or not modules:
        raise ModelError(f"--model {name}: {modules_file}: expected a list of modules")
    kinds = []
    for position, module in enumerate(modules):
        kind = str(module.get("type", "")) if isinstance(module, dict) else ""
        short = kind.rpartition(".")[2]
        if not kind.startswith("sentence_transformers.") or short not in _SUPPORTED:
            raise ModelError(
                f"--model {name}: {modules_file}: module {position} ({kind or 'no type'}) is not "
                f"one embed-etl reproduces ({', '.join(_SUPPORTED)}); pass --pooling to use the "
                "encoder without the model's own head"
            )
        kinds.append((short, str(module.get("path", ""))))
    order = [k for k, _ in kinds]
    if order[0] != "Transformer" or order.count("Transformer") != 1 or order.count("Pooling") != 1:
        raise ModelError(
            f"--model {name}: {modules_file}: expected one Transformer, then one Pooling; "
            f"found {order}"
        )
    expected = sorted(order, key=lambda k: _SUPPORTED.index(k))
    if order != expected or order.count("Normalize") > 1:
        raise ModelError(
            f"--model {name}: {modules_file}: modules in the order {order}; embed-etl reproduces "
            "Transformer -> Pooling -> Dense... -> Normalize"
        )
    pooling, include_prompt = ("mean",), True
    dense = []
    for kind, folder in kinds:
        if kind == "Pooling":
            pooling, include_prompt = _pooling(path / folder / "config.json", name)
        elif kind == "Dense":
            dense.append(_dense(path, folder, name))
    settings = _optional_json(path / "sentence_bert_config.json", name)
    st_config = _optional_json(path / "config_sentence_transformers.json", name)
    prompts = st_config.get("prompts") or {}
    if not isinstance(prompts, dict) or not all(isinstance(v, str) for v in prompts.values()):
        raise ModelError(f"--model {name}: config_sentence_transformers.json: bad prompts")
    max_seq_length = settings.get("max_seq_length")
    configs = {"modules.json": modules, "sentence_bert_config.json": settings}
    configs["config_sentence_transformers.json"] = {
        k: v for k, v in st_config.items() if k != "__version__"
    }
    for _, folder in kinds:
        if folder and (path / folder / "config.json").is_file():
            configs[f"{folder}/config.json"] = _json(path / folder / "config.json", name)
    return Recipe(
        from_model=True,
        pooling=pooling,
        include_prompt=include_prompt,
        dense=tuple(dense),
        normalize="Normalize" in order,
        max_seq_length=max_seq_length if isinstance(max_seq_length, int) else None,
        do_lower_case=bool(settings.get("do_lower_case", False)),
        prompts=dict(prompts),
        default_prompt_name=st_config.get("default_prompt_name") or None,
        files_sha256=json_digest(configs),
    )


def _pooling(config_file: Path, name: str) -> tuple[tuple[str, ...], bool]:
    config = _json(config_file, name)
    mode = config.get("pooling_mode")
    if mode is None:  # before sentence-transformers 5: one boolean per mode
        modes = tuple(m for key, m in _LEGACY_MODES.items() if config.get(key)) or ("mean",)
    else:
        modes = (mode,) if isinstance(mode, str) else tuple(mode)
    unknown = [m for m in modes if m not in POOLING_MODES]
    if unknown or not modes:
        raise ModelError(
            f"--model {name}: {config_file}: pooling mode {unknown or modes} is not one of "
            f"{', '.join(POOLING_MODES)}"
        )
    return modes, bool(config.get("include_prompt", True))


def _dense(path: Path, folder: str, name: str) -> DenseLayer:
    config_file = path / folder / "config.json"
    config = _json(config_file, name)
    for key in ("module_input_name", "module_output_name"):
        if config.get(key, "sentence_embedding") != "sentence_embedding":
            raise ModelError(
                f"--model {name}: {config_file}: a Dense over {config[key]!r} (token vectors) "
                "is not supported; only Dense layers over the sentence vector are"
            )
    activation = str(config.get("activation_function", "torch.nn.modules.activation.Tanh"))
    if not activation.startswith("torch.nn."):
        raise ModelError(
            f"--model {name}: {config_file}: activation {activation} is not a torch.nn module"
        )
    weights = [path / folder / f for f in WEIGHT_FILES if (path / folder / f).exists()]
    if not weights:
        raise ModelError(f"--model {name}: no {' or '.join(WEIGHT_FILES)} in {path / folder}")
    try:
        in_features, out_features = int(config["in_features"]), int(config["out_features"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelError(f"--model {name}: {config_file}: no in_features/out_features") from exc
    return DenseLayer(
        path=folder,
        in_features=in_features,
        out_features=out_features,
        bias=bool(config.get("bias", True)),
        activation=activation,
        residual=bool(config.get("use_residual", False)),
        weights=str(weights[0]),
        weights_sha256=_digest(weights[0], name),
    )


def _digest(file: Path, name: str) -> str:
    try:
        return file_digest(file)
    except OSError as exc:
        raise ModelError(f"--model {name}: cannot read {file}: {exc}") from exc


def _json(file: Path, name: str) -> Any:
    try:
        return json.loads(file.read_text())
    except FileNotFoundError as exc:
        raise ModelError(f"--model {name}: {file} not found (named in modules.json)") from exc
    except (OSError, ValueError) as exc:
        raise ModelError(f"--model {name}: cannot read {file}: {exc}") from exc


def _optional_json(file: Path, name: str) -> dict[str, Any]:
    if not file.exists():
        return {}
    data = _json(file, name)
    if not isinstance(data, dict):
        raise ModelError(f"--model {name}: {file}: expected a JSON object")
    return data


def choose_prompt(
    recipe: Recipe, model_name: str, prompt: str | None, prompt_name: str | None
) -> tuple[str, str | None]:
    """(prompt text, its name): --prompt, --prompt-name, or the model's default prompt."""
    if prompt is not None:
        return prompt, None
    name = prompt_name or recipe.default_prompt_name
    if name is None:
        return "", None
    if name not in recipe.prompts:
        known = ", ".join(sorted(recipe.prompts)) or "none"
        if prompt_name is None:
            raise ModelError(
                f"--model {model_name}: its default prompt {name!r} is not one of its prompts "
                f"({known})"
            )
        raise ConfigError(f"--prompt-name {name}: {model_name} has the prompts: {known}")
    return recipe.prompts[name], name
