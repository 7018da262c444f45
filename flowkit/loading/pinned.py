"""Helper modules a flow imports from the dags folder, pinned with the flow. Not public API.

A dags module may import siblings (``import helpers``, ``from lib.db import connect`` with
``dags/lib/``). The loader records, in its subprocess, every module imported while the
file loaded whose file lies under the dags folder; the store keeps each source once per
content hash, and the flow's version hash covers them
(docs/design-notes.md#pinned-code-per-run). A worker then executes the flow module with
exactly those sources importable, through a meta-path finder that exists only while that
version's module is executed: two versions of a helper never meet in one process, and the
worker needs no dags folder. Modules outside the dags folder (site-packages) are not stored.

Only imports made while the module loads are seen; a helper imported lazily inside a step
function is resolved at run time like any other import.
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import threading
import types
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class ModuleSource:
    """One helper module as the store keeps it: its import name, file and source."""

    name: str
    path: str
    source: str
    package: bool = False

    @property
    def hash(self) -> str:
        return hashlib.sha256(self.source.encode()).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "path": self.path, "source": self.source, "package": self.package}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModuleSource:
        return cls(name=d["name"], path=d["path"], source=d["source"], package=bool(d.get("package")))


def version_for(source_hash: str, helpers: Sequence[ModuleSource]) -> str:
    """The flow's version: its module's hash alone when it imports no helper (so versions
    stored before helpers were pinned keep their hash), else a hash over both."""
    if not helpers:
        return source_hash
    text = source_hash + "".join(f"\n{m.name}={m.hash}" for m in sorted(helpers, key=lambda m: m.name))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def helpers_under(folder: str | Path, *, skip: Iterable[str] = ()) -> list[ModuleSource]:
    """The modules in ``sys.modules`` whose file lies under ``folder`` (run in the loader's
    child after it imported one dags file); ``skip`` names the dags module itself."""
    root = Path(folder).resolve()
    skipped = set(skip)
    found: list[ModuleSource] = []
    for name, module in list(sys.modules.items()):
        if name in skipped or module is None:
            continue
        file = getattr(module, "__file__", None)
        locations = list(getattr(module, "__path__", None) or [])
        if file is None and locations:  # a namespace package (a folder without __init__.py)
            if any(_is_under(Path(p), root) for p in locations):
                found.append(ModuleSource(name=name, path=str(locations[0]), source="", package=True))
            continue
        if not file or not str(file).endswith(".py") or not _is_under(Path(file), root):
            continue  # compiled extensions cannot be stored; they must be installed
        if _INSTALLED.intersection(Path(file).parts):
            continue  # a virtualenv inside the dags folder: installed packages are not helpers
        try:
            source = Path(file).read_bytes().decode("utf-8", errors="replace")
        except OSError:
            continue
        found.append(ModuleSource(name=name, path=str(file), source=source, package=bool(locations)))
    return sorted(found, key=lambda m: m.name)


_INSTALLED = {"site-packages", "dist-packages"}


def _is_under(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root)
    except (OSError, ValueError):
        return False
    return True


class _StoredSources(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds and loads one flow version's helper modules from their stored sources."""

    def __init__(self, modules: Sequence[ModuleSource]) -> None:
        self.modules = {m.name: m for m in modules}

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        m = self.modules.get(fullname)
        if m is None:
            return None
        spec = importlib.util.spec_from_loader(fullname, self, origin=m.path, is_package=m.package)
        if spec is not None:
            spec.has_location = True  # sets __file__, so tracebacks name the helper's file
        return spec

    def create_module(self, spec: Any) -> types.ModuleType | None:
        return None  # the default module object

    def exec_module(self, module: types.ModuleType) -> None:
        m = self.modules[module.__name__]
        exec(compile(m.source, m.path, "exec"), module.__dict__)


#: Executing a pinned module swaps entries of sys.modules for a moment: one at a time.
_EXEC_LOCK = threading.RLock()


@contextmanager
def importable(modules: Sequence[ModuleSource]) -> Iterator[None]:
    """Make exactly ``modules`` importable under their names while the block runs.

    Any module of those names already loaded (another version's, or the dags folder's) is
    set aside and put back afterwards; the modules imported here stay reachable through
    the flow module that imported them, never through ``sys.modules``.
    """
    names = {m.name for m in modules}
    finder = _StoredSources(modules)
    with _EXEC_LOCK:
        saved = {n: sys.modules.pop(n) for n in list(sys.modules) if n in names}
        sys.meta_path.insert(0, finder)
        importlib.invalidate_caches()
        try:
            yield
        finally:
            sys.meta_path.remove(finder)
            for n in names:
                sys.modules.pop(n, None)
            sys.modules.update(saved)
