"""Fixtures shared by the unit tests of rendering."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from flowkit.loading.sync import sync_dags
from flowkit.store.sql import SqlStore

from ..conftest import service_missing

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def dags(tmp_path: Path) -> Path:
    """A dags folder holding only the orders example (other examples change independently)
    and the file helpers it imports."""
    folder = tmp_path / "dags"
    folder.mkdir()
    for name in ("orders.py", "_files.py"):
        shutil.copy(ROOT / "dags" / name, folder / name)
    return folder


@pytest.fixture
def store(tmp_path: Path, dags: Path):  # type: ignore[no-untyped-def]
    s = SqlStore(f"sqlite:///{tmp_path}/s.db")
    s.upgrade()
    sync_dags(s, str(dags))
    yield s
    s.dispose()


@pytest.fixture
def dot_binary() -> None:
    """Graphviz's `dot` is a required system package in CI (installed by .ci/run)."""
    if shutil.which("dot") is None:
        service_missing("the Graphviz `dot` binary", FileNotFoundError("dot"))
