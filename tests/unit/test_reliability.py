"""Faults on the worker's claim/finish path and in the scheduler's loop, in-process.

Each test here failed on the engine before the reliability work (issue 7): an interruption
counted as a failure, an unprintable error stranded its attempt, a silent worker's step
waited for the broker's visibility timeout, a second SQLite scheduler was not refused.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import update

from flowkit.errors import ConfigError, StoreUnavailable
from flowkit.execution.attempt import run_attempt
from flowkit.scheduler.lease import SqliteLease
from flowkit.store import tables as t
from flowkit.testing import InlineHarness

DAGS = str(Path(__file__).resolve().parents[1] / "dags" / "reliability")
ENGINE_DAGS = str(Path(__file__).resolve().parents[1] / "dags" / "engine")


def test_a_worker_shutdown_is_an_interruption_not_a_failure(sqlite_store, tmp_path):
    # Given a step that billiard's SIGTERM handler stops the first time (SystemExit(-241))
    h = InlineHarness(sqlite_store, DAGS)
    run_id = h.trigger("interrupted", {"marker": str(tmp_path / "m")})
    item = h.dispatcher.sent.pop(0)
    # When it runs, the exit propagates (Celery must see the shutdown) ...
    with pytest.raises(SystemExit):
        run_attempt(h.runtime, item.run_id, item.step.name, item.attempt)
    # ... and the attempt is back in the queue: no failure recorded, no retry used
    (a,) = sqlite_store.attempts(run_id)
    assert (a["state"], a["interruptions"], a["error"]) == ("queued", 1, None)
    assert {s["step"]: s["state"] for s in sqlite_store.step_runs(run_id)} == {"work": "queued"}
    assert any(e["action"] == "attempt_interrupted" for e in sqlite_store.events(run_id))
    # Then the scheduler publishes it again soon (not after the 300 s queued lease), and it succeeds
    h.scheduler.sweep_seconds = 0
    h.scheduler.sweep()
    assert [d.task_id for d in h.dispatcher.sent] == [item.task_id]
    assert h.run_until_done(run_id) == "success"
    assert [a["number"] for a in sqlite_store.attempts(run_id)] == [1]


def test_a_step_calling_sys_exit_is_its_own_failure(sqlite_store):
    h = InlineHarness(sqlite_store, DAGS)
    run_id = h.trigger("exits")
    assert h.run_until_done(run_id) == "failed"
    assert sqlite_store.attempts(run_id)[0]["error"] == "the step called sys.exit(3)"


def test_an_exception_whose_str_raises_is_recorded(sqlite_store):
    h = InlineHarness(sqlite_store, DAGS)
    run_id = h.trigger("unprintable")
    assert h.run_until_done(run_id) == "failed"
    (a,) = sqlite_store.attempts(run_id)
    assert a["state"] == "failed"
    assert a["error"].startswith("BrokenStr: <str() of the exception raised ValueError>")


def test_a_nul_byte_in_an_error_is_stored_escaped(sqlite_store):
    h = InlineHarness(sqlite_store, DAGS)
    run_id = h.trigger("nul")
    assert h.run_until_done(run_id) == "failed"
    (a,) = sqlite_store.attempts(run_id)
    assert "\x00" not in a["error"] and "bad byte \\x00 in the message" in a["error"]


def test_a_database_outage_while_recording_is_retried_until_it_answers(sqlite_store, tmp_path, monkeypatch):
    # Given a store that fails twice when the outcome is written
    h = InlineHarness(sqlite_store, ENGINE_DAGS)
    run_id = h.trigger("chain", {"log": str(tmp_path / "log")})
    real = sqlite_store.finish_attempt
    failures = []

    def flaky(*args, **kwargs):  # type: ignore[no-untyped-def]
        if len(failures) < 2:
            failures.append(1)
            raise StoreUnavailable("cannot reach the database (test)")
        return real(*args, **kwargs)

    monkeypatch.setattr(sqlite_store, "finish_attempt", flaky)
    monkeypatch.setattr("flowkit.execution.runtime.time.sleep", lambda _s: None)
    item = h.dispatcher.sent.pop(0)
    # When the step finishes, the outcome is recorded once the store answers
    assert run_attempt(h.runtime, item.run_id, item.step.name, item.attempt) == "success"
    assert len(failures) == 2
    assert sqlite_store.attempts(run_id)[0]["state"] == "success"


def test_a_refused_hot_connection_is_a_store_error_the_worker_retries(monkeypatch):
    """The worker's own PostgreSQL connections are opened outside SQLAlchemy's execution,
    which would wrap the driver's error: during a database restart a claim's connect
    failed the task with psycopg's raw error (retried only after three heartbeats)."""
    import socket

    from sqlalchemy.exc import DBAPIError

    from flowkit.execution.runtime import until_stored
    from flowkit.store.sql import SqlStore

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here
    store = SqlStore(f"postgresql+psycopg://postgres@127.0.0.1:{port}/flowkit")
    calls = []

    def claim() -> None:
        calls.append(1)
        with store.hot_claims.connection():
            pass

    monkeypatch.setattr("flowkit.execution.runtime.time.sleep", lambda _s: None)
    # When the connection is refused, the error is SQLAlchemy's, marked as a lost
    # connection, and the retry loop retries it until it gives up
    with pytest.raises(DBAPIError) as raised:
        until_stored("claiming (test)", claim, give_up_after=0.2)
    assert raised.value.connection_invalidated and len(calls) > 1


def test_a_silent_workers_attempt_is_published_again_and_taken_over(sqlite_store, tmp_path):
    # Given worker A claimed s1 and then went silent (its machine died)
    h = InlineHarness(sqlite_store, ENGINE_DAGS)
    run_id = h.trigger("chain", {"log": str(tmp_path / "log")})
    item = h.dispatcher.sent.pop(0)
    claim = sqlite_store.claim_attempt(run_id, "s1", 1, worker="A", lost_after=30, max_deliveries=3)
    assert claim.outcome == "run"
    old = h.clock() - timedelta(seconds=40)
    with sqlite_store.engine.begin() as conn:
        conn.execute(
            update(t.attempts).where(t.attempts.c.run_id == run_id).values(heartbeat_at=old, dispatched_at=old)
        )
    # When the scheduler sweeps, it publishes the same attempt again (no broker timeout)
    h.scheduler.sweep()
    assert [d.task_id for d in h.dispatcher.sent] == [item.task_id]
    # Then another worker takes it over, and the run finishes with one attempt per step
    assert h.run_until_done(run_id) == "success"
    assert sqlite_store.attempts(run_id)[0]["deliveries"] == 2
    assert any(e["action"] == "attempt_redelivered" for e in sqlite_store.events(run_id))


def test_a_broker_reconnect_publishes_queued_attempts_again(sqlite_store, tmp_path):
    # Given an attempt published just before the broker restarted without persistence
    h = InlineHarness(sqlite_store, ENGINE_DAGS)
    run_id = h.trigger("chain", {"log": str(tmp_path / "log")})
    lost = h.dispatcher.sent.pop(0)
    # When the scheduler's event connection comes back
    h.events.reconnected = True
    h.scheduler.handle([])
    # Then the attempt is published again at once
    assert [d.task_id for d in h.dispatcher.sent] == [lost.task_id]
    assert h.run_until_done(run_id) == "success"


def test_a_second_scheduler_on_one_sqlite_file_is_refused(sqlite_store):
    first = SqliteLease(sqlite_store)
    assert first.acquire()
    with pytest.raises(ConfigError, match="another scheduler .* already runs on the SQLite database"):
        SqliteLease(sqlite_store).acquire()
    first.release()
    again = SqliteLease(sqlite_store)
    assert again.acquire()
    again.release()


def test_the_dags_refresh_never_blocks_the_scheduler(sqlite_store, monkeypatch):
    # Given a dags folder whose import hangs
    from flowkit.cli import daemons
    from flowkit.config import Settings

    release = threading.Event()
    monkeypatch.setattr("flowkit.loading.sync.sync_dags", lambda *a, **k: release.wait(10))
    stop = threading.Event()
    started = time.monotonic()
    thread = daemons.refresh_dags_in_background(Settings(database_url=sqlite_store.url), sqlite_store, stop)
    # Then the caller (the scheduler's loop) goes on at once
    assert time.monotonic() - started < 0.5
    assert thread.is_alive()
    stop.set()
    release.set()
    thread.join(5)


def test_scheduler_names_carry_host_and_pid(sqlite_store):
    import os
    import socket

    from flowkit.scheduler.loop import Scheduler

    h = InlineHarness(sqlite_store, ENGINE_DAGS)
    a = Scheduler(sqlite_store, h.dispatcher, h.events)
    # two schedulers on two machines or two processes never share a name in the audit trail
    assert a.actor == f"scheduler@{socket.gethostname()}:{os.getpid()}"


LIMIT_DAGS = str(Path(__file__).resolve().parents[1] / "dags" / "limits_unit")


def test_steps_a_worker_queued_and_froze_before_publishing_are_published_again(sqlite_store, monkeypatch):
    from flowkit.testing import FakeClock

    clock = FakeClock()
    h = InlineHarness(sqlite_store, LIMIT_DAGS, clock=clock)
    run_id = h.trigger("wide")
    root = h.dispatcher.sent.pop(0)
    # Given the root's worker committed its finish (queuing the 40 members itself) and froze
    # before publishing any of them
    monkeypatch.setattr("flowkit.execution.attempt._publish", lambda rt, items: [])
    run_attempt(h.runtime, run_id, "root", root.attempt)
    monkeypatch.undo()
    queued = [a for a in sqlite_store.attempts(run_id) if a["state"] == "queued"]
    assert len(queued) == 40 and all(a["heartbeat_at"] for a in queued) and not h.dispatcher.sent
    # When a sweep comes before the worker counts as lost, nothing is published twice
    clock.advance(10)
    h.scheduler.sweep()
    assert not h.dispatcher.sent
    # Then once it has been silent for three heartbeats, the scheduler publishes them, once
    clock.advance(25)
    h.scheduler.sweep()
    assert sorted(d.step.name for d in h.dispatcher.sent) == sorted(a["step"] for a in queued)
    h.scheduler.sweep()
    assert len(h.dispatcher.sent) == 40
    reasons = {e["reason"] for e in sqlite_store.events(run_id) if e["action"] == "lease_expired"}
    assert reasons == {"queued by a worker that went silent before publishing it; published again"}
    assert h.run_until_done(run_id) == "success"
    assert all(a["number"] == 1 for a in sqlite_store.attempts(run_id))


def test_what_a_worker_published_it_confirms_to_the_store(sqlite_store):
    h = InlineHarness(sqlite_store, LIMIT_DAGS)
    run_id = h.trigger("wide")
    root = h.dispatcher.sent.pop(0)
    run_attempt(h.runtime, run_id, "root", root.attempt)
    queued = [a for a in sqlite_store.attempts(run_id) if a["state"] == "queued"]
    assert len(queued) == 40 and len(h.dispatcher.sent) == 40
    assert not any(a["heartbeat_at"] for a in queued)  # the scheduler has nothing to publish again
    assert sqlite_store.unconfirmed_publishes(datetime.now(UTC) + timedelta(days=1)) == []


def test_a_message_that_went_with_a_dead_worker_before_its_claim_is_published_again(sqlite_store):
    from flowkit.testing import FakeClock

    clock = FakeClock()
    h = InlineHarness(sqlite_store, LIMIT_DAGS, clock=clock)
    run_id = h.trigger("wide")
    root = h.dispatcher.sent.pop(0)
    run_attempt(h.runtime, run_id, "root", root.attempt)
    # Given the 40 members' messages were taken from the queue by a worker that died before
    # claiming any (on Redis they would come back after the visibility timeout, an hour)
    taken = list(h.dispatcher.sent)
    h.dispatcher.sent.clear()
    # When the queue holds other messages, an old queued attempt may just be waiting there
    h.dispatcher.depths["flowkit"] = 3
    clock.advance(31)
    h.scheduler.sweep()
    assert not h.dispatcher.sent
    # Then once the queue is empty, three heartbeats after their dispatch, they go out again
    h.dispatcher.depths["flowkit"] = 0
    h.scheduler.sweep()
    assert sorted(d.task_id for d in h.dispatcher.sent) == sorted(d.task_id for d in taken)
    reasons = {e["reason"] for e in sqlite_store.events(run_id) if e["action"] == "lease_expired"}
    assert reasons == {"never started; its message went with a worker that died before claiming it; published again"}
    assert h.run_until_done(run_id) == "success"
    assert all(a["number"] == 1 and a["state"] == "success" for a in sqlite_store.attempts(run_id))
