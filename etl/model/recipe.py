"""A model's own recipe for its vectors, read from its sentence-transformers configuration.

Three kinds: dense (SentenceTransformer: one vector per text), sparse (SparseEncoder,
etl.model.sparse) and multi-vector (MultiVectorEncoder, etl.model.multivector); the kind is what
config_sentence_transformers.json's model_type and the modules say. For a dense model,
modules.json lists the pipeline: Transformer -> Pooling -> Dense layers, in order -> Normalize.
1_Pooling/config.json says how token vectors become one vector (one mode or several,
concatenated), 2_Dense/ holds a linear layer and its activation, sentence_bert_config.json the
max sequence length and lower-casing, config_sentence_transformers.json the prompts. A model
without modules.json gets the job's long-standing default: masked mean, no Dense, no Normalize.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from etl.config import TASKS
from etl.errors import ConfigError, ModelError
from etl.model.dense import DenseLayer, read_dense
from etl.model.digests import json_digest
from etl.model.multivector import MultiVectorHead, read_multivector
from etl.model.router import Module, read_json, read_pipeline
from etl.model.sparse import SparseHead, read_sparse

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
DENSE, SPARSE, MULTIVECTOR = "dense", "sparse", "multivector"  # what a model's vectors are


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
    kind: str = DENSE  # dense | sparse | multivector
    body: str | None = ""  # folder of the Transformer module in the model (None: it has none)
    route: str | None = None  # the route a Router took
    task: str | None = None  # query | document | None (sentence-transformers' task)
    sparse: SparseHead | None = None
    multivector: MultiVectorHead | None = None

    def identity(self) -> dict[str, Any]:
        """What changes the vectors (prompts are counted where they are used)."""
        heads = {}
        if self.sparse is not None:
            heads["sparse"] = self.sparse.identity()
        if self.multivector is not None:
            heads["multivector"] = self.multivector.identity()
        if self.kind != DENSE:
            heads.update(kind=self.kind, route=self.route, task=self.task)
        return {
            **heads,
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


def read_recipe(
    path: Path, name: str, task: str | None = None, prompt_name: str | None = None
) -> Recipe:
    """The recipe of the model in ``path`` for ``task`` (a Router's route, a multi-vector
    model's lengths and skiplist); ModelError naming the file for a broken one. As
    sentence-transformers' encode_query does, --prompt-name query means the query task for the
    models where the task matters."""
    st_config = _optional_json(path / "config_sentence_transformers.json", name)
    model_type = st_config.get("model_type") or "SentenceTransformer"
    routed = (path / "router_config.json").is_file() or model_type == "MultiVectorEncoder"
    if task is None and routed and prompt_name in TASKS:
        task = prompt_name
    pipeline = read_pipeline(path, name, task)
    if pipeline is None:
        if task is not None:
            raise ConfigError(
                f"--task {task}: {name} has no sentence-transformers configuration "
                "(modules.json); --task applies to sparse and multi-vector models"
            )
        return Recipe(from_model=False)
    modules = pipeline.modules
    kinds = [m.kind for m in modules]
    configs: dict[str, Any] = dict(pipeline.files or {})
    configs["config_sentence_transformers.json"] = {
        k: v for k, v in st_config.items() if k != "__version__"
    }
    for module in modules:
        if (path / module.folder / "config.json").is_file() and module.folder:
            configs[f"{module.folder}/config.json"] = read_json(
                path / module.folder / "config.json", name
            )
    fields: dict[str, Any] = {}
    if model_type == "SparseEncoder" or {"SpladePooling", "SparseStaticEmbedding"} & set(kinds):
        sparse, body = read_sparse(path, name, modules, st_config)
        fields = {"kind": SPARSE, "sparse": sparse, "body": body, "pooling": ()}
    elif model_type == "MultiVectorEncoder" or "MultiVectorMask" in kinds:
        settings = _optional_json(path / modules[0].folder / "sentence_bert_config.json", name)
        head, body = read_multivector(path, name, modules, settings)
        fields = {"kind": MULTIVECTOR, "multivector": head, "body": body, "pooling": ("tokens",)}
        fields["normalize"] = head.normalize
    elif task is not None and pipeline.route is None:
        raise ConfigError(
            f"--task {task}: {name} is a dense model with one route; --task applies to sparse "
            "and multi-vector models (use --prompt-name for its prompts)"
        )
    else:
        fields = _dense_recipe(path, name, modules)
    body = fields.get("body", "")
    settings = {}
    if body is not None:
        settings = _optional_json(path / body / "sentence_bert_config.json", name)
        configs["sentence_bert_config.json"] = settings
    prompts = st_config.get("prompts") or {}
    if not isinstance(prompts, dict) or not all(isinstance(v, str) for v in prompts.values()):
        raise ModelError(f"--model {name}: config_sentence_transformers.json: bad prompts")
    max_seq_length = settings.get("max_seq_length")
    return Recipe(
        from_model=True,
        max_seq_length=max_seq_length if isinstance(max_seq_length, int) else None,
        do_lower_case=bool(settings.get("do_lower_case", False)),
        prompts=dict(prompts),
        default_prompt_name=st_config.get("default_prompt_name") or None,
        files_sha256=json_digest(configs),
        route=pipeline.route,
        task=task,
        **fields,
    )


def _dense_recipe(path: Path, name: str, modules: tuple[Module, ...]) -> dict[str, Any]:
    """A dense model's pooling, Dense layers and Normalize."""
    order = [m.kind for m in modules]
    modules_file = path / "modules.json"
    for position, module in enumerate(modules):
        if module.kind not in _SUPPORTED:
            raise ModelError(
                f"--model {name}: {modules_file}: module {position} ({module.type}) is not one "
                f"embed-etl reproduces ({', '.join(_SUPPORTED)}); pass --pooling to use the "
                "encoder without the model's own head"
            )
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
    for module in modules:
        if module.kind == "Pooling":
            pooling, include_prompt = _pooling(path / module.folder / "config.json", name)
        elif module.kind == "Dense":
            dense.append(read_dense(path, module.folder, name))
    return {
        "pooling": pooling,
        "include_prompt": include_prompt,
        "dense": tuple(dense),
        "normalize": "Normalize" in order,
        "body": modules[0].folder,
    }


def _pooling(config_file: Path, name: str) -> tuple[tuple[str, ...], bool]:
    config = read_json(config_file, name)
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


def _optional_json(file: Path, name: str) -> dict[str, Any]:
    if not file.exists():
        return {}
    data = read_json(file, name)
    if not isinstance(data, dict):
        raise ModelError(f"--model {name}: {file}: expected a JSON object")
    return data


def choose_prompt(
    recipe: Recipe, model_name: str, prompt: str | None, prompt_name: str | None
) -> tuple[str, str | None]:
    """(prompt text, its name): --prompt, --prompt-name, the task's prompt (as
    sentence-transformers' encode_query and encode_document choose it), or the model's default
    prompt."""
    if prompt is not None:
        return prompt, None
    name = prompt_name or _task_prompt(recipe) or recipe.default_prompt_name
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


def _task_prompt(recipe: Recipe) -> str | None:
    """The prompt of the recipe's task: "query" for a query, the first of "document",
    "passage" and "corpus" for a document."""
    names = {"query": ("query",), "document": ("document", "passage", "corpus")}
    return next((n for n in names.get(recipe.task or "", ()) if n in recipe.prompts), None)
