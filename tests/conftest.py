"""Shared fixtures. Service fixtures skip locally but FAIL when FLOWKIT_REQUIRE_SERVICES=1 (CI)."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REQUIRE_SERVICES = os.environ.get("FLOWKIT_REQUIRE_SERVICES") == "1"
ROOT = Path(__file__).resolve().parent.parent
TEST_DAGS = Path(__file__).resolve().parent / "dags"

REDIS_HOST, REDIS_PORT = os.environ.get("FLOWKIT_TEST_REDIS", "127.0.0.1:6379").split(":")
PG_ADMIN_URL = os.environ.get("FLOWKIT_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
AMQP_URL = os.environ.get("FLOWKIT_TEST_AMQP", "amqp://guest:guest@127.0.0.1:5672//")
#: A Redis database of its own, flushed before and after each test that uses it
#: (FLOWKIT_TEST_REDIS_DB lets two checkouts run their suites side by side).
REDIS_TEST_DB = int(os.environ.get("FLOWKIT_TEST_REDIS_DB", "11"))


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

    client = redis.Redis(host=REDIS_HOST, port=int(REDIS_PORT), db=REDIS_TEST_DB,
                         socket_connect_timeout=2)
    try:
        client.ping()
    except Exception as exc:
        service_missing("Redis", exc)
    client.flushdb()
    yield f"redis://{REDIS_HOST}:{REDIS_PORT}/{REDIS_TEST_DB}"
    client.flushdb()
    client.close()


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test, dropped afterwards."""
    import psycopg

    name = f"flowkit_it_{uuid.uuid4().hex[:10]}"
    try:
        admin = psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=3)
    except Exception as exc:
        service_missing("PostgreSQL", exc)
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    yield f"{base.replace('postgresql://', 'postgresql+psycopg://')}/{name}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def amqp_url() -> str:
    try:
        socket.create_connection(("127.0.0.1", 5672), timeout=2).close()
    except OSError as exc:
        service_missing("RabbitMQ", exc)
    return AMQP_URL
