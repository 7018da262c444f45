"""Publishing attempts on Redis in pipelined batches (kombu's Producer.batch), and what a
failure leaves to publish again: never a message counted as sent that was not."""

from __future__ import annotations

import socket
import uuid
from typing import Any

import pytest

from flowkit.config import Settings
from flowkit.dispatch import celery as celery_dispatch
from flowkit.dispatch.celery import CeleryDispatcher
from flowkit.execution.celery_app import make_app
from flowkit.spec import StepSpec
from flowkit.store.machine import Dispatch


def _items(n: int) -> list[Dispatch]:
    run = str(uuid.uuid4())
    return [Dispatch(run, "wide", StepSpec(name=f"m{i:04d}", fn="x:y"), 1, str(uuid.uuid4())) for i in range(n)]


def _dispatcher(broker: str) -> CeleryDispatcher:
    settings = Settings(broker_url=broker, database_url="sqlite://", default_queue=f"q-{uuid.uuid4().hex[:6]}")
    return CeleryDispatcher(make_app(settings), settings)


def _queued(redis_url: str, queue: str) -> list[str]:
    import json

    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        return [json.loads(m)["headers"]["id"] for m in reversed(client.lrange(queue, 0, -1))]
    finally:
        client.close()


def _lpushes(pipeline: Any) -> int:
    return sum(1 for args, _options in pipeline.command_stack if args and args[0] == "LPUSH")


def _count_pipelines(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The LPUSHes of each pipeline that holds some (kombu pipelines other commands too)."""
    from redis.client import Pipeline

    executed: list[int] = []
    real = Pipeline.execute

    def execute(self: Any, *args: Any, **kwargs: Any) -> Any:
        if _lpushes(self):
            executed.append(_lpushes(self))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Pipeline, "execute", execute)
    return executed


def test_a_big_dispatch_goes_out_in_few_round_trips_and_in_order(redis_url, monkeypatch):
    d = _dispatcher(redis_url)
    items = _items(1200)
    executed = _count_pipelines(monkeypatch)
    assert d.dispatch_many(items) == []
    assert _queued(redis_url, d.settings.default_queue) == [i.task_id for i in items]
    # a small first batch, so that workers start at once, then 4x larger ones up to 500
    assert executed == [16, 64, 256, 500, 364]


def test_a_failed_send_returns_it_and_everything_after(redis_url, monkeypatch):
    d = _dispatcher(redis_url)
    items = _items(700)
    real = d.app.send_task

    def send_task(name: str, *args: Any, **kwargs: Any) -> Any:
        if kwargs["task_id"] == items[620].task_id:
            raise ConnectionError("broker went away")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(d.app, "send_task", send_task)
    failed = d.dispatch_many(items)
    # The first batches (16 + 64 + 256 + the 284 of the fourth before the failure) went out;
    # the rest is returned
    assert failed == items[620:]
    assert _queued(redis_url, d.settings.default_queue) == [i.task_id for i in items[:620]]


def test_a_failed_flush_returns_the_whole_batch(redis_url, monkeypatch):
    d = _dispatcher(redis_url)
    items = _items(600)
    from redis.client import Pipeline

    real = Pipeline.execute
    calls = {"n": 0}

    def execute(self: Any, *args: Any, **kwargs: Any) -> Any:
        if _lpushes(self):
            calls["n"] += 1
            if calls["n"] == 3:  # the third batch: 256 after 16 + 64
                self.reset()
                raise ConnectionError("connection reset during the flush")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Pipeline, "execute", execute)
    assert d.dispatch_many(items) == items[80:]
    assert _queued(redis_url, d.settings.default_queue) == [i.task_id for i in items[:80]]


def test_an_unreachable_broker_returns_every_item():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    d = _dispatcher(f"redis://127.0.0.1:{port}/0")
    d.app.conf.broker_connection_retry = False
    d.app.conf.broker_connection_max_retries = 0
    items = _items(3)
    assert d.dispatch_many(items) == items
    assert (celery_dispatch.FIRST_BATCH, celery_dispatch.PUBLISH_BATCH) == (16, 500)
