"""One store fixture over every backend: the store's behavioural tests take ``backend_store``
and run once on SQLite and once on PostgreSQL (``-m "not postgres"`` leaves PostgreSQL out).

- SQLite: a template database migrated once per session, copied per test.
- PostgreSQL: one database per session (``flowkit_ut_<pid>_<random>``, synchronous_commit
  off), migrated once and dropped at the end; every table is emptied (``TRUNCATE ... RESTART IDENTITY CASCADE``)
  before each test. Unreachable, it skips the test, or fails it under
  FLOWKIT_REQUIRE_SERVICES=1 (as the integration tests' services do).

``inline_harness(store, folder)`` is an :class:`~flowkit.testing.InlineHarness` whose flows
come from one load of ``folder`` per session (keyed by the folder's files and their times),
recorded in each test's store, instead of a loader subprocess per test.
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flowkit.loading.loader import LoadReport, load_folder
from flowkit.loading.sync import pool_problems
from flowkit.store.sql import SqlStore
from flowkit.testing import InlineHarness

from .conftest import PG_ADMIN_URL, service_missing

log = logging.getLogger("flowkit.loading.sync")

BACKENDS = [pytest.param("sqlite", id="sqlite"), pytest.param("postgres", id="postgres", marks=pytest.mark.postgres)]


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite database migrated to head, copied by each test that wants a store."""
    path = tmp_path_factory.mktemp("store-template") / "flowkit.db"
    store = SqlStore(f"sqlite:///{path}")
    store.upgrade()
    store.dispose()
    return path


@pytest.fixture(scope="session")
def pg_session_url() -> Iterator[str]:
    """A PostgreSQL database of this session's own, migrated to head; dropped at the end."""
    import psycopg

    name = f"flowkit_ut_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    try:
        admin = psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=3)
    except Exception as exc:
        service_missing("PostgreSQL", exc)
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        # A test database need not survive a crash: its commits do not wait for the WAL flush
        # (the same answers, a flush less per commit on a shared disk).
        admin.execute(f'ALTER DATABASE "{name}" SET synchronous_commit = off')
    base = PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
    url = f"{base}/{name}"
    try:
        store = SqlStore(url)
        store.upgrade()
        store.dispose()
        yield url
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _pg_reset(url: str) -> None:
    """Empty every table of the session's database (and put its schema back at head if a test
    migrated it down and failed before migrating it up again)."""
    import psycopg

    dsn = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn, autocommit=True) as conn:
        # Connections a previous test left open (a step's own store, say) could hold a lock
        # the TRUNCATE waits for: the database is this session's alone, so end them.
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() AND tablename <> 'alembic_version'"
            )
        ]
        conn.execute("SET lock_timeout = '10s'")
        conn.execute("TRUNCATE " + ", ".join(f'"{t}"' for t in tables) + " RESTART IDENTITY CASCADE")
        version = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    store = SqlStore(url)
    try:
        if version is None or version[0] != store.head_revision():
            store.upgrade()
    finally:
        store.dispose()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """The backend of this parametrization: "sqlite" or "postgres"."""
    return str(request.param)


@pytest.fixture
def backend_store(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SqlStore]:
    """An empty store at the schema's head, on SQLite and on PostgreSQL."""
    if backend == "sqlite":
        path = tmp_path / "flowkit.db"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        url = f"sqlite:///{path}"
    else:
        url = request.getfixturevalue("pg_session_url")
        _pg_reset(url)
    store = SqlStore(url)
    yield store
    store.dispose()


# -- one load of each dags folder per session ------------------------------------------------
_LOADS: dict[tuple[str, tuple[tuple[str, int, int], ...]], LoadReport] = {}


def _folder_key(folder: str) -> tuple[str, tuple[tuple[str, int, int], ...]]:
    root = Path(folder).resolve()
    files = sorted(
        (str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in root.rglob("*.py") if "__pycache__" not in p.parts
    )
    return str(root), tuple(files)


def sync_cached(store: SqlStore, folder: str) -> LoadReport:
    """What :func:`flowkit.loading.sync.sync_dags` records, from this session's one load of ``folder``
    (loaded again if any of its files changed)."""
    key = _folder_key(folder)
    report = _LOADS.get(key)
    if report is None:
        report = _LOADS[key] = load_folder(folder)
    store.record_load(report.files)
    store.sync_flow_caps(report.flows.values())
    for err in report.errors:
        log.warning("dags: %s", err)
    for problem in pool_problems(report.flows.values(), store.pool_sizes()):
        log.error("dags: %s", problem)
    return report


def inline_harness(store: SqlStore, folder: str, **options: Any) -> InlineHarness:
    """An InlineHarness over ``store`` with ``folder``'s flows, loaded once per session."""
    sync_cached(store, folder)
    return InlineHarness(store, folder, sync=False, **options)
