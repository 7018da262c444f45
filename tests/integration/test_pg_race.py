"""Races on PostgreSQL between a worker's claim and finish, a database crash, and an operator's
cancel. Flows: tests/dags/pgrace."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from flowkit.testing import InlineHarness

ROOT = Path(__file__).resolve().parents[2]
RACE_DAGS = str(ROOT / "tests" / "dags" / "pgrace")


def body_starts(log: Path) -> list[tuple[str, str, int]]:
    """(run, step, attempt) of each body start the flows logged, in order."""
    if not log.exists():
        return []
    return [(p[1], p[2], int(p[3])) for p in (line.split() for line in log.read_text().splitlines())]


def forget_claim(store: Any, run_id: str, step: str, number: int) -> None:
    """Undo a committed claim as a database crash undoes one that was not flushed to disk: the
    attempt and its step read queued again, and the claim's audit rows are gone."""
    with store.engine.begin() as conn:
        key = {"run": run_id, "step": step, "num": number}
        conn.execute(
            text(
                "UPDATE attempts SET state = 'queued', worker = NULL, started_at = NULL, "
                "deliveries = deliveries - 1 WHERE run_id = :run AND step = :step AND number = :num"
            ),
            key,
        )
        conn.execute(
            text("UPDATE step_runs SET state = 'queued', started_at = NULL WHERE run_id = :run AND step = :step"), key
        )
        conn.execute(text("DELETE FROM events WHERE run_id = :run AND step = :step AND new_state = 'running'"), key)


@pytest.mark.parametrize("lost", [["a"], ["b", "c"]], ids=["generic-claim", "one-statement-claim"])
def test_a_finish_whose_claim_was_lost_records_its_success_once(pg_url, open_store, tmp_path, lost, caplog):
    # Given a chain whose claims of the steps in ``lost`` do not survive (as after a crash of
    # a database that committed them without waiting for the disk): the first claim of a run
    # in a process takes the generic path, later ones the one-statement path
    store = open_store(pg_url)
    store.upgrade()
    log = tmp_path / "bodies.log"
    h = InlineHarness(store, RACE_DAGS)
    claim = store.claim_attempt

    def claim_then_lose(run_id: str, step: str, number: int, **kw: Any) -> Any:
        got = claim(run_id, step, number, **kw)
        if step in lost and got.outcome == "run":
            forget_claim(store, run_id, step, number)
        return got

    store.claim_attempt = claim_then_lose  # type: ignore[method-assign]
    run_id = h.trigger("chain3", {"log": str(log)})
    # When each body finishes and its worker records the outcome
    assert h.run_until_done(run_id) == "success"
    # Then each success is recorded once, by the worker that ran the body, and no body ran twice
    assert body_starts(log) == [(run_id, s, 1) for s in ("a", "b", "c")]
    attempts = {a["step"]: a for a in store.attempts(run_id)}
    for step in ("a", "b", "c"):
        a = attempts[step]
        assert (a["number"], a["state"], a["worker"], a["deliveries"]) == (1, "success", "worker@test", 1), a
        assert a["started_at"] is not None and a["started_at"] <= a["ended_at"]
    # and the audit trail reads queued -> running -> success for each step and its attempt
    events = store.events(run_id)
    for step in ("a", "b", "c"):
        moves = [(e["old_state"], e["new_state"]) for e in events if e["step"] == step and e["action"] == "step_state"]
        assert moves[-2:] == [("queued", "running"), ("running", "success")], (step, moves)
        actions = [
            e["action"]
            for e in events
            if e["step"] == step and e["attempt"] == 1 and e["action"].startswith("attempt_")
        ]
        assert actions == ["attempt_started", "attempt_finished"], (step, actions)
    recorded = [e for e in events if e["action"] == "attempt_started" and "claim was lost" in e["reason"]]
    assert sorted(e["step"] for e in recorded) == sorted(lost)
    assert "taken over" not in caplog.text
    assert all(used == held == 0 for used, held in store.ledger_balance().values())


def test_a_finish_that_another_worker_took_over_is_discarded_and_says_by_whom(pg_url, open_store, tmp_path, caplog):
    # Given a step whose attempt another worker claims after this one's claim was lost
    store = open_store(pg_url)
    store.upgrade()
    log = tmp_path / "bodies.log"
    h = InlineHarness(store, RACE_DAGS)
    claim = store.claim_attempt

    def claim_lost_then_taken(run_id: str, step: str, number: int, **kw: Any) -> Any:
        got = claim(run_id, step, number, **kw)
        if step == "b" and got.outcome == "run":
            forget_claim(store, run_id, step, number)
            assert claim(run_id, step, number, **{**kw, "worker": "other@host"}).outcome == "run"
        return got

    store.claim_attempt = claim_lost_then_taken  # type: ignore[method-assign]
    run_id = h.trigger("chain3", {"log": str(log)})
    h.work()
    # Then this worker's outcome is discarded, and the log line names the worker that has it
    (b,) = store.attempts(run_id, "b")
    assert (b["state"], b["worker"]) == ("running", "other@host")
    assert "attempt 1 was taken over by worker other@host; outcome (success) discarded" in caplog.text


CANCEL_ROUNDS = 4


def test_a_cancel_racing_claims_and_finishes_neither_deadlocks_nor_lets_a_body_start_after_it(tmp_path):
    from .limits_support import flowkit
    from .procs import wait_for
    from .services import FAST_DETECTION, cluster_on_fresh_services

    # Given a worker with four processes claiming and finishing the members of a fan-out
    with cluster_on_fresh_services(tmp_path, "tests/dags/pgrace", workers=[("worker", 4)], **FAST_DETECTION) as (
        cluster,
        store,
    ):
        for round_ in range(CANCEL_ROUNDS):
            log = tmp_path / f"bodies-{round_}.log"
            run_id = flowkit(cluster, "trigger", "fanout", "-p", f"log={log}", "-p", "seconds=0.25").stdout.strip()
            wait_for(
                lambda log=log, n=2 + round_: sum(s[1].startswith("m") for s in body_starts(log)) >= n,
                30,
                "members to start",
                cluster,
                interval=0.01,
            )
            # When an operator cancels the run while members are being claimed and finished
            out = flowkit(cluster, "runs", "cancel", run_id, "--by", "ann", "--reason", f"round {round_}")
            wait_for(
                lambda run_id=run_id: all(a["state"] not in ("queued", "running") for a in store.attempts(run_id)),
                20,
                "every attempt to end",
                cluster,
            )
            # Then no conflict was retried (no deadlock) and nothing warned on the CLI's stderr
            assert store.get_run(run_id)["state"] == "cancelled"
            assert "WARNING" not in out.stderr and "40P01" not in out.stderr, out.stderr
            events = store.events(run_id)
            cancel_id = next(e["id"] for e in events if e["action"] == "operator_cancel")
            claimed_at = {(e["step"], e["attempt"]): e["id"] for e in events if e["action"] == "attempt_started"}
            # and every body that started was claimed before the cancel, in the audit trail's order
            late = [
                (step, attempt)
                for run, step, attempt in body_starts(log)
                if run == run_id and claimed_at.get((step, attempt), cancel_id + 1) > cancel_id
            ]
            assert late == [], late
            # and, in the order of the audit trail, each step's times only go forward
            for step in {e["step"] for e in events if e["step"]}:
                times = [e["at"] for e in sorted(events, key=lambda e: e["id"]) if e["step"] == step]
                assert times == sorted(times), (
                    step,
                    [(e["id"], e["action"], e["at"]) for e in events if e["step"] == step],
                )
            for row in store.step_runs(run_id) + store.attempts(run_id):
                if row["started_at"] is not None and row["ended_at"] is not None:
                    assert row["started_at"] <= row["ended_at"], row
        daemon_logs = "\n".join(d.log() for d in cluster.daemons)
        assert "40P01" not in daemon_logs and "deadlock" not in daemon_logs


def test_a_cancel_takes_its_locks_in_the_order_of_a_finish(pg_url, open_store, caplog):
    # Given a fan-out whose members are queued, the last of them running, and a transaction
    # that holds that member's attempt and will then write the join's row, as a worker's
    # finish does (its attempt first, then the downstream counters)
    import threading

    from flowkit.execution.attempt import run_attempt

    store = open_store(pg_url)
    store.upgrade()
    h = InlineHarness(store, RACE_DAGS)
    run_id = h.trigger("fanout", {"seconds": 0.0})
    root = h.dispatcher.sent.pop(0)
    assert run_attempt(h.runtime, run_id, root.step.name, root.attempt) == "success"
    assert store.claim_attempt(run_id, "m59", 1, worker="w@test", lost_after=30, max_deliveries=3).outcome == "run"
    done: list[Any] = []
    key = {"run": run_id}
    with store.engine.connect() as finish:
        finish.execute(text("UPDATE attempts SET heartbeat_at = now() WHERE run_id = :run AND step = 'm59'"), key)
        # When an operator cancels the run meanwhile
        cancel = threading.Thread(target=lambda: done.append(store.cancel_run(run_id, by="ann")))
        cancel.start()
        cancel.join(0.5)
        assert cancel.is_alive()  # it waits for the attempt that the finish holds
        finish.execute(text("UPDATE step_runs SET ok_up = ok_up + 1 WHERE run_id = :run AND step = 'join'"), key)
        finish.commit()
    cancel.join(10)
    # Then neither waits for the other (no deadlock for PostgreSQL to break): the finish
    # commits and the cancel goes on after it, at the first try
    assert done and "cancelled (61 step(s) cancelled, 60 attempt(s) stopped" in done[0].summary
    assert "conflict with a concurrent transaction" not in caplog.text


def test_a_cancel_ends_a_running_map_step_that_has_no_attempt_of_its_own(pg_url, open_store):
    # Given a map step running while its instances are queued (it has no attempt itself)
    from flowkit.execution.attempt import run_attempt

    store = open_store(pg_url)
    store.upgrade()
    h = InlineHarness(store, str(ROOT / "tests" / "dags" / "maps"))
    run_id = h.trigger("squares", {"n": 4})
    first = h.dispatcher.sent.pop(0)
    assert run_attempt(h.runtime, run_id, first.step.name, first.attempt) == "success"
    one = h.dispatcher.sent.pop(0)
    assert run_attempt(h.runtime, run_id, one.step.name, one.attempt) == "success"
    # When an operator cancels the run
    result = h.act(store.cancel_run(run_id, by="ann"))
    # Then every step not ended is cancelled, the map step too, and every live attempt ends
    assert "attempt(s) stopped" in result.summary
    assert store.get_run(run_id)["state"] == "cancelled"
    left = {s["step"]: s["state"] for s in store.step_runs(run_id) if s["state"] not in ("success", "cancelled")}
    assert left == {}
    assert all(a["state"] in ("success", "cancelled") for a in store.attempts(run_id))


def test_a_claim_that_waited_for_a_cancel_never_starts_its_body(pg_url, open_store, tmp_path):
    # Given a cancel that has ended the run's attempts and waits (here, for the run's row)
    import threading

    from flowkit.execution.attempt import run_attempt

    store = open_store(pg_url)
    store.upgrade()
    log = tmp_path / "bodies.log"
    h = InlineHarness(store, RACE_DAGS)
    run_id = h.trigger("fanout", {"log": str(log), "seconds": 0.0})
    root = h.dispatcher.sent.pop(0)
    assert run_attempt(h.runtime, run_id, root.step.name, root.attempt) == "success"
    member = h.dispatcher.sent.pop(0)
    cancelled: list[Any] = []
    claimed: list[str] = []
    with store.engine.connect() as holder:
        holder.execute(text("SELECT 1 FROM runs WHERE id = :run FOR UPDATE"), {"run": run_id})
        cancel = threading.Thread(target=lambda: cancelled.append(store.cancel_run(run_id, by="ann")))
        cancel.start()
        cancel.join(0.5)
        assert cancel.is_alive()
        # When a worker claims a member meanwhile (it waits for the cancel's lock on the attempt)
        worker = threading.Thread(
            target=lambda: claimed.append(run_attempt(h.runtime, run_id, member.step.name, member.attempt))
        )
        worker.start()
        worker.join(0.5)
        assert worker.is_alive()
        holder.commit()
    cancel.join(10)
    worker.join(10)
    # Then the claim sees the cancel: the body never starts
    assert cancelled and claimed == ["done"]
    assert [s for s in body_starts(log) if s[1] == member.step.name] == []
