"""Publishing attempts on RabbitMQ in batches written at once (flowkit.dispatch.amqp_batch):
every message arrives, in order, with one socket write per batch; and a connection that
dies before a flush leaves the batch to publish again."""

from __future__ import annotations

import time
import uuid
from typing import Any

from flowkit.config import Settings
from flowkit.dispatch.celery import CeleryDispatcher
from flowkit.execution.celery_app import make_app
from flowkit.spec import StepSpec
from flowkit.store.machine import Dispatch


def _items(n: int) -> list[Dispatch]:
    run = str(uuid.uuid4())
    return [Dispatch(run, "wide", StepSpec(name=f"m{i:04d}", fn="x:y"), 1, str(uuid.uuid4())) for i in range(n)]


def _dispatcher(amqp_url: str) -> CeleryDispatcher:
    settings = Settings(
        broker_url=amqp_url, database_url="sqlite://", default_queue=f"flowkit.test.{uuid.uuid4().hex[:8]}"
    )
    return CeleryDispatcher(make_app(settings), settings)


def _drain(d: CeleryDispatcher, expected: int, delete: bool = True) -> list[str]:
    """The task ids in the queue, in order; deletes the queue unless told not to."""
    queue = d.settings.default_queue
    ids: list[str] = []
    with d.app.connection_for_write() as conn:
        channel = conn.default_channel
        deadline = time.monotonic() + 20
        try:
            while len(ids) < expected and time.monotonic() < deadline:
                message = channel.basic_get(queue, no_ack=True)
                if message is None:
                    time.sleep(0.05)
                    continue
                ids.append(message.headers["id"])
            time.sleep(0.2)  # nothing more arrives
            while (message := channel.basic_get(queue, no_ack=True)) is not None:
                ids.append(message.headers["id"])
        finally:
            if delete:
                channel.queue_delete(queue)
    return ids


def _count_writes(d: CeleryDispatcher) -> list[int]:
    """Bytes of each socket write on the dispatcher's (pooled) publishing connection."""
    writes: list[int] = []
    with d.app.producer_or_acquire() as producer:
        transport = producer.connection.connection.transport
        real = transport._write

        def write(data: Any) -> None:
            writes.append(len(data))
            real(data)

        transport._write = write
    return writes


def test_a_big_dispatch_arrives_whole_and_in_order_in_one_write_per_batch(amqp_url):
    d = _dispatcher(amqp_url)
    writes = _count_writes(d)
    items = _items(1200)
    try:
        assert d.dispatch_many(items) == []
        # opening the channel and declaring the queue (a few small writes, once), then one
        # write per batch (16, 64, 256, 500, 364 messages): not one per message
        batches = [n for n in writes if n > 5000]
        assert len(batches) == 5 and len(writes) <= 5 + 5, writes
        assert _drain(d, len(items), delete=False) == [i.task_id for i in items]
        # a second dispatch on the same connection does not declare again
        writes.clear()
        more = _items(10)
        assert d.dispatch_many(more) == []
        assert len(writes) == 1
        assert _drain(d, len(more)) == [i.task_id for i in more]
    finally:
        d.app.close()


def test_a_connection_lost_before_the_flush_leaves_the_batch_to_publish_again(amqp_url):
    d = _dispatcher(amqp_url)
    items = _items(40)
    with d.app.producer_or_acquire() as producer:
        transport = producer.connection.connection.transport

        real = transport._write

        def reset(data: Any) -> None:
            if len(data) > 1000:  # a batch, not the channel's opening or the declaration
                raise ConnectionResetError("connection reset during the flush")
            real(data)

        transport._write = reset
    try:
        failed = d.dispatch_many(items)
        assert failed == items  # the first batch's flush failed: everything is still to send
        # published again, on a new connection (the failed one was dropped)
        assert d.dispatch_many(failed) == []
        assert _drain(d, len(items)) == [i.task_id for i in items]
    finally:
        d.app.close()
