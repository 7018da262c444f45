"""A module's own services: a fresh PostgreSQL database and the Redis test database, and a
cluster (scheduler and prefork workers) on them, torn down when the module ends."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from flowkit.store.sql import SqlStore

from ..conftest import (
    REDIS_HOST,
    REDIS_PORT,
    REDIS_TEST_DB,
    ROOT,
    create_pg_database,
    drop_pg_database,
    service_missing,
)
from .procs import Cluster

#: Fast failure detection, as make_cluster uses; a module may override any of it.
FAST_DETECTION = {
    "FLOWKIT_SWEEP_SECONDS": "2",
    "FLOWKIT_HEARTBEAT_SECONDS": "1",
    "FLOWKIT_VISIBILITY_TIMEOUT_SECONDS": "10",
    "FLOWKIT_QUEUED_LEASE_SECONDS": "30",
}


@contextmanager
def fresh_services() -> Iterator[tuple[str, str]]:
    """A new PostgreSQL database (migrated) and the flushed Redis test database: (database URL,
    broker URL)."""
    import redis

    client = redis.Redis(host=REDIS_HOST, port=int(REDIS_PORT), db=REDIS_TEST_DB, socket_connect_timeout=2)
    try:
        client.ping()
    except Exception as exc:
        service_missing("Redis", exc)
    client.flushdb()
    name, database_url = create_pg_database()
    try:
        yield database_url, f"redis://{REDIS_HOST}:{REDIS_PORT}/{REDIS_TEST_DB}"
    finally:
        drop_pg_database(name)
        client.flushdb()
        client.close()


def cluster_env(database_url: str, broker_url: str, dags: str, **extra: str) -> dict[str, str]:
    """The daemons' environment: no FLOWKIT_* of the developer's shell, queues of their own."""
    suffix = uuid.uuid4().hex[:8]
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("FLOWKIT_") or k.startswith("FLOWKIT_TEST_")},
        "FLOWKIT_DATABASE_URL": database_url,
        "FLOWKIT_BROKER_URL": broker_url,
        "FLOWKIT_DAGS_FOLDER": str(ROOT / dags),
        "FLOWKIT_DEFAULT_QUEUE": f"flowkit-{suffix}",
        "FLOWKIT_EVENTS_QUEUE": f"flowkit-{suffix}.events",
        "PYTHONUNBUFFERED": "1",
        **extra,
    }


@contextmanager
def cluster_on_fresh_services(
    logdir: Path, dags: str, *, workers: Sequence[tuple[str, int]], setup: Sequence[Sequence[str]] = (), **extra: str
) -> Iterator[tuple[Cluster, SqlStore]]:
    """Fresh services (the schema included), the ``setup`` CLI commands (e.g. ``pools set``), a scheduler
    and the named workers (name, prefork processes); yields the cluster and a store on it."""
    with fresh_services() as (database_url, broker_url):
        cluster = Cluster(cluster_env(database_url, broker_url, dags, **extra), logdir)
        store = SqlStore(database_url)
        try:
            for args in setup:
                cluster.cli(*args)
            cluster.scheduler()
            for name, processes in workers:
                cluster.worker(name, concurrency=processes)
            yield cluster, store
        finally:
            cluster.close()
            store.dispose()
