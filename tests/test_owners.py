"""Each fact has one owner: its value is written in one module of the package, and every other
module imports it from there. A second definition (a copied literal, a second constant or
environment variable name) fails here, naming the module that holds it."""

from __future__ import annotations

import ast
from collections.abc import Callable
from functools import cache
from pathlib import Path

import pytest

from tests.conftest import REPO, code_strings


@cache
def _trees() -> dict[str, ast.Module]:
    """Every module of etl/ and jobs/, parsed, by its dotted name."""
    found = {}
    for package in ("etl", "jobs"):
        for path in sorted((REPO / package).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = ast.parse(Path(path).read_text())
    return found


def _holding(test: Callable[[str], bool]) -> set[str]:
    """The modules with a string constant that passes ``test``."""
    return {name for name, tree in _trees().items() if any(map(test, code_strings(tree)))}


def _defining(name: str) -> set[str]:
    """The modules that bind ``name`` at their top level (an assignment, a def or a class)."""
    found = set()
    for module, tree in _trees().items():
        for node in tree.body:
            if isinstance(node, (ast.Assign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                bound = {t.id for t in targets if isinstance(t, ast.Name)}
            elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                bound = {node.name}
            else:
                continue
            if name in bound:
                found.add(module)
    return found


def _importers(name: str) -> dict[str, set[str]]:
    """For each module that imports ``name`` (at any depth), the modules it imports it from."""
    found: dict[str, set[str]] = {}
    for module, tree in _trees().items():
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and any(a.name == name for a in node.names):
                found.setdefault(module, set()).add(node.module or "")
    return found


def _one_owner(name: str, owner: str, users: set[str] = frozenset()) -> None:
    """``name`` is defined by ``owner`` alone, every importer takes it from there, and each of
    ``users`` imports it."""
    assert _defining(name) == {owner}, f"{name} defined in {sorted(_defining(name))}"
    importers = _importers(name)
    wrong = {m: sorted(f) for m, f in importers.items() if f != {owner}}
    assert not wrong, f"{name} imported from elsewhere than {owner}: {wrong}"
    assert users <= set(importers), f"{sorted(users - set(importers))} do not import {name}"


def test_the_finders_find():
    assert "etl.config" in _trees() and "jobs.cli" in _trees()
    assert _defining("JobConfig") == {"etl.config"}
    assert "jobs.cli" in _importers("JobConfig")
    assert "jobs.cli" in _holding(lambda s: s == "--task")
    assert not _holding(lambda s: s.startswith("JobConfig: every option of a run"))  # docstring


# 1. The weight files of a model folder.


def test_the_weight_file_names_are_written_once():
    from etl.model.files import PYTORCH_BIN, PYTORCH_BIN_GLOB, SAFETENSORS, SAFETENSORS_GLOB

    names = {SAFETENSORS, PYTORCH_BIN, SAFETENSORS_GLOB, PYTORCH_BIN_GLOB}
    # Exact names and globs (a hub pattern such as "*model*.safetensors" included); messages
    # that mention a name inside a sentence are not definitions.
    holders = _holding(lambda s: s.strip("*") in names)
    assert holders == {"etl.model.files"}, f"weight file names written in {sorted(holders)}"
    for name in ("SAFETENSORS", "WEIGHT_FILES", "SAFETENSORS_GLOB", "weight_files"):
        _one_owner(name, "etl.model.files")
    _one_owner("WEIGHT_FILES", "etl.model.files", {"etl.model.dense", "etl.model.facts"})
    _one_owner("SAFETENSORS_GLOB", "etl.model.files", {"etl.model.locate"})


def test_weight_files_prefers_safetensors_and_keeps_shards_in_order(tmp_path):
    from etl.model.files import weight_files

    assert weight_files(tmp_path) == []
    (tmp_path / "pytorch_model.bin").touch()
    assert weight_files(tmp_path) == [tmp_path / "pytorch_model.bin"]
    for shard in ("model-00002-of-00002.safetensors", "model-00001-of-00002.safetensors"):
        (tmp_path / shard).touch()
    assert [p.name for p in weight_files(tmp_path)] == [
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    ]


# 2. The tasks.


def test_the_tasks_are_written_once():
    def is_tasks(node: ast.AST) -> bool:
        return isinstance(node, (ast.Tuple, ast.List, ast.Set)) and [
            getattr(e, "value", None) for e in node.elts
        ] == ["query", "document"]

    holders = {m for m, tree in _trees().items() if any(map(is_tasks, ast.walk(tree)))}
    assert holders == {"etl.config"}, f"the tasks written in {sorted(holders)}"
    _one_owner("TASKS", "etl.config", {"jobs.cli", "etl.model.recipe"})


# 3. The backend choices.


def test_the_backend_choices_are_the_models_and_the_cli_asks_for_them():
    from etl.model.code.base import PLAIN_BERT

    # The codes' names belong to the codes (etl.model.code.base); the rule builds the choices.
    holders = _holding(lambda s: s == PLAIN_BERT)
    assert holders == {"etl.model.code.base"}, f"{PLAIN_BERT!r} written in {sorted(holders)}"
    _one_owner("BACKEND_CHOICES", "etl.model.backend", {"jobs.cli"})
    options = [
        n
        for n in ast.walk(_trees()["jobs.cli"])
        if isinstance(n, ast.Call) and n.args and getattr(n.args[0], "value", None) == "--backend"
    ]
    (option,) = options
    (kind,) = [k.value for k in option.keywords if k.arg == "type"]
    assert ast.unparse(kind) == "click.Choice(BACKEND_CHOICES)"


# 4. What a vector store can hold.


def test_one_place_decides_what_a_store_can_hold_and_both_checks_ask_it():
    from etl.storable import unstorable

    # The reasons are the decision (a message elsewhere may well say "token vectors").
    reasons = ("fixed-width vectors", "depends on its whole text")
    holders = _holding(lambda s: any(r in s for r in reasons))
    assert holders == {"etl.storable"}, f"unstorable vectors named in {sorted(holders)}"
    _one_owner("unstorable", "etl.storable", {"etl.config", "etl.reuse.plan"})
    for caller in ("etl.config", "etl.reuse.plan"):
        calls = [
            n
            for n in ast.walk(_trees()[caller])
            if isinstance(n, ast.Call) and getattr(n.func, "id", None) == "unstorable"
        ]
        assert calls, f"{caller} imports unstorable but never asks it"
    assert unstorable() is None
    assert unstorable(tokens=True).what == "token vectors"
    assert unstorable(tokens=True, sparse=True).what == "sparse vectors"
    assert unstorable(tokens=True, sparse=True, late=True).what == "late chunks"


# 5. The upload part size.


def test_the_part_size_and_its_variable_are_written_once(monkeypatch):
    from etl.storage.blob import BlobStorage
    from etl.storage.parts import DEPRECATED_S3_ENV, PART_SIZE, PART_SIZE_ENV
    from etl.storage.s3 import S3Storage

    for env in (PART_SIZE_ENV, DEPRECATED_S3_ENV):
        holders = _holding(lambda s, env=env: env in s)
        assert holders == {"etl.storage.parts"}, f"{env} named in {sorted(holders)}"
    _one_owner("PART_SIZE", "etl.storage.parts", {"etl.storage.multipart"})
    _one_owner("upload_part_size", "etl.storage.parts", {"etl.storage.s3", "etl.storage.blob"})

    monkeypatch.delenv(PART_SIZE_ENV, raising=False)
    monkeypatch.delenv(DEPRECATED_S3_ENV, raising=False)
    assert S3Storage("bucket").part_size == BlobStorage("az://box").part_size == PART_SIZE
    monkeypatch.setenv(PART_SIZE_ENV, str(64 << 10))
    assert S3Storage("bucket").part_size == BlobStorage("az://box").part_size == 64 << 10


def test_the_former_s3_variable_still_works_for_s3_only(monkeypatch):
    from etl.storage.blob import BlobStorage
    from etl.storage.parts import DEPRECATED_S3_ENV, PART_SIZE, PART_SIZE_ENV
    from etl.storage.s3 import S3Storage

    monkeypatch.delenv(PART_SIZE_ENV, raising=False)
    monkeypatch.setenv(DEPRECATED_S3_ENV, str(5 << 20))
    with pytest.warns(FutureWarning, match=PART_SIZE_ENV):
        assert S3Storage("bucket").part_size == 5 << 20
    assert BlobStorage("az://box").part_size == PART_SIZE
    monkeypatch.setenv(PART_SIZE_ENV, str(6 << 20))  # the new name wins
    assert S3Storage("bucket").part_size == 6 << 20


# 6. The in-progress marker of an output being written.


def test_the_temporary_marks_are_written_once(tmp_path):
    from etl.storage.arrow import ArrowStorage
    from etl.storage.local import LocalStorage
    from etl.storage.marks import UPLOAD_MARK

    # A name's piece, as a literal or an f-string's start: "inprogress-", ".put-{tag}".
    for test in (
        lambda s: "inprogress" in s,
        lambda s: s.lstrip(".").startswith(("create-", "put-")),
    ):
        holders = _holding(test)
        assert holders == {"etl.storage.marks"}, f"a temporary mark written in {sorted(holders)}"
    _one_owner("UPLOAD_MARK", "etl.storage.marks", {"etl.storage.local", "etl.storage.arrow"})
    _one_owner("TEMPORARY_MARKS", "etl.storage.marks", {"etl.storage.local"})
    # Both file system storages name an output being written alike: .<name><mark><pid>.
    for storage in (LocalStorage(str(tmp_path / "local")), ArrowStorage("memory://marks")):
        upload = storage.upload("part-0.parquet")
        temp = upload.temp
        assert str(temp).rsplit("/", 1)[-1].startswith(f".part-0.parquet{UPLOAD_MARK}"), temp
        upload.discard()
