"""A sentence-transformers pipeline's modules, and the route a Router takes for a task.

modules.json lists the modules in order, each a class path and a folder. An asymmetric model
has a single Router instead, whose router_config.json holds one list of modules per route
("query", "document") in folders of the model's root. The route is chosen as
sentence-transformers' Router chooses it for ``task``: its route_mappings, then a route named
like the task, then the default route (no task at all: the default route).
"""

from __future__ import annotations

import ast
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from etl.errors import ConfigError, ModelError


@dataclass(frozen=True)
class Module:
    """One module of the pipeline: its class name (the last part of its path) and folder."""

    kind: str  # Transformer, Pooling, Dense, Normalize, SpladePooling, MultiVectorMask...
    folder: str  # relative to the model's root; "" for the root itself
    type: str  # the full class path, as saved


@dataclass(frozen=True)
class Pipeline:
    """The modules a model runs, after a Router picked its route."""

    modules: tuple[Module, ...]
    route: str | None = None  # the Router's route; None without a Router
    files: dict[str, Any] | None = None  # the configuration files read, for the fingerprint


def read_pipeline(path: Path, name: str, task: str | None) -> Pipeline | None:
    """The model's modules (None without modules.json), through its Router's route if any."""
    modules_file = path / "modules.json"
    if not modules_file.exists():
        return None
    listed = read_json(modules_file, name)
    if not isinstance(listed, list) or not listed:
        raise ModelError(f"--model {name}: {modules_file}: expected a list of modules")
    modules = tuple(_module(entry, i, modules_file, name) for i, entry in enumerate(listed))
    for module in modules:
        _confined(path, module, modules_file, name)
    files: dict[str, Any] = {"modules.json": listed}
    if not any(m.kind == "Router" for m in modules):
        return Pipeline(modules, None, files)
    if len(modules) != 1:
        raise ModelError(f"--model {name}: {modules_file}: a Router must be the only module")
    config_file = path / modules[0].folder / "router_config.json"
    config = read_json(config_file, name)
    files["router_config.json"] = config
    route = _route(config, task, config_file, name)
    types = config.get("types") or {}
    chosen = []
    for folder in config["structure"][route]:
        kind = str(types.get(folder, ""))
        module = Module(kind.rpartition(".")[2], folder, kind)
        chosen.append(_confined(path, module, config_file, name))
    return Pipeline(tuple(chosen), route, files)


def _confined(path: Path, module: Module, listed_in: Path, name: str) -> Module:
    """The module, if its folder lies inside the model's directory: relative, no '..', no link
    out of it (a model cannot make the job read files elsewhere)."""
    folder = Path(module.folder)
    inside = (path / folder).resolve()
    root = path.resolve()
    if folder.is_absolute() or ".." in folder.parts or not inside.is_relative_to(root):
        raise ConfigError(
            f"--model {name}: {listed_in}: module {module.kind} has the path {module.folder!r}, "
            "outside the model's directory; expected a folder inside it"
        )
    return module


def _module(entry: Any, position: int, modules_file: Path, name: str) -> Module:
    kind = str(entry.get("type", "")) if isinstance(entry, dict) else ""
    if not kind.startswith("sentence_transformers."):
        raise ModelError(
            f"--model {name}: {modules_file}: module {position} ({kind or 'no type'}) is not a "
            "sentence-transformers module; pass --pooling to use the encoder without it"
        )
    return Module(kind.rpartition(".")[2], str(entry.get("path", "")), kind)


def _route(config: dict, task: str | None, config_file: Path, name: str) -> str:
    structure = config.get("structure")
    if not isinstance(structure, dict) or not structure:
        raise ModelError(f"--model {name}: {config_file}: no routes under 'structure'")
    parameters = config.get("parameters") or {}
    mappings = {}
    for key, route in (parameters.get("route_mappings") or {}).items():
        try:
            mappings[ast.literal_eval(key) if key.startswith("(") else key] = route
        except (ValueError, SyntaxError):
            continue
    # sentence-transformers' order: the mappings for (task, text), (task, any), (any task,
    # text), (any, any); then a route named like the task, or like the modality.
    for key in ((task, "text"), (task, None), (None, "text"), (None, None)):
        if key in mappings:
            return mappings[key]
    for name_ in (task, "text"):
        if name_ and name_ in structure:
            return name_
    if task is not None:
        raise ConfigError(
            f"--task {task}: {name} has the routes {', '.join(structure)}; expected one of them"
        )
    default = parameters.get("default_route")
    if default is None:
        return next(iter(structure))  # sentence-transformers' allow_empty_key: the first route
    if default not in structure:
        raise ModelError(f"--model {name}: {config_file}: default route {default} is not a route")
    return default


def read_json(file: Path, name: str) -> Any:
    """A configuration file's JSON; ModelError naming the file if absent or broken."""
    try:
        return json.loads(file.read_text())
    except FileNotFoundError as exc:
        raise ModelError(f"--model {name}: {file} not found (named in modules.json)") from exc
    except (OSError, ValueError) as exc:
        raise ModelError(f"--model {name}: cannot read {file}: {exc}") from exc
