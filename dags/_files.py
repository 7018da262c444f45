"""File helpers the example flows share: a work folder per flow, JSON and CSV written
atomically, and a file's SHA-256.

A module of the dags folder whose name starts with ``_`` is a helper, not a flow file: the
loader skips it when it looks for flows, and a flow imports it like any sibling module
(``from _files import save_json``). The loader records every module a flow imports from the
dags folder and stores its source with the flow's version, so a run keeps the helper it
started with even after this file changes, and a worker needs no dags folder
(docs/design-notes.md#pinned-code-per-run).
"""

from __future__ import annotations

import csv
import hashlib
import json
import tempfile
from pathlib import Path
from typing import Any

from flowkit import StepContext


def workdir(ctx: StepContext, flow: str, *sub: str) -> Path:
    """The folder a step reads and writes: param ``workdir`` if given, else
    ``<system temp>/flowkit-<flow>``, then ``sub``; created if missing."""
    base = ctx.params.get("workdir") or str(Path(tempfile.gettempdir()) / f"flowkit-{flow}")
    path = Path(base, *sub)
    path.mkdir(parents=True, exist_ok=True)
    return path


def load_json(path: Path, default: Any) -> Any:
    """The JSON in ``path``, or ``default`` when the file does not exist yet."""
    return json.loads(path.read_text()) if path.exists() else default


def save_json(path: Path, data: object) -> None:
    """Write ``data`` as JSON through a temporary file renamed over ``path``: a killed
    worker never leaves half a file."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
    tmp.replace(path)


def write_csv(path: Path, header: list[str], rows: list[list[float]]) -> None:
    """Write a CSV with a header row, atomically as :func:`save_json` does."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(header)
        out.writerows(rows)
    tmp.replace(path)


def sha256(path: Path) -> str:
    """The hex SHA-256 of a file, read in 64 KiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(65536), b""):
            digest.update(chunk)
    return digest.hexdigest()
