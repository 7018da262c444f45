"""Fixtures shared by the unit tests of rendering."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from flowkit.loading.sync import sync_dags
from flowkit.testing import SqliteTemplates

from ..conftest import service_missing

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def dags(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A dags folder holding only the orders example (other examples change independently)
    and the file helpers it imports; one for the session, which the tests only read."""
    folder = tmp_path_factory.mktemp("orders-dags") / "dags"
    folder.mkdir()
    for name in ("orders.py", "_files.py"):
        shutil.copy(ROOT / "dags" / name, folder / name)
    return folder


@pytest.fixture
def store(tmp_path: Path, dags: Path, sqlite_templates: SqliteTemplates):  # type: ignore[no-untyped-def]
    """A store at tmp_path/s.db with the orders example synced (from the session's template)."""
    s = sqlite_templates.store(tmp_path / "s.db")
    restored = sqlite_templates.restore(s, str(dags))
    sync_dags(s, str(dags))
    if not restored:
        sqlite_templates.remember(s, str(dags))
    yield s
    s.dispose()


@pytest.fixture
def dot_binary() -> None:
    """Graphviz's `dot` is a required system package in CI (installed by .ci/run)."""
    if shutil.which("dot") is None:
        service_missing("the Graphviz `dot` binary", FileNotFoundError("dot"))
