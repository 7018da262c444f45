"""The publish path's batching, without a broker: AMQP publishes held and written at once
(flowkit.dispatch.amqp_batch), queues declared once per batch, and what a failure returns."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from flowkit.config import Settings
from flowkit.dispatch import celery as celery_dispatch
from flowkit.dispatch.amqp_batch import BatchNotWritten, BufferedWrites
from flowkit.dispatch.celery import CeleryDispatcher
from flowkit.spec import StepSpec
from flowkit.store.machine import Dispatch


class FakeTransport:
    """py-amqp's transport as BufferedWrites sees it: ``write`` calls ``_write``."""

    def __init__(self, fail: bool = False) -> None:
        self.sent: list[bytes] = []
        self.fail = fail
        self._write = self._sendall

    def _sendall(self, data: Any) -> None:
        if self.fail:
            raise ConnectionResetError("reset by peer")
        self.sent.append(bytes(data))

    def write(self, data: Any) -> None:
        self._write(data)


class FakeRaw:
    def __init__(self, transport: FakeTransport, confirm_publish: bool = False) -> None:
        self.transport = transport
        self.confirm_publish = confirm_publish


class FakeConnection:
    """kombu's Connection: ``connection`` (connects when needed), ``_connection``, ``collect``."""

    def __init__(self, raw: Any) -> None:
        self._connection = raw
        self.collected = 0

    @property
    def connection(self) -> Any:
        return self._connection

    @connection.setter
    def connection(self, raw: Any) -> None:
        self._connection = raw

    def collect(self) -> None:
        self.collected += 1
        self._connection = None


class FakeProducer:
    def __init__(self, raw: Any) -> None:
        self.connection = FakeConnection(raw)
        self.revived = 0

    def revive(self, connection: Any) -> None:
        self.revived += 1


def _frames(transport: FakeTransport, *chunks: bytes) -> None:
    """What py-amqp does per publish: one write of a view of a buffer it reuses."""
    shared = bytearray(16)
    for chunk in chunks:
        shared[: len(chunk)] = chunk
        transport.write(memoryview(shared)[: len(chunk)])


def test_publishes_in_a_batch_go_out_in_one_write_in_order():
    transport = FakeTransport()
    with BufferedWrites(FakeProducer(FakeRaw(transport))) as batch:
        _frames(transport, b"one", b"two", b"three")
        assert transport.sent == []  # held: nothing written yet
    assert transport.sent == [b"onetwothree"]  # copies, not the reused buffer's last state
    assert batch.writes == 3
    _frames(transport, b"after")
    assert transport.sent[-1] == b"after"  # the real write is back


def test_an_exceptional_exit_writes_nothing_and_restores_the_write():
    transport = FakeTransport()
    with pytest.raises(RuntimeError), BufferedWrites(FakeProducer(FakeRaw(transport))):
        _frames(transport, b"one")
        raise RuntimeError("building a message failed")
    assert transport.sent == []
    _frames(transport, b"two")
    assert transport.sent == [b"two"]


def test_a_failed_write_raises_and_drops_the_connection():
    transport = FakeTransport(fail=True)
    producer = FakeProducer(FakeRaw(transport))
    with pytest.raises(ConnectionResetError), BufferedWrites(producer):
        _frames(transport, b"one", b"two")
    # the whole batch counts as unsent, and the next one connects again (kombu's retry
    # does the same when a publish of its own fails)
    assert (producer.connection.collected, producer.revived) == (1, 1)


def test_a_connection_replaced_during_the_batch_sends_nothing_of_the_old_one():
    transport = FakeTransport()
    producer = FakeProducer(FakeRaw(transport))
    with pytest.raises(BatchNotWritten), BufferedWrites(producer):
        _frames(transport, b"one")
        producer.connection.connection = FakeRaw(FakeTransport())  # kombu reconnected
    assert transport.sent == []


def test_confirming_connections_and_other_transports_are_not_buffered():
    confirming = FakeTransport()
    with BufferedWrites(FakeProducer(FakeRaw(confirming, confirm_publish=True))):
        _frames(confirming, b"one")  # would wait for its confirm: must reach the broker now
        assert confirming.sent == [b"one"]
    with BufferedWrites(FakeProducer(object())):  # Redis, memory: no py-amqp transport
        pass


# -- CeleryDispatcher: declare once per batch, and the batch sizes ------------------------


def _items(n: int, queue: str | None = None) -> list[Dispatch]:
    run = str(uuid.uuid4())
    return [
        Dispatch(run, "wide", StepSpec(name=f"m{i:04d}", fn="x:y", queue=queue), 1, str(uuid.uuid4())) for i in range(n)
    ]


class RecordingProducer(FakeProducer):
    def __init__(self) -> None:
        super().__init__(FakeRaw(FakeTransport()))
        self.declared: list[str] = []

    def maybe_declare(self, entity: Any, retry: bool = False, **policy: Any) -> None:
        self.declared.append(entity.name)


class RecordingApp:
    def __init__(self, producer: RecordingProducer, fail_at: str | None = None) -> None:
        from celery import Celery

        self.producer = producer
        self.amqp = Celery("t", broker="memory://", set_as_current=False).amqp
        self.sent: list[dict[str, Any]] = []
        self.fail_at = fail_at

    def producer_or_acquire(self) -> Any:
        import contextlib

        return contextlib.nullcontext(self.producer)

    def send_task(self, name: str, **kwargs: Any) -> None:
        if kwargs["task_id"] == self.fail_at:
            raise ConnectionError("broker went away")
        self.sent.append(kwargs)
        self.producer.connection.connection.transport.write(kwargs["task_id"].encode())


def _amqp_dispatcher(fail_at: str | None = None) -> tuple[CeleryDispatcher, RecordingApp]:
    settings = Settings(
        broker_url="amqp://guest:guest@127.0.0.1:5672//", database_url="sqlite://", default_queue="flowkit"
    )
    app = RecordingApp(RecordingProducer(), fail_at)
    return CeleryDispatcher(app, settings), app


def test_amqp_batches_declare_their_queues_once_and_write_once():
    d, app = _amqp_dispatcher()
    items = _items(100) + _items(20, queue="other")
    assert d.dispatch_many(items) == []
    # batches of 16, 64, then the 40 left; "other" appears in the last batch only
    assert app.producer.declared == ["flowkit", "flowkit", "flowkit", "other"]
    assert all(kw["declare"] == [] for kw in app.sent)  # never declared again per message
    transport = app.producer.connection.connection.transport
    assert [len(data) // 36 for data in transport.sent] == [16, 64, 40]
    assert b"".join(transport.sent).decode() == "".join(i.task_id for i in items)


def test_amqp_a_failed_send_flushes_what_was_before_it_and_returns_the_rest():
    items = _items(50)
    d, app = _amqp_dispatcher(fail_at=items[30].task_id)
    assert d.dispatch_many(items) == items[30:]
    transport = app.producer.connection.connection.transport
    assert b"".join(transport.sent).decode() == "".join(i.task_id for i in items[:30])


def test_amqp_a_failed_flush_returns_the_whole_batch_and_everything_after():
    items = _items(100)
    d, app = _amqp_dispatcher()
    transport = app.producer.connection.connection.transport
    real = transport._sendall
    calls = {"n": 0}

    def sendall(data: Any) -> None:
        calls["n"] += 1
        if calls["n"] == 2:  # the second batch (64 after the first 16)
            raise ConnectionResetError("reset during the flush")
        real(data)

    transport._write = sendall
    assert d.dispatch_many(items) == items[16:]
    assert b"".join(transport.sent).decode() == "".join(i.task_id for i in items[:16])


def test_a_declaration_that_fails_returns_the_batch_unsent():
    items = _items(20)
    d, app = _amqp_dispatcher()

    def refuse(entity: Any, retry: bool = False, **policy: Any) -> None:
        raise ConnectionRefusedError("broker down")

    app.producer.maybe_declare = refuse  # type: ignore[method-assign]
    assert d.dispatch_many(items) == items
    assert app.sent == []


def test_batch_sizes_are_unchanged():
    assert (celery_dispatch.FIRST_BATCH, celery_dispatch.PUBLISH_BATCH) == (16, 500)
