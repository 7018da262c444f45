"""The package layout keeps its dependencies pointing one way.

Every import in every flowkit module is read (with ``ast``, module level and inside
functions alike, ``TYPE_CHECKING`` blocks included) and two rules are checked:

(a) no import cycle between modules, except among the modules of ``flowkit/store/`` (the
    state machine package may hold one);
(b) no module takes an underscore-prefixed name from another flowkit module: a name that
    other modules need is public where it is defined. ``flowkit/store/`` importing from
    itself is exempt, as in (a).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

FLOWKIT = Path(__file__).resolve().parents[2] / "flowkit"

#: Importers not held to rule (b) yet: their underscore names are being renamed in a
#: parallel change (``render/common.py``'s helpers and ``dsl_checks``'s, which ``dsl`` uses).
PRIVATE_IMPORT_EXEMPT = ("flowkit.render", "flowkit.dsl", "flowkit.dsl_checks")
#: The one package allowed an import cycle between its modules (rule (a)) and underscore
#: imports among them (rule (b)).
MACHINE_PACKAGE = "flowkit.store"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(FLOWKIT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(FLOWKIT.rglob("*.py"))}


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def _imports(name: str, path: Path, modules: dict[str, Path]) -> Iterator[tuple[str, str | None]]:
    """(module imported, name taken from it or None) for each import in the file."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in modules:
                    yield alias.name, None
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            if not _within(source, "flowkit"):
                continue
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                if submodule in modules:  # `from . import shell`: the module itself
                    yield submodule, None
                elif source in modules:
                    yield source, alias.name


def _graph() -> tuple[dict[str, set[str]], list[tuple[str, str, str]]]:
    modules = _modules()
    edges: dict[str, set[str]] = {m: set() for m in modules}
    private: list[tuple[str, str, str]] = []
    for name, path in modules.items():
        for target, taken in _imports(name, path, modules):
            if target != name:
                edges[name].add(target)
            is_private = (taken is not None and taken.startswith("_") and not taken.startswith("__")) or any(
                part.startswith("_") and not part.startswith("__") for part in target.split(".")
            )
            if is_private and target != name:
                private.append((name, target, taken or target))
    return edges, private


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_the_import_graph_is_read() -> None:
    edges, _ = _graph()
    # a sanity check of the parser: the one-way chain on the worker side is seen
    assert "flowkit.execution.tasks" in edges["flowkit.execution.celery_app"]
    assert "flowkit.execution.runtime" in edges["flowkit.execution.attempt"]
    assert "flowkit.dispatch.task_names" in edges["flowkit.dispatch.celery"]


def test_no_import_cycle_outside_the_store() -> None:
    edges, _ = _graph()
    bad = [c for c in _cycles(edges) if not all(_within(m, MACHINE_PACKAGE) for m in c)]
    assert not bad, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in bad)


def test_the_worker_side_imports_one_way() -> None:
    edges, _ = _graph()
    # dispatch publishes what the worker side runs; it never imports it
    for module, targets in edges.items():
        if _within(module, "flowkit.dispatch") or _within(module, "flowkit.scheduler"):
            assert not [t for t in targets if _within(t, "flowkit.execution") or _within(t, "flowkit.cli")], module
        if _within(module, "flowkit.execution"):
            assert not [t for t in targets if _within(t, "flowkit.cli")], module


def test_no_private_name_crosses_a_module_boundary() -> None:
    _, private = _graph()
    bad = [
        (importer, target, taken)
        for importer, target, taken in private
        if not (_within(importer, MACHINE_PACKAGE) and _within(target, MACHINE_PACKAGE))
        and not any(_within(importer, exempt) for exempt in PRIVATE_IMPORT_EXEMPT)
    ]
    assert not bad, "\n".join(f"{i} imports {n} from {t}" for i, t, n in bad)
