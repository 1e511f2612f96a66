"""The shape of the library, checked: no import cycles, stages never reach for engines or state,
only state/ knows where job state lives, short modules, no runtime asserts, torch kept out of
planning."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO, code_strings

ETL = REPO / "etl"
TORCH_USERS = {
    f"etl.stages.{m}"
    for m in (
        "compute.device",
        "compute.encoder",
        "compute.head",
        "compute.inflight",
        "compute.pooling",
        "compute.sparse",
        "compute.sparse_model",
        "read.loader",  # a torch IterableDataset, for DataLoader's reader processes
        "read.read_ahead",
        "read.settled",  # batches as torch tensors
    )
}
TORCH_USERS.add("etl.model.code.plain_bert")  # the plain-torch BERT, via etl.model.code.registry


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(ETL.rglob("*.py")):
        parts = path.relative_to(REPO).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _imports(path: Path, name: str, modules: dict[str, Path]) -> set[str]:
    """Every etl module this one imports, at any depth of the file (lazy imports included)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    edges = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join([*package.split(".")[: len(package.split(".")) - node.level + 1]])
                base = f"{base}.{node.module}" if node.module else base
            targets = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        else:
            continue
        edges |= {t for t in targets if t in modules and t != name}
    return edges


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(path, name, modules) for name, path in modules.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle, as a path that returns to its start, or None."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = finished
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_in_etl():
    graph = _graph()
    assert len(graph) > 30  # the walk found the package
    assert _cycle(graph) is None, " -> ".join(_cycle(graph))


def test_stages_never_import_engines_or_state():
    for name, imported in _graph().items():
        if name.startswith("etl.stages"):
            bad = {m for m in imported if m.startswith(("etl.engines", "etl.state", "etl.job"))}
            assert not bad, f"{name} imports {sorted(bad)}"


def test_only_state_builds_paths_into_the_state_folder():
    """Messages may mention _embed_etl/; only etl.state may build a key or path from it."""
    for name, path in _modules().items():
        if name.startswith("etl.state"):
            continue
        for text in code_strings(ast.parse(path.read_text())):
            assert not text.startswith("_embed_etl"), f"{name} builds a key from {text!r}"


def test_modules_are_short_and_have_no_runtime_asserts():
    for name, path in _modules().items():
        source = path.read_text()
        assert len(source.splitlines()) <= 300, f"{name}: {len(source.splitlines())} lines"
        asserts = [n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Assert)]
        assert not asserts, f"{name}: assert on line {asserts[0].lineno}"


def test_torch_is_imported_at_module_level_only_by_the_stages_that_run_it():
    for name, path in _modules().items():
        for node in ast.parse(path.read_text()).body:  # module level only
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            heavy = [n for n in names if n.split(".")[0] in ("torch", "transformers")]
            assert not heavy or name in TORCH_USERS, f"{name} imports {heavy} at module level"


def test_the_public_api_imports_without_torch():
    code = (
        "import sys, etl; "
        "print(sorted(m for m in ('torch', 'transformers', 'ray') if m in sys.modules)); "
        "print(sorted(etl.__all__))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True
    )
    heavy, api = out.stdout.splitlines()
    assert heavy == "[]"
    for name in ("JobConfig", "run_job", "plan_job", "job_status", "ConfigError", "ModelError"):
        assert repr(name) in api


def test_every_folder_of_the_package_is_a_package_that_gets_installed():
    """setuptools' find_packages skips a folder without __init__.py: it would be missing from
    a non-editable install."""
    for folder in {p.parent for p in ETL.rglob("*.py")}:
        assert (folder / "__init__.py").exists(), folder


def _calls(path: Path) -> set[str]:
    """Names of the functions and methods a module calls."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call):
            func = node.func
            found.add(func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", ""))
    return found


def test_one_rule_decides_done_and_its_four_callers_ask_it():
    """The plan (through the manifest's split), the lease (right after a claim), `status` and
    `verify` all call shard_done; no other module reads done markers or decides "done" from
    records or file stats."""
    modules = _modules()
    callers = {name for name, path in modules.items() if "shard_done" in _calls(path)}
    assert callers == {"etl.state.manifest", "etl.state.lease", "etl.state.status", "etl.verify"}
    assert "split" in _calls(ETL / "plan.py")
    for name, path in modules.items():
        if name != "etl.state.manifest":
            text = path.read_text()
            assert "def shard_done" not in text and "Done.parse" not in text, name
            assert "is_done(" not in text, name


def test_one_shard_record_type():
    import etl.contract

    records = [
        n for n in dir(etl.contract) if n.startswith("Shard") and n.endswith(("Record", "Result"))
    ]
    assert records == ["ShardRecord"]
    for name, path in _modules().items():
        assert "class ShardResult" not in path.read_text(), name


def test_engines_place_start_run_and_stop_and_never_rewrite_the_users_config():
    from etl.engines.base import Engine

    assert Engine.__abstractmethods__ == {"start", "run", "stop"}
    public = {n for n, v in vars(Engine).items() if callable(v) and not n.startswith("_")}
    assert public == {"placement", "start", "run", "stop"}
    for path in sorted((ETL / "engines").glob("*.py")):
        text = path.read_text()
        assert "replace(cfg" not in text and "replace(self.cfg" not in text, path.name
