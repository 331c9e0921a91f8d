"""The layering of snapshot/: no import cycle anywhere, and the operations reach storage only
through Repository (they never build a key or call the store)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "snapshot"
#: Modules that act on a repository; they must go through Repository for every read and write.
OPERATIONS = ("create", "builder", "restore", "materialise", "repair", "diff", "prune", "repack", "chains",
              "check", "packs", "basecache")


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in ROOT.rglob("*.py")}


def import_graph() -> dict[str, set[str]]:
    """module -> the snapshot modules it imports (at any depth of the file: function-level
    and TYPE_CHECKING imports count too, since they hide cycles rather than remove them)."""
    modules = _modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([base] if base else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            for t in targets:
                while t and t not in modules:
                    t = t.rsplit(".", 1)[0] if "." in t else ""
                if t and t != name:
                    graph[name].add(t)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph[n]):
            if state.get(m) == 1:
                return [*stack[stack.index(m):], m]
            if m not in state and (found := visit(m)):
                return found
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state and (found := visit(n)):
            return found
    return None


def test_no_import_cycle_in_snapshot() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_cycle_finder_finds_cycles() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


@pytest.mark.parametrize("op", OPERATIONS)
def test_operations_use_only_the_repository_for_storage(op: str) -> None:
    graph = import_graph()
    name = f"snapshot.{op}"
    assert "snapshot.layout" not in graph[name], f"{op} builds storage keys itself"
    assert not any(m.startswith("snapshot.storage") and m != "snapshot.storage.base" for m in graph[name])
    tree = ast.parse((ROOT / f"{op}.py").read_text())
    touching = [n.lineno for n in ast.walk(tree) if isinstance(n, ast.Attribute) and n.attr == "store"]
    assert not touching, f"{op}.py touches .store at lines {touching}"


def test_layers_import_only_downward() -> None:
    graph = import_graph()
    below_repository = {"snapshot.storage", "snapshot.storage.base", "snapshot.storage.local",
                        "snapshot.storage.s3", "snapshot.layout", "snapshot.manifest"}
    for low in below_repository:
        assert "snapshot.repository" not in graph[low]
    ops = {f"snapshot.{op}" for op in OPERATIONS}
    assert not graph["snapshot.repository"] & ops, "Repository imports an operation"
    cli = {m for m in graph if m.startswith("snapshot.cli")}
    for name, deps in graph.items():
        if name not in cli and name != "snapshot.__main__":
            assert not deps & cli, f"{name} imports the CLI"
