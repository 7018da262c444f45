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
        conn.execute(text("UPDATE attempts SET state = 'queued', worker = NULL, started_at = NULL, "
                          "deliveries = deliveries - 1 WHERE run_id = :run AND step = :step AND number = :num"),
                     key)
        conn.execute(text("UPDATE step_runs SET state = 'queued', started_at = NULL "
                          "WHERE run_id = :run AND step = :step"), key)
        conn.execute(text("DELETE FROM events WHERE run_id = :run AND step = :step "
                          "AND new_state = 'running'"), key)


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
        moves = [(e["old_state"], e["new_state"]) for e in events
                 if e["step"] == step and e["action"] == "step_state"]
        assert moves[-2:] == [("queued", "running"), ("running", "success")], (step, moves)
        actions = [e["action"] for e in events if e["step"] == step and e["attempt"] == 1
                   and e["action"].startswith("attempt_")]
        assert actions == ["attempt_started", "attempt_finished"], (step, actions)
    recorded = [e for e in events if e["action"] == "attempt_started" and "claim was lost" in e["reason"]]
    assert sorted(e["step"] for e in recorded) == sorted(lost)
    assert "taken over" not in caplog.text
    assert all(used == held == 0 for used, held in store.ledger_balance().values())


def test_a_finish_that_another_worker_took_over_is_discarded_and_says_by_whom(pg_url, open_store, tmp_path,
                                                                             caplog):
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
