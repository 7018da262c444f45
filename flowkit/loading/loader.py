"""Find and import the modules of the dags folder, one subprocess per file.

A module that raises, hangs or calls ``sys.exit`` is reported with its file and line;
the other modules still load (docs/design-notes.md#isolated-dag-loading: import in
isolation, with a timeout, cached by hash).
User code never runs in the calling process: the child returns flow specs as JSON.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
import traceback
import types
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import DagLoadError, FlowkitError
from ..spec import FlowSpec
from .pinned import ModuleSource, helpers_under, version_for

log = logging.getLogger(__name__)

_MODULE_PREFIX = "flowkit_dags."


def source_hash(source: str | bytes) -> str:
    data = source.encode() if isinstance(source, str) else source
    return hashlib.sha256(data).hexdigest()[:16]


def dag_files(folder: str | Path) -> list[Path]:
    """The modules the loader imports: ``*.py`` under ``folder`` not starting with ``_``."""
    root = Path(folder)
    if not root.is_dir():
        return []
    return sorted(p for p in root.rglob("*.py") if not p.name.startswith("_") and "__pycache__" not in p.parts)


@dataclass
class FileResult:
    path: str
    hash: str
    flows: list[FlowSpec] = field(default_factory=list)
    error: DagLoadError | None = None
    import_ms: float = 0.0
    source: str = ""
    #: A flow name this file shares with another file; recomputed on every load, never cached.
    conflict: DagLoadError | None = None
    #: Helper modules from the dags folder the file imported (empty when read from the cache).
    modules: list[ModuleSource] = field(default_factory=list)
    #: path -> content hash of those helpers' files: an edit to one re-imports this file.
    helper_hashes: dict[str, str] = field(default_factory=dict)
    #: Read from the store's cache (unchanged file): its flow versions are stored already.
    cached: bool = False

    @property
    def problem(self) -> DagLoadError | None:
        return self.error or self.conflict


@dataclass
class LoadReport:
    files: list[FileResult]

    @property
    def flows(self) -> dict[str, FlowSpec]:
        return {f.name: f for r in self.files if not r.problem for f in r.flows}

    @property
    def errors(self) -> list[DagLoadError]:
        return [r.problem for r in self.files if r.problem]


def module_name_for(path: str | Path) -> str:
    stem = Path(path).stem.replace("-", "_").replace(".", "_")
    return f"{_MODULE_PREFIX}{stem}"


def exec_module_source(
    path: str, source: str, dags_folder: str | None = None, modules: list[ModuleSource] | None = None
) -> types.ModuleType:
    """Run a dags module's source as a fresh module (the worker runs the pinned version).

    With ``modules`` (the helpers pinned with the version), exactly those are importable
    while it runs (:mod:`.pinned`); versions stored without them import helpers from
    ``dags_folder``, as before.
    """
    if modules:
        from .pinned import importable

        with importable(modules):
            return exec_module_source(path, source)
    if dags_folder and dags_folder not in sys.path:
        sys.path.insert(0, dags_folder)  # so a dags module can import its sibling helpers
    name = module_name_for(path)
    module = types.ModuleType(name)
    module.__file__ = path
    sys.modules[name] = module  # dataclasses and pickling look modules up by name
    try:
        exec(compile(source, path, "exec"), module.__dict__)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


def flows_in(module: types.ModuleType) -> list[Any]:
    from ..dsl import Flow

    seen: dict[int, Any] = {}
    for value in vars(module).values():
        if isinstance(value, Flow):
            seen.setdefault(id(value), value)
    return list(seen.values())


def _error_location(exc: BaseException, path: str) -> int | None:
    if isinstance(exc, SyntaxError) and exc.filename == path:
        return exc.lineno
    if isinstance(exc, FlowkitError) and exc.lineno:
        return exc.lineno
    lineno = None
    for frame, line in traceback.walk_tb(exc.__traceback__):
        if frame.f_code.co_filename == path:
            lineno = line
    return lineno


def _describe(exc: BaseException) -> str:
    if isinstance(exc, FlowkitError):
        return exc.message
    if isinstance(exc, SystemExit):
        return f"the module called sys.exit({exc.code!r}) while being imported; remove it"
    if isinstance(exc, SyntaxError):
        return f"syntax error: {exc.msg}"
    return f"{type(exc).__name__}: {exc}"


def import_in_child(path: str, dags_folder: str) -> dict[str, Any]:
    """Body of the child process: import one file and describe its flows (or its error)."""
    source = Path(path).read_text(encoding="utf-8")
    # Only what the file itself imports is its helpers: never flowkit, even with a dags
    # folder that holds the whole project.
    loaded_before = set(sys.modules)
    try:
        module = exec_module_source(path, source, dags_folder)
        helpers = helpers_under(dags_folder, skip=loaded_before | {module.__name__})
        version = version_for(source_hash(source), helpers)
        specs = [flow.spec(version=version).to_dict() for flow in flows_in(module)]
        return {"flows": specs, "modules": [m.to_dict() for m in helpers]}
    except BaseException as exc:  # the whole point: report anything the module does
        lineno = _error_location(exc, path)
        if isinstance(exc, FlowkitError) and exc.path and exc.path != path:
            lineno = None
        return {
            "error": {
                "message": _describe(exc),
                "lineno": lineno,
                "flow": getattr(exc, "flow", None),
                "step": getattr(exc, "step", None),
            }
        }


def import_file(path: Path, dags_folder: str | Path, timeout: float) -> FileResult:
    raw = path.read_bytes()
    source = raw.decode("utf-8", errors="replace")
    # Hash the bytes, as load_folder does, so CRLF or odd bytes never defeat the cache.
    result = FileResult(path=str(path), hash=source_hash(raw), source=source)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="flowkit-load-") as tmp:
        out, stack = Path(tmp) / "result.json", Path(tmp) / "stack.txt"
        cmd = [sys.executable, "-m", "flowkit.loading.load_one", str(path), str(dags_folder), str(out), str(stack)]
        child = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
        )
        try:
            _stdout, stderr = child.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            lineno = _hung_line(child, stack, str(path))
            child.kill()
            child.communicate()
            result.import_ms = (time.perf_counter() - started) * 1000
            result.error = DagLoadError(
                f"import took longer than {timeout:g} s and was stopped; keep I/O and heavy work "
                "out of module level (or raise FLOWKIT_DAG_IMPORT_TIMEOUT_SECONDS)",
                path=str(path),
                lineno=lineno,
            )
            return result
        proc = subprocess.CompletedProcess(cmd, child.returncode, _stdout, stderr)
        result.import_ms = (time.perf_counter() - started) * 1000
        if not out.exists():
            tail = (proc.stderr or "").strip().splitlines()[-1:] or ["no output"]
            result.error = DagLoadError(
                f"the import process died with exit code {proc.returncode} ({tail[0]}); "
                "look for os._exit or a crash at module level",
                path=str(path),
            )
            return result
        payload = json.loads(out.read_text())
    if "error" in payload:
        e = payload["error"]
        result.error = DagLoadError(
            e["message"], path=str(path), lineno=e.get("lineno"), flow=e.get("flow"), step=e.get("step")
        )
    else:
        result.flows = [FlowSpec.from_dict(d) for d in payload["flows"]]
        result.modules = [ModuleSource.from_dict(d) for d in payload.get("modules", [])]
        result.helper_hashes = {m.path: m.hash for m in result.modules if m.path.endswith(".py")}
    return result


#: How long a hung import gets to write its stack before it is killed.
STACK_DUMP_WAIT_SECONDS = 2.0


def _hung_line(child: subprocess.Popen[str], stack: Path, path: str) -> int | None:
    """The line of ``path`` a hung import child is running: it writes its stack on SIGUSR1
    (see :mod:`.load_one`); the innermost frame in ``path`` is the line. None if it cannot tell."""
    import re
    import signal

    if not hasattr(signal, "SIGUSR1"):
        return None
    try:
        child.send_signal(signal.SIGUSR1)
    except OSError:
        return None
    frame = re.compile(r'^\s*File "' + re.escape(path) + r'", line (\d+) in ', re.M)
    deadline = time.monotonic() + STACK_DUMP_WAIT_SECONDS
    while time.monotonic() < deadline and child.poll() is None:
        try:
            text = stack.read_text(encoding="utf-8", errors="replace")
        except OSError:
            text = ""
        found = frame.search(text)
        if found:
            return int(found.group(1))
        time.sleep(0.02)
    return None


def helpers_unchanged(helper_hashes: dict[str, str]) -> bool:
    """Do the helper files a cached import depended on still hold the same source?"""
    for path, expected in helper_hashes.items():
        try:
            text = Path(path).read_bytes().decode("utf-8", errors="replace")
        except OSError:
            return False
        if ModuleSource(name="", path=path, source=text).hash != expected:
            return False
    return True


def load_folder(
    folder: str | Path,
    *,
    timeout: float = 30.0,
    known: dict[str, tuple[Any, ...]] | None = None,
) -> LoadReport:
    """Import every changed module of ``folder`` in parallel subprocesses.

    ``known`` maps a path to ``(hash, flows, error[, helper_hashes])`` from an earlier load;
    a file whose hash and helpers are unchanged is not imported again.
    """
    known = known or {}
    folder = Path(folder)
    files = dag_files(folder)
    results: dict[str, FileResult] = {}
    todo: list[Path] = []
    for path in files:
        text = path.read_bytes()
        h = source_hash(text)
        prev = known.get(str(path))
        helper_hashes: dict[str, str] = prev[3] if prev and len(prev) > 3 else {}
        if prev and prev[0] == h and helpers_unchanged(helper_hashes):
            results[str(path)] = FileResult(
                path=str(path),
                hash=h,
                flows=list(prev[1] or []),
                error=prev[2],
                source=text.decode("utf-8", errors="replace"),
                helper_hashes=helper_hashes,
                cached=True,
            )
        else:
            todo.append(path)
    workers = max(1, min(len(todo), (os.cpu_count() or 2) * 2))
    if todo:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for r in pool.map(lambda p: import_file(p, folder.resolve(), timeout), todo):
                results[r.path] = r
                log.debug("dags %s: imported in %.0f ms", r.path, r.import_ms)
    ordered = [results[str(p)] for p in files]
    _flag_duplicate_names(ordered)
    return LoadReport(files=ordered)


def _flag_duplicate_names(results: list[FileResult]) -> None:
    owner: dict[str, tuple[FileResult, FlowSpec]] = {}
    for r in results:
        r.conflict = None
        if r.error:
            continue
        for spec in r.flows:
            if spec.name not in owner:
                owner[spec.name] = (r, spec)
                continue
            first, other = owner[spec.name]
            where = (
                f"in this file at lines {other.lineno} and {spec.lineno}"
                if first is r
                else f"here and at {first.path}:{other.lineno}"
            )
            r.conflict = DagLoadError(
                f'flow "{spec.name}" is defined twice: {where}; flow names must be unique '
                "across the dags folder, so rename one",
                path=r.path,
                lineno=spec.lineno,
                flow=spec.name,
            )
            break
