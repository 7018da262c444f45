"""Backpressure on the broker queue, on Redis and on RabbitMQ: with no worker, a wide
fan-out fills the queue up to the high watermark and the rest waits in SQL (state
``scheduled``); once a worker drains the queue to the low watermark, dispatching resumes.
The depth is read from the broker itself, not from the engine. Flow:
tests/dags/limits/fanout.py."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator

import pytest

from .limits_support import assert_no_errors, create_runs, explain, prepare, wait_runs_ended
from .procs import Cluster, wait_for

DAGS = "tests/dags/limits"
HIGH, LOW = 20, 10
WIDTH = 150
#: kombu's Redis transport keeps priority n > 0 of a queue in the list ``<queue>\x06\x16<n>``.
REDIS_PRIORITY_SEP = "\x06\x16"


@pytest.fixture
def broker_depth() -> Iterator[Callable[[Cluster], Callable[[], int]]]:
    """``make(cluster)`` -> a function reading the depth of the cluster's default queue on
    its broker. RabbitMQ queues (the vhost is shared) are deleted afterwards."""
    closers: list[Callable[[], None]] = []

    def make(cluster: Cluster) -> Callable[[], int]:
        broker_url = cluster.env["FLOWKIT_BROKER_URL"]
        queue = cluster.env["FLOWKIT_DEFAULT_QUEUE"]
        if broker_url.startswith("redis"):
            import redis

            client = redis.Redis.from_url(broker_url)
            closers.append(client.close)
            keys = [queue] + [f"{queue}{REDIS_PRIORITY_SEP}{n}" for n in range(1, 10)]
            return lambda: sum(int(client.llen(k)) for k in keys)
        from kombu import Connection
        from kombu.exceptions import ChannelError

        conn = Connection(broker_url, connect_timeout=5)

        def amqp_depth() -> int:
            with conn.channel() as channel:
                try:
                    return int(channel.queue_declare(queue=queue, passive=True).message_count)
                except ChannelError:  # not declared yet: nothing waits
                    return 0

        def close() -> None:
            for name in (queue, cluster.env["FLOWKIT_EVENTS_QUEUE"]):
                try:
                    with conn.channel() as channel:
                        channel.queue_delete(queue=name)
                except Exception:  # noqa: BLE001 - already gone
                    pass
            conn.release()

        closers.append(close)
        return amqp_depth

    yield make
    for close in closers:
        close()


@pytest.fixture(params=["redis", "amqp"])
def broker_url(request: pytest.FixtureRequest) -> str:
    """Redis, then RabbitMQ (set up before the cluster, so torn down after its daemons)."""
    return str(request.getfixturevalue("redis_url" if request.param == "redis" else "amqp_url"))


def _states(store, run_id: str) -> Counter[str]:  # type: ignore[no-untyped-def]
    return Counter(s["state"] for s in store.step_runs(run_id))


def _over(seen: list[int], store, run_id: str) -> str:  # type: ignore[no-untyped-def]
    """Why the queue went over the watermark: the depths seen, the attempts queued in SQL
    and the audit trail's count of attempts published again."""
    republished = Counter(e["reason"] for e in store.events(run_id) if e["action"] == "lease_expired")
    return (
        f"queue depth went over {HIGH}: {seen}\nattempts queued in SQL: "
        f"{_states(store, run_id)['queued']}; published again: {dict(republished)}"
    )


def _sample(depth: Callable[[], int], seconds: float, into: list[int]) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        into.append(depth())
        time.sleep(0.1)


def _backpressured_cluster(make_cluster, pg_url: str, broker_url: str, **extra: str) -> Cluster:  # type: ignore[no-untyped-def]
    cluster: Cluster = make_cluster(
        pg_url,
        broker_url,
        dags=DAGS,
        FLOWKIT_QUEUE_HIGH_WATERMARK=str(HIGH),
        FLOWKIT_QUEUE_LOW_WATERMARK=str(LOW),
        **extra,
    )
    prepare(cluster)  # the pool the other flows of the dags folder use
    return cluster


def _declare_events_queue(cluster: Cluster) -> None:
    """Declare the events queue on RabbitMQ, as `flowkit trigger` or a worker's first event
    would: a scheduler alone cannot start before it exists (see
    test_a_scheduler_starts_before_anything_declared_its_rabbitmq_events_queue)."""
    from kombu import Connection, Queue

    name = cluster.env["FLOWKIT_EVENTS_QUEUE"]
    with Connection(cluster.env["FLOWKIT_BROKER_URL"], connect_timeout=5) as conn:
        Queue(name, routing_key=name, durable=True)(conn.default_channel).declare()


def _scheduler_up(cluster: Cluster, store) -> None:  # type: ignore[no-untyped-def]
    """Start a scheduler and wait until it has rebuilt from SQL and beaten once."""
    if cluster.env["FLOWKIT_BROKER_URL"].startswith("amqp"):
        _declare_events_queue(cluster)
    cluster.scheduler()
    wait_for(lambda: store.schedulers(), 30, "the scheduler to start", cluster)


def _fill(cluster: Cluster, store, depth: Callable[[], int]) -> tuple[str, list[int]]:  # type: ignore[no-untyped-def]
    """Trigger the fan-out and wait until backpressure engages; returns the run id and the
    depths seen meanwhile."""
    run_id = cluster.cli("trigger", "lim_fanout").stdout.strip()
    seen: list[int] = []
    scheduler = cluster.daemons[0]
    wait_for(
        lambda: seen.append(depth()) or "holding dispatches" in scheduler.log(), 30, "backpressure to engage", cluster
    )
    return run_id, seen


def test_backpressure_engages_and_releases(pg_url, broker_url, broker_depth, make_cluster, open_store):
    # Given watermarks 20/10 and a scheduler but no worker
    cluster = _backpressured_cluster(make_cluster, pg_url, broker_url)
    store = open_store(pg_url)
    depth = broker_depth(cluster)
    _scheduler_up(cluster, store)
    scheduler = cluster.daemons[0]
    # When a run of 150 independent steps is triggered
    run_id, seen = _fill(cluster, store, depth)
    _sample(depth, 5.0, seen)  # over two sweeps of the scheduler
    # Then the broker holds no more than the high watermark and the rest waits in SQL
    assert max(seen) <= HIGH, _over(seen, store, run_id)
    assert seen[-1] >= LOW, f"backpressure held too much back: {seen}"
    states = _states(store, run_id)
    assert states["queued"] == seen[-1] and states["scheduled"] == WIDTH - seen[-1], states
    assert f"the high watermark is {HIGH}; holding dispatches" in scheduler.log()
    # When a worker starts
    started = time.monotonic()
    cluster.worker("worker-a", concurrency=3)
    ended = wait_runs_ended(store, [run_id], 90, cluster, during=lambda: seen.append(depth()))
    # Then the run completes, the queue never went over the watermark, and dispatching resumed
    assert ended[run_id] == "success", explain(store, [run_id], cluster)
    assert max(seen) <= HIGH, _over(seen, store, run_id)
    assert f"at or below the low watermark {LOW}; dispatching again" in scheduler.log()
    assert depth() == 0
    assert len(store.attempts(run_id)) == WIDTH
    assert_no_errors(cluster)
    print(f"drained in {time.monotonic() - started:.1f} s; depths seen: {seen}")


def test_backpressure_holds_while_queued_attempts_outlive_their_lease(
    pg_url, redis_url, broker_depth, make_cluster, open_store
):
    # Given watermarks 20/10, a queued lease of 3 s, and a fan-out of 150 steps held back
    # with no worker to take them
    cluster = _backpressured_cluster(make_cluster, pg_url, redis_url, FLOWKIT_QUEUED_LEASE_SECONDS="3")
    store = open_store(pg_url)
    depth = broker_depth(cluster)
    _scheduler_up(cluster, store)
    run_id, seen = _fill(cluster, store, depth)
    # When the messages wait in the broker longer than the lease (after which the scheduler
    # publishes queued attempts again, in case their message was lost)
    _sample(depth, 9.0, seen)
    # Then the queue still holds no more than the high watermark
    assert max(seen) <= HIGH, _over(seen, store, run_id)


def test_backpressure_holds_when_the_scheduler_starts_with_a_run_queued(
    pg_url, redis_url, broker_depth, make_cluster, open_store
):
    # Given watermarks 20/10 and a fan-out of 150 steps triggered while no scheduler runs
    cluster = _backpressured_cluster(make_cluster, pg_url, redis_url)
    store = open_store(pg_url)
    depth = broker_depth(cluster)
    (run_id,) = create_runs(cluster, store, "lim_fanout", 1)
    # When a scheduler starts (and no worker takes anything)
    _scheduler_up(cluster, store)
    seen: list[int] = []
    _sample(depth, 4.0, seen)
    # Then the queue holds no more than the high watermark: each attempt published once
    assert max(seen) <= HIGH, _over(seen, store, run_id)


def test_a_scheduler_starts_before_anything_declared_its_rabbitmq_events_queue(
    pg_url, amqp_url, broker_depth, make_cluster, open_store
):
    # Given a fresh RabbitMQ events queue name that nothing has declared yet
    cluster = make_cluster(pg_url, amqp_url, dags=DAGS)
    prepare(cluster)
    store = open_store(pg_url)
    broker_depth(cluster)  # deletes the cluster's queues afterwards
    # When a scheduler starts on its own
    scheduler = cluster.scheduler()
    # Then it is up within a few seconds (it purges stale events at start)
    wait_for(store.schedulers, 15, "the scheduler to start", cluster)
    assert "loop error" not in scheduler.log(), scheduler.log()
