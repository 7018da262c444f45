"""Shared fixtures. Service fixtures skip locally but FAIL when FLOWKIT_REQUIRE_SERVICES=1 (CI)."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest_plugins = ["tests.store_backends"]
REQUIRE_SERVICES = os.environ.get("FLOWKIT_REQUIRE_SERVICES") == "1"
ROOT = Path(__file__).resolve().parent.parent
TEST_DAGS = Path(__file__).resolve().parent / "dags"

REDIS_HOST, REDIS_PORT = os.environ.get("FLOWKIT_TEST_REDIS", "127.0.0.1:6379").split(":")
PG_ADMIN_URL = os.environ.get("FLOWKIT_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
AMQP_URL = os.environ.get("FLOWKIT_TEST_AMQP", "amqp://guest:guest@127.0.0.1:5672//")
#: A Redis database of its own, flushed before and after each test that uses it
#: (FLOWKIT_TEST_REDIS_DB lets two checkouts run their suites side by side). Each pytest-xdist
#: worker (gw0, gw1, ...) takes the next number, so one worker's flush never empties another's.
_XDIST_WORKER = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
REDIS_TEST_DB = int(os.environ.get("FLOWKIT_TEST_REDIS_DB", "11")) + _XDIST_WORKER


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "unit: in-process, no services (everything under tests/unit)")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """``-m unit`` and ``-m integration`` each run one half; plain ``pytest`` runs both."""
    unit = Path(__file__).resolve().parent / "unit"
    for item in items:
        if unit in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.unit)


def service_missing(name: str, exc: BaseException) -> None:
    message = f"{name} is not reachable ({exc}); start it (see README, 'Running the tests')"
    if REQUIRE_SERVICES:
        pytest.fail(f"FLOWKIT_REQUIRE_SERVICES=1 and {message}")
    pytest.skip(message)


@pytest.fixture(autouse=True)
def clean_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    """No FLOWKIT_* setting of the developer's shell leaks into a test."""
    for key in list(os.environ):
        if key.startswith("FLOWKIT_") and not key.startswith(("FLOWKIT_REQUIRE_SERVICES", "FLOWKIT_TEST_")):
            monkeypatch.delenv(key)


@pytest.fixture(scope="session", autouse=True)
def sqlite_templates(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A migrated SQLite database, and each dags folder synced, built once for the session and
    copied per test (see flowkit.testing.SqliteTemplates): no migrations and no loader
    subprocess per test."""
    from flowkit.testing import InlineHarness, SqliteTemplates

    templates = SqliteTemplates(tmp_path_factory.mktemp("sqlite-templates"))
    InlineHarness.templates = templates
    yield templates
    InlineHarness.templates = None


@pytest.fixture
def sqlite_store(tmp_path: Path, sqlite_templates: Any):  # type: ignore[no-untyped-def]
    """A migrated SQLite store of this test's own (a copy of the session's template)."""
    store = sqlite_templates.store(tmp_path / "flowkit.db")
    yield store
    store.dispose()


@pytest.fixture
def redis_url() -> Iterator[str]:
    import redis

    client = redis.Redis(host=REDIS_HOST, port=int(REDIS_PORT), db=REDIS_TEST_DB, socket_connect_timeout=2)
    try:
        client.ping()
    except Exception as exc:
        service_missing("Redis", exc)
    client.flushdb()
    yield f"redis://{REDIS_HOST}:{REDIS_PORT}/{REDIS_TEST_DB}"
    client.flushdb()
    client.close()


#: This session's migrated template database (None until a test asks for PostgreSQL); the
#: name is unique to the session, so parallel runs on a shared server never touch each other's.
_pg_template: str | None = None


def _pg_base_url() -> str:
    return PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")


def _pg_admin():  # type: ignore[no-untyped-def]
    import psycopg

    try:
        return psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=3)
    except Exception as exc:
        service_missing("PostgreSQL", exc)


def create_pg_database() -> tuple[str, str]:
    """A new PostgreSQL database holding flowkit's schema: (name, SQLAlchemy URL). It is copied
    from a template migrated once per session (by `flowkit db upgrade`, so the command runs on
    an empty database once), not migrated again in every test."""
    import subprocess
    import sys

    global _pg_template
    with _pg_admin() as admin:
        if _pg_template is None:
            template = f"flowkit_tmpl_{uuid.uuid4().hex[:10]}"
            admin.execute(f'CREATE DATABASE "{template}"')
            env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWKIT_")}
            env["FLOWKIT_DATABASE_URL"] = f"{_pg_base_url()}/{template}"
            done = subprocess.run(
                [sys.executable, "-m", "flowkit.cli", "db", "upgrade"],
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
            )
            if done.returncode != 0:
                admin.execute(f'DROP DATABASE IF EXISTS "{template}" WITH (FORCE)')
                raise AssertionError(f"flowkit db upgrade of the template database failed:\n{done.stderr}")
            _pg_template = template
        name = f"flowkit_it_{uuid.uuid4().hex[:10]}"
        admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{_pg_template}"')
    return name, f"{_pg_base_url()}/{name}"


def drop_pg_database(name: str) -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session", autouse=True)
def _drop_pg_template() -> Iterator[None]:
    yield
    if _pg_template is not None:
        drop_pg_database(_pg_template)


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test, already migrated, dropped afterwards."""
    name, url = create_pg_database()
    yield url
    drop_pg_database(name)


@pytest.fixture
def amqp_url() -> str:
    try:
        socket.create_connection(("127.0.0.1", 5672), timeout=2).close()
    except OSError as exc:
        service_missing("RabbitMQ", exc)
    return AMQP_URL
