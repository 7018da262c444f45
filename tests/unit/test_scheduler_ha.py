"""One active scheduler: the SQLite lock keyed on the real file, a scheduler that lost its
lease publishes nothing, and what `flowkit status` says about schedulers and the broker."""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import update

from flowkit.cli import main
from flowkit.errors import ConfigError, LeaseLost
from flowkit.scheduler.lease import SqliteLease
from flowkit.scheduler.loop import Scheduler
from flowkit.store import tables as t
from flowkit.store.sql import SqlStore, utcnow
from flowkit.testing import InlineHarness

ENGINE_DAGS = str(Path(__file__).resolve().parents[1] / "dags" / "engine")


# -- the SQLite lock is keyed on the real file -----------------------------------------------------
@pytest.mark.parametrize("spelling", ["symlink", "query", "relative"])
def test_a_second_sqlite_scheduler_is_refused_however_the_url_spells_the_file(
    sqlite_store, tmp_path, monkeypatch, spelling
):
    real = Path(sqlite_store.url.split("///", 1)[1])
    if spelling == "symlink":
        (tmp_path / "elsewhere").mkdir()
        os.symlink(real, tmp_path / "elsewhere" / "alias.db")
        other_url = f"sqlite:///{tmp_path / 'elsewhere' / 'alias.db'}"
    elif spelling == "query":
        other_url = f"{sqlite_store.url}?timeout=30"
    else:
        monkeypatch.chdir(real.parent)
        other_url = f"sqlite:///{real.name}"
    first = SqliteLease(sqlite_store, "scheduler@one")
    assert first.acquire()
    with pytest.raises(
        ConfigError,
        match=f"another scheduler \\(scheduler@one pid {os.getpid()}\\) already runs on the SQLite database {real}",
    ):
        SqliteLease(SqlStore(other_url), "scheduler@two").acquire()
    first.release()
    again = SqliteLease(SqlStore(other_url), "scheduler@two")
    assert again.acquire()
    again.release()
    assert not list(real.parent.glob("elsewhere/*.lock"))  # the lock sits beside the real file


# -- a scheduler that lost its lease publishes nothing --------------------------------------------
class FlakyLease:
    """Held until ``lose()``; then never again (another scheduler holds it)."""

    def __init__(self) -> None:
        self._held = False
        self.token = 7
        self.lost_reason = ""

    def acquire(self) -> bool:
        self._held = not self.lost_reason
        return self._held

    def held(self) -> bool:
        return self._held

    def lose(self) -> None:
        self._held, self.lost_reason = False, "another scheduler took the lease over; token 7 is stale"

    def release(self) -> None:
        self._held = False

    def describe(self) -> dict[str, float]:
        return {"lease_seconds": 10.0, "lease_renew_seconds": 2.0}


def test_a_scheduler_resumed_after_losing_its_lease_publishes_nothing(sqlite_store):
    # Given an active scheduler that committed a queued attempt, and froze before publishing it
    h = InlineHarness(sqlite_store, ENGINE_DAGS)
    lease = FlakyLease()
    h.scheduler.lease = lease
    assert lease.acquire()
    spec = sqlite_store.flow_spec("chain")
    run_id = sqlite_store.create_run(spec, {"log": "-"}, actor="test")
    effects = sqlite_store.start_runs(
        h.scheduler.actor, specs={}, global_cap=None, gate=lambda s: True, run_ids=[run_id]
    )
    assert effects.to_send
    # When it resumes after another scheduler took the lease over
    lease.lose()
    with pytest.raises(LeaseLost, match="lease not held; 1 publish\\(es\\) dropped"):
        h.scheduler._apply(effects)
    # Then nothing was published (the active scheduler sends every queued attempt at its start)
    assert h.dispatcher.sent == [] and h.scheduler._unsent == []
    assert sqlite_store.attempts(run_id)[0]["state"] == "queued"


def test_the_loop_stands_down_when_its_lease_is_lost_while_active(sqlite_store, caplog):
    h = InlineHarness(sqlite_store, ENGINE_DAGS)
    lease = FlakyLease()
    h.scheduler.lease = lease
    stop = threading.Event()
    caplog.set_level(logging.INFO, logger="flowkit.scheduler.loop")
    runner = threading.Thread(target=h.scheduler.run_forever, args=(stop,))
    runner.start()
    try:
        _wait(lambda: "active (holds the scheduler lease), fencing token 7" in caplog.text)
        lease.lose()
        _wait(
            lambda: (
                "no longer active (another scheduler took the lease over; token 7 is stale); "
                "standing by, writing nothing" in caplog.text
            )
        )
    finally:
        stop.set()
        runner.join(10)
    (row,) = sqlite_store.schedulers()
    assert row["stopped_at"] is not None  # a clean stop is recorded


def _wait(predicate, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    import time

    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


# -- flowkit status ---------------------------------------------------------------------------
@pytest.fixture
def status(sqlite_store):  # type: ignore[no-untyped-def]
    def invoke(*args: str, broker: str = "memory://"):  # type: ignore[no-untyped-def]
        return CliRunner().invoke(main, ["--database-url", sqlite_store.url, "--broker-url", broker, "status", *args])

    return invoke


def _scheduler(store: SqlStore, name: str, *, high: int = 40, low: int = 20) -> Scheduler:
    """A scheduler that ran (registered, became active and beat) with watermarks high/low."""
    from flowkit.dispatch.base import Backpressure
    from flowkit.testing import InlineDispatcher, MemoryEvents

    sched = Scheduler(
        store, InlineDispatcher(), MemoryEvents(), name=name, backpressure=Backpressure(lambda q: 0, high=high, low=low)
    )
    sched.register()
    store.beat_scheduler(name, sched.status(), started=True)
    return sched


def test_status_shows_a_cleanly_stopped_scheduler_as_stopped(sqlite_store, status):
    # Given a scheduler that ran and was stopped cleanly (SIGTERM)
    sched = Scheduler(
        sqlite_store,
        InlineHarness(sqlite_store, ENGINE_DAGS).dispatcher,
        InlineHarness(sqlite_store, ENGINE_DAGS).events,
        name="scheduler@a",
        lease=SqliteLease(sqlite_store, "scheduler@a"),
    )
    stop = threading.Event()
    runner = threading.Thread(target=sched.run_forever, args=(stop,))
    runner.start()
    _wait(lambda: any(s["stats"].get("role") == "active" for s in sqlite_store.schedulers()))
    stop.set()
    runner.join(10)
    # Then status says it stopped, not that it does not respond (now or later)
    result = status("--no-broker")
    assert result.exit_code == 0, result.output
    assert "scheduler scheduler@a: stopped at " in result.output
    assert "NOT RESPONDING" not in result.output and "active" not in result.output
    (row,) = json.loads(status("--json", "--no-broker").output)["schedulers"]
    assert row["role"] == "stopped" and not row["alive"]


def test_status_shows_the_role_in_text_and_a_silent_scheduler_is_never_active(sqlite_store, status):
    _scheduler(sqlite_store, "scheduler@a")
    result = status("--no-broker")
    assert "scheduler scheduler@a: active, last heartbeat " in result.output
    # When it goes silent (killed, frozen) with "active" still in its last heartbeat
    with sqlite_store.engine.begin() as conn:
        conn.execute(update(t.schedulers).values(heartbeat_at=utcnow().replace(year=2025)))
    # Then it is not active, in the text and in JSON
    result = status("--no-broker")
    assert "scheduler scheduler@a: NOT RESPONDING, last heartbeat " in result.output
    (row,) = json.loads(status("--json", "--no-broker").output)["schedulers"]
    assert row["role"] == "not responding" and row["stats"]["role"] == "active"


def test_status_shows_the_watermarks_the_scheduler_runs_with(sqlite_store, status):
    # Given a scheduler started with watermarks 40/20, and a shell with the defaults (1000/500)
    _scheduler(sqlite_store, "scheduler@a", high=40, low=20)
    result = status("--no-broker")
    assert "queues (backpressure at 40, released at 20, as scheduler scheduler@a runs):" in result.output
    assert "1000" not in result.output
    assert json.loads(status("--json", "--no-broker").output)["watermarks"] == {
        "high": 40,
        "low": 20,
        "scheduler": "scheduler@a",
    }


def test_status_without_a_scheduler_does_not_invent_watermarks(status):
    result = status("--no-broker")
    assert "queues (watermarks unknown: no running scheduler recorded them):" in result.output


def test_status_with_the_broker_down_says_so_on_one_clean_line(sqlite_store, status):
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"redis://127.0.0.1:{port}/0"
    result = status(broker=url)
    assert result.exit_code == 0, result.output
    lines = [
        line
        for line in result.output.splitlines()
        if line.startswith(("queues", "  ")) or "broker" in line or "waiting," in line
    ]
    assert lines == [f"queues: broker unreachable ({url}: connection refused)"]
    assert json.loads(status("--json", broker=url).output)["broker_unreachable"] == f"{url}: connection refused"


# -- settings ---------------------------------------------------------------------------------
def test_the_lease_settings_default_to_a_takeover_within_15_s_and_are_checked():
    from flowkit.config import Settings

    defaults = Settings.from_env({})
    assert (defaults.scheduler_lease_seconds, defaults.scheduler_lease_renew_seconds) == (10.0, 2.0)
    with pytest.raises(
        ConfigError,
        match="FLOWKIT_SCHEDULER_LEASE_RENEW_SECONDS=3 must be above 0 and at "
        "most half of FLOWKIT_SCHEDULER_LEASE_SECONDS=4",
    ):
        Settings.from_env({"FLOWKIT_SCHEDULER_LEASE_SECONDS": "4", "FLOWKIT_SCHEDULER_LEASE_RENEW_SECONDS": "3"})
