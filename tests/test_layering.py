"""The layering of snapshot/, stated by folder: a module imports only its own folder or a lower
layer, never a cycle, and the operations reach storage only through Repository.

Layers, lowest first (a folder's rank is the rank of every module in it):

0. ``errors``, ``version``; 1. ``util/``: know nothing of repositories or Chroma.
2. ``format/``: bytes and JSON only.
3. ``storage/`` (stores) and ``chroma/`` (Chroma's files): side by side, neither imports the other.
   ``storage/`` imports only ``errors`` and ``util/``: a store never builds or parses a key
   (the format is the repository's), it is told what kind of object it writes.
4. ``repo/``: a repository on a store.
5. the operations: ``create/``, ``restore/``, ``upkeep/``, ``copy/``, ``diff``; none imports another.
6. ``cli/``; 7. the package itself (``snapshot/__init__``, ``__main__``).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "snapshot"
RANKS = {
    "errors": 0, "version": 0,
    "util": 1,
    "format": 2,
    "storage": 3, "chroma": 3,
    "repo": 4,
    "create": 5, "restore": 5, "upkeep": 5, "copy": 5, "diff": 5,
    "cli": 6,
    "": 7, "__main__": 7,
}
OPERATIONS = {f for f, r in RANKS.items() if r == 5}
#: What storage/ may import besides itself.
STORAGE_IMPORTS = {"errors", "util"}
MAX_TOP_LEVEL_MODULES = 6


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


def room(module: str) -> str:
    """The folder (or top-level module) a module lives in: ``snapshot.repo.locks`` -> ``repo``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def violations(graph: dict[str, set[str]]) -> list[str]:
    """Every import that breaks the rules of the module docstring."""
    found = []
    for name, deps in sorted(graph.items()):
        here = room(name)
        for dep in sorted(deps):
            there = room(dep)
            if there == here:
                continue
            if there not in RANKS or here not in RANKS:
                found.append(f"{name} -> {dep}: folder without a layer (add it to RANKS)")
            elif RANKS[there] >= RANKS[here]:
                found.append(f"{name} -> {dep}: {here or 'snapshot'} (layer {RANKS[here]}) imports "
                             f"{there} (layer {RANKS[there]})")
            elif here == "storage" and there not in STORAGE_IMPORTS:
                found.append(f"{name} -> {dep}: storage imports only errors and util")
            elif here in OPERATIONS and there == "storage" and dep != "snapshot.storage.base":
                found.append(f"{name} -> {dep}: an operation picks a store itself")
            elif here in OPERATIONS and dep == "snapshot.format.layout":
                found.append(f"{name} -> {dep}: an operation builds storage keys itself")
    return found


def test_no_import_cycle_in_snapshot() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_cycle_finder_finds_cycles() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_every_import_runs_downward() -> None:
    assert violations(import_graph()) == []


@pytest.mark.parametrize(("importer", "imported", "why"), [
    ("snapshot.format.manifest", "snapshot.repo.repository", "format (layer 2) imports repo"),
    ("snapshot.chroma.capture", "snapshot.storage.base", "chroma (layer 3) imports storage"),
    ("snapshot.create.pipeline", "snapshot.restore.swap", "create (layer 5) imports restore"),
    ("snapshot.upkeep.prune", "snapshot.storage.s3", "picks a store itself"),
    ("snapshot.storage.s3.store", "snapshot.format.layout", "storage imports only errors and util"),
    ("snapshot.storage.base", "snapshot.version", "storage imports only errors and util"),
    ("snapshot.diff", "snapshot.format.layout", "builds storage keys itself"),
    ("snapshot.repo.locks", "snapshot.cli.render", "repo (layer 4) imports cli"),
    ("snapshot.newroom.x", "snapshot.errors", "folder without a layer"),
])
def test_the_rules_catch_a_violation(importer: str, imported: str, why: str) -> None:
    graph = {importer: {imported}, imported: set()}
    found = violations(graph)
    assert len(found) == 1 and why in found[0], found


def test_the_rules_let_a_downward_import_pass() -> None:
    assert violations({"snapshot.create.builder": {"snapshot.repo.packs", "snapshot.create.pipeline",
                                                   "snapshot.storage.base", "snapshot.util.fsync"}}) == []
    assert violations({"snapshot.storage.s3.store": {"snapshot.errors", "snapshot.util.fsync",
                                                     "snapshot.storage.base"}}) == []


def test_few_modules_directly_under_snapshot() -> None:
    top = sorted(p.name for p in ROOT.glob("*.py"))
    assert len(top) <= MAX_TOP_LEVEL_MODULES, top
    folders = {p.name for p in ROOT.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert folders <= set(RANKS), f"folders without a layer: {sorted(folders - set(RANKS))}"


def test_operations_never_touch_the_store() -> None:
    for path in sorted(ROOT.rglob("*.py")):
        if room(_module_name(path)) not in OPERATIONS:
            continue
        tree = ast.parse(path.read_text())
        touching = [n.lineno for n in ast.walk(tree) if isinstance(n, ast.Attribute) and n.attr == "store"]
        assert not touching, f"{path.relative_to(ROOT)} touches .store at lines {touching}"
