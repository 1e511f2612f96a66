"""A sentence-transformers MultiVectorEncoder's recipe (ColBERT-style): one small vector per
token instead of one per text.

modules.json: Transformer -> Dense over token_embeddings (the projection) -> MultiVectorMask ->
Normalize. The mask keeps the real tokens, less those of its skiplist (punctuation) on the tasks
it names, where no task counts as "document"; a query with query_expansion gets [MASK] tokens
appended up to a fixed length, kept in the output though the encoder does not attend to them
(unless "attend"). The Transformer's sentence_bert_config.json holds document_length and
query_length, which cut the texts of those tasks.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from etl.errors import ModelError
from etl.model.dense import DenseLayer, read_dense
from etl.model.router import Module, read_json


@dataclass(frozen=True)
class QueryExpansion:
    """A query padded to ``length`` tokens with ``token`` (None: the tokenizer's [MASK])."""

    length: int
    attend: bool = False  # the encoder attends to the expansion tokens
    token: str | None = None


@dataclass(frozen=True)
class MultiVectorHead:
    """What turns a Transformer's token vectors into the model's output vectors."""

    projection: tuple[DenseLayer, ...]  # Dense modules over every token's vector
    normalize: bool
    skiplist: tuple[str, ...] = ()  # words whose tokens are left out of the output
    skiplist_tasks: tuple[str, ...] = ("document",)  # no task counts as "document"
    document_length: int | None = None
    query_length: int | None = None
    expansion: QueryExpansion | None = None

    def identity(self) -> dict[str, Any]:
        return {
            "projection": [[d.path, d.out_features, d.weights_sha256] for d in self.projection],
            "normalize": self.normalize,
            "skiplist": list(self.skiplist),
            "skiplist_tasks": list(self.skiplist_tasks),
            "document_length": self.document_length,
            "query_length": self.query_length,
            "expansion": None if self.expansion is None else vars(self.expansion),
        }

    def skips(self, task: str | None) -> bool:
        """Whether the skiplist applies to texts of this task."""
        return bool(self.skiplist) and (task or "document") in self.skiplist_tasks

    def length(self, task: str | None) -> int | None:
        """The length texts of this task are cut at (None: the model's own)."""
        if task == "query" and self.expansion is not None:
            return self.expansion.length
        return {"query": self.query_length, "document": self.document_length}.get(task or "")


def read_multivector(
    path: Path, name: str, modules: tuple[Module, ...], transformer_settings: dict[str, Any]
) -> tuple[MultiVectorHead, str]:
    """The head, and the folder of the Transformer module."""
    kinds = [m.kind for m in modules]
    expected = ["Transformer", *["Dense"] * kinds.count("Dense"), "MultiVectorMask"]
    if kinds not in (expected, [*expected, "Normalize"]):
        raise ModelError(
            f"--model {name}: a MultiVectorEncoder of modules {kinds}; embed-etl reproduces "
            "Transformer -> Dense... -> MultiVectorMask -> Normalize"
        )
    projection = tuple(
        read_dense(path, m.folder, name, over="token_embeddings")
        for m in modules
        if m.kind == "Dense"
    )
    mask = next(m for m in modules if m.kind == "MultiVectorMask")
    mask_file = path / mask.folder / "config.json"
    mask_config = read_json(mask_file, name)
    if mask_config.get("keep_only_token_ids"):
        raise ModelError(f"--model {name}: {mask_file}: keep_only_token_ids is not supported")
    tasks = mask_config.get("skiplist_tasks") or ["document"]
    return (
        MultiVectorHead(
            projection=projection,
            normalize="Normalize" in kinds,
            skiplist=tuple(str(w) for w in mask_config.get("skiplist_words") or ()),
            skiplist_tasks=(tasks,) if isinstance(tasks, str) else tuple(tasks),
            document_length=_length(transformer_settings, "document_length", name),
            query_length=_length(transformer_settings, "query_length", name),
            expansion=_expansion(transformer_settings.get("query_expansion"), name),
        ),
        modules[0].folder,
    )


def _length(settings: dict[str, Any], key: str, name: str) -> int | None:
    value = settings.get(key)
    if value is not None and (not isinstance(value, int) or value < 1):
        raise ModelError(f"--model {name}: {key} {value!r}: expected a positive integer")
    return value


def _expansion(config: Any, name: str) -> QueryExpansion | None:
    if config is None:
        return None
    if not isinstance(config, dict) or config.get("strategy") != "fixed":
        raise ModelError(
            f"--model {name}: query_expansion {config!r}: embed-etl reproduces the 'fixed' "
            "strategy only"
        )
    length = config.get("length")
    if not isinstance(length, int) or length < 1:
        raise ModelError(f"--model {name}: query_expansion length {length!r}: expected >= 1")
    return QueryExpansion(length, bool(config.get("attend", False)), config.get("token"))
