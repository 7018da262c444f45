"""Raw Celery doing the same work as the flowkit bench flows, for ``bench/run.py``.

Worker: ``celery -A bench.raw_celery worker -c 2 --pool prefork -Q bench.raw -E``
(run.py starts it with the environment below; run it from the repository root).

The Celery configuration copies flowkit's (``flowkit/execution/celery_app.py``): JSON only,
``acks_late`` + ``reject_on_worker_lost``, prefetch 1, task events on, results ignored,
the same Redis transport options (visibility timeout, priority queue order). So the
ratio flowkit / raw measures what flowkit adds (SQL state, scheduler hops), not a
different Celery setup.

Waiting without a result backend: flowkit needs no result backend, so the lean raw
scenarios have none either. The last task of a chain (or the join of a fan-out) writes
a completion marker (``time.time()`` of the finish) to a Redis key, and the bench
polls that key. A fan-out's join is released by a Redis ``INCR`` counter that each
member bumps (a "manual chord": one extra Redis round trip per member, no result
backend). The ``fanout_chord`` scenario is the idiomatic Celery ``chord`` instead,
which needs a result backend (Redis, database ``BENCH_RESULT_REDIS``); it is reported
as a second, heavier baseline.

Two more variants serve the larger shapes: ``timed_chain`` is a chain whose every link
appends its end ``time.time()`` to a Redis list (``<key>:ends``), so the bench computes
per-hop latencies the same way it does from flowkit's ``ended_at`` timestamps; and
``group`` is a plain group whose last member to finish writes the marker.

Environment (set by run.py):
  BENCH_RAW_BROKER     broker URL (default redis://127.0.0.1:6379/13)
  BENCH_RAW_QUEUE      queue name (default bench.raw; run.py adds a random per-run suffix)
  BENCH_MARKER_REDIS   Redis URL for markers and counters (default redis://127.0.0.1:6379/15)
  BENCH_RESULT_REDIS   result backend URL for the chord scenario (default: BENCH_MARKER_REDIS)
"""

from __future__ import annotations

import os
import time
from typing import Any

from celery import Celery, chain, chord, group

BROKER = os.environ.get("BENCH_RAW_BROKER", "redis://127.0.0.1:6379/13")
QUEUE = os.environ.get("BENCH_RAW_QUEUE", "bench.raw")
MARKER_REDIS = os.environ.get("BENCH_MARKER_REDIS", "redis://127.0.0.1:6379/15")
RESULT_REDIS = os.environ.get("BENCH_RESULT_REDIS", MARKER_REDIS)
#: Markers and counters expire on their own, so an interrupted run leaves nothing behind.
KEY_TTL = 600

_redis: Any = None
_redis_pid: int | None = None


def redis_client() -> Any:
    """One Redis client per process (a forked pool child opens its own)."""
    global _redis, _redis_pid
    if _redis is None or _redis_pid != os.getpid():
        import redis

        _redis = redis.Redis.from_url(MARKER_REDIS)
        _redis_pid = os.getpid()
    return _redis


def make_app(broker: str = BROKER, *, result_backend: str | None = None) -> Celery:
    """A Celery app configured like flowkit's ``make_app`` (see the module docstring)."""
    from flowkit.config import Settings
    from flowkit.execution.celery_app import celery_config

    app = Celery("bench_raw", broker=broker, backend=result_backend, set_as_current=False)
    # Exactly flowkit's Celery settings, so the comparison measures flowkit, not configuration.
    app.conf.update(celery_config(Settings(broker_url=broker, database_url="sqlite://")))
    app.conf.update(result_backend=result_backend, task_default_queue=QUEUE)
    _register(app)
    return app


def _mark(key: str) -> None:
    redis_client().set(key, repr(time.time()), ex=KEY_TTL)


def _register(app: Celery) -> None:
    # shared=False: each app (worker, lean client, chord client) gets its own task objects.
    @app.task(name="bench.noop", shared=False, acks_late=True, reject_on_worker_lost=True)
    def noop(prev: dict[str, Any] | None = None) -> dict[str, Any]:
        """One chain link: take the previous tiny dict, return the next."""
        return {"n": (prev or {}).get("n", 0) + 1}

    @app.task(name="bench.chain_last", shared=False, acks_late=True, reject_on_worker_lost=True)
    def chain_last(prev: dict[str, Any], key: str) -> dict[str, Any]:
        """The chain's last link: like noop, then write the completion marker."""
        out = {"n": prev.get("n", 0) + 1}
        _mark(key)
        return out

    @app.task(name="bench.member", shared=False, acks_late=True, reject_on_worker_lost=True)
    def member(prev: dict[str, Any], key: str, width: int) -> dict[str, Any]:
        """A fan-out member; the last one to finish sends the join (a manual chord)."""
        out = {"n": prev.get("n", 0) + 1}
        if redis_client().incr(f"{key}:count") == width:
            app.signature("bench.join", args=(key,), queue=QUEUE).apply_async()
        return out

    @app.task(name="bench.join", shared=False, acks_late=True, reject_on_worker_lost=True)
    def join(key: str) -> dict[str, Any]:
        _mark(key)
        return {"n": 1}

    @app.task(name="bench.timed_link", shared=False, acks_late=True, reject_on_worker_lost=True)
    def timed_link(prev: dict[str, Any], key: str, last: bool = False) -> dict[str, Any]:
        """A chain link that appends its end time to ``<key>:ends`` (the last one also marks)."""
        out = {"n": prev.get("n", 0) + 1}
        # The end is taken after the link's work and before Celery sends the next link,
        # the same point as flowkit's ended_at (after the step, before the finish commit).
        ended = time.time()
        # One round trip (a pipeline), to add as little as possible to the raw side's hop.
        redis_client().pipeline(transaction=False).rpush(f"{key}:ends", repr(ended)).expire(
            f"{key}:ends", KEY_TTL
        ).execute()
        if last:
            _mark(key)
        return out

    @app.task(name="bench.group_member", shared=False, acks_late=True, reject_on_worker_lost=True)
    def group_member(key: str, width: int) -> None:
        """A member of a plain group; the last one to finish writes the marker."""
        if redis_client().incr(f"{key}:count") == width:
            _mark(key)

    # The chord scenario: members and join keep their results in the result backend.
    @app.task(name="bench.member_r", shared=False, acks_late=True, reject_on_worker_lost=True, ignore_result=False)
    def member_r(prev: dict[str, Any]) -> dict[str, Any]:
        return {"n": prev.get("n", 0) + 1}

    @app.task(name="bench.join_r", shared=False, acks_late=True, reject_on_worker_lost=True, ignore_result=False)
    def join_r(results: list[dict[str, Any]], key: str) -> dict[str, Any]:
        _mark(key)
        return {"n": len(results)}


# -- what the bench submits ---------------------------------------------------------------
def submit_chain(client: Celery, key: str, steps: int) -> None:
    """``steps`` tasks in a Celery chain, each passing a tiny dict to the next."""
    sigs = [client.signature("bench.noop", args=({"n": 0},), queue=QUEUE)]
    sigs += [client.signature("bench.noop", queue=QUEUE) for _ in range(steps - 2)]
    sigs.append(client.signature("bench.chain_last", kwargs={"key": key}, queue=QUEUE))
    chain(*sigs).apply_async()


def submit_timed_chain(client: Celery, key: str, steps: int) -> None:
    """Like ``submit_chain``, with every link recording its end time (see ``timed_link``)."""
    sigs = [client.signature("bench.timed_link", args=({"n": 0},), kwargs={"key": key}, queue=QUEUE)]
    sigs += [client.signature("bench.timed_link", kwargs={"key": key}, queue=QUEUE) for _ in range(steps - 2)]
    sigs.append(client.signature("bench.timed_link", kwargs={"key": key, "last": True}, queue=QUEUE))
    chain(*sigs).apply_async()


def chain_ends(marker: Any, key: str) -> list[float]:
    """The end times ``submit_timed_chain``'s links recorded, in chain order."""
    return [float(v) for v in marker.lrange(f"{key}:ends", 0, -1)]


def submit_group(client: Celery, key: str, size: int) -> None:
    """``size`` independent tasks (one group); the last to finish writes the marker."""
    group(client.signature("bench.group_member", args=(key, size), queue=QUEUE) for _ in range(size)).apply_async()


def submit_fanout(client: Celery, key: str, width: int) -> None:
    """A root, then ``width`` members after it (a group), then one join: width + 2 tasks."""
    members = group(
        client.signature("bench.member", kwargs={"key": key, "width": width}, queue=QUEUE) for _ in range(width)
    )
    chain(client.signature("bench.noop", args=({"n": 0},), queue=QUEUE), members).apply_async()


def submit_fanout_chord(client: Celery, key: str, width: int) -> None:
    """The same shape with Celery's own ``chord`` (needs ``client`` with a result backend)."""
    header = group(client.signature("bench.member_r", queue=QUEUE) for _ in range(width))
    body = client.signature("bench.join_r", kwargs={"key": key}, queue=QUEUE)
    chain(client.signature("bench.noop", args=({"n": 0},), queue=QUEUE), chord(header, body)).apply_async()


#: The app the raw worker runs (``celery -A bench.raw_celery``): with the result backend,
#: which only the chord scenario's tasks use (every other task ignores its result).
app = make_app(result_backend=RESULT_REDIS)
