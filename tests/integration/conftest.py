from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from .procs import Cluster

ROOT = Path(__file__).resolve().parents[2]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture
def make_cluster(tmp_path: Path) -> Iterator:  # type: ignore[type-arg]
    """Build a Cluster on given store/broker URLs with fast failure detection for tests."""
    clusters: list[Cluster] = []

    def make(database_url: str, broker_url: str, dags: str = "dags", **extra: str) -> Cluster:
        suffix = uuid.uuid4().hex[:8]
        env = {
            **os.environ,
            "FLOWKIT_DATABASE_URL": database_url,
            "FLOWKIT_BROKER_URL": broker_url,
            "FLOWKIT_DAGS_FOLDER": str(ROOT / dags),
            "FLOWKIT_SWEEP_SECONDS": "2",
            "FLOWKIT_HEARTBEAT_SECONDS": "1",
            "FLOWKIT_VISIBILITY_TIMEOUT_SECONDS": "10",
            "FLOWKIT_QUEUED_LEASE_SECONDS": "30",
            # Queues of its own: RabbitMQ's vhost is shared by every test and checkout.
            "FLOWKIT_DEFAULT_QUEUE": f"flowkit-{suffix}",
            "FLOWKIT_EVENTS_QUEUE": f"flowkit-{suffix}.events",
            "PYTHONUNBUFFERED": "1",
            **extra,
        }
        c = Cluster(env, tmp_path)
        clusters.append(c)
        return c

    yield make
    for c in clusters:
        c.close()


@pytest.fixture
def open_store() -> Iterator:  # type: ignore[type-arg]
    """SqlStore factory whose connections are closed before the test database is dropped."""
    from flowkit.store.sql import SqlStore

    stores: list[SqlStore] = []

    def make(url: str) -> SqlStore:
        stores.append(SqlStore(url))
        return stores[-1]

    yield make
    for s in stores:
        s.dispose()
