"""Every state move PostgreSQL's one-statement claim and finish write in SQL (each ``state =
'x'`` guard with its ``SET state = 'y'``, the ``CASE`` forms included) and every move their
audit events record is one flowkit.states allows: the fast path cannot drift from the machine's
tables unseen. pg_fast runs the same check when it is imported."""

from __future__ import annotations

import re

import pytest

from flowkit.states import StepState, can_transition
from flowkit.store import pg_fast

#: Every ``state = 'x'`` in a statement, read or written (``dn.state`` is a read of the rows
#: the statement bumped, ``x.state`` any alias's).
_ANY_STATE_LITERAL = re.compile(r"(?<![\w])(\w+\.)?state = '(\w+)'")


@pytest.mark.parametrize("name", sorted(pg_fast.statements()))
def test_every_move_in_the_fast_path_sql_is_allowed_by_flowkit_states(name):
    sql = pg_fast.statements()[name]
    moves = pg_fast.transition_literals(sql)
    assert pg_fast.move_problems(moves) == []
    for table, old, new in moves:
        if table in ("step_runs", "events:step_state"):
            assert can_transition(StepState(old), StepState(new)), (table, old, new)
    # every step move written is audited with the same old and new states
    written = {(o, n) for table, o, n in moves if table == "step_runs"}
    audited = {(o, n) for table, o, n in moves if table == "events:step_state"}
    assert written <= audited
    # and no state literal of the text escaped the extraction: each unaliased one is the old
    # or new side of a move (aliased ones read rows, as dn.state = 'queued' does)
    in_moves = {s for _, o, n in moves for s in (o, n)}
    unaliased = {lit for alias, lit in _ANY_STATE_LITERAL.findall(sql) if not alias}
    assert unaliased <= in_moves, unaliased - in_moves


def test_the_extraction_finds_each_form_of_move():
    moves = set()
    for sql in pg_fast.statements().values():
        moves |= set(pg_fast.transition_literals(sql))
    assert {
        ("step_runs", "queued", "running"),
        ("step_runs", "running", "success"),
        ("step_runs", "pending", "queued"),  # the CASE form of the downstream bump
        ("attempts", "queued", "running"),
        ("attempts", "running", "success"),
        ("events:step_state", "pending", "queued"),
    } <= moves


@pytest.mark.parametrize(
    "sql, problem",
    [
        (
            "WITH s AS (UPDATE step_runs SET state = 'success', updated_at = :now\n"
            "  WHERE run_id = :run AND (state = 'pending') IS TRUE\n  RETURNING step)",
            "step_runs: pending -> success",
        ),
        (
            "WITH s AS (UPDATE step_runs SET state = 'success'\n  WHERE run_id = :run\n  RETURNING step)",
            "step_runs: * -> success",
        ),
        (
            "WITH s AS (UPDATE step_runs SET ok_up = ok_up + 1,\n"
            "  state = CASE WHEN state = 'scheduled' AND ok_up + 1 = n_up THEN 'running' ELSE state END\n"
            "  WHERE run_id = :run\n  RETURNING step)",
            "step_runs: scheduled -> running",
        ),
        (
            "INSERT INTO events (run_id, action, old_state, new_state) SELECT :run, 'step_state', 'success', 'queued'",
            "events:step_state: success -> queued",
        ),
        (
            "WITH a AS (UPDATE attempts SET state = 'queued'\n  WHERE (state = 'success') IS TRUE\n  RETURNING 1)",
            "attempts: success -> queued",
        ),
    ],
)
def test_a_move_the_state_machine_forbids_is_caught(sql, problem):
    assert problem in pg_fast.move_problems(pg_fast.transition_literals(sql))


def test_the_import_time_check_refuses_a_forbidden_move(monkeypatch):
    monkeypatch.setattr(
        pg_fast,
        "statements",
        lambda: {
            "bad": "WITH s AS (UPDATE step_runs SET state = 'queued'\n  WHERE (state = 'success') IS TRUE\n"
            "  RETURNING step)"
        },
    )
    with pytest.raises(RuntimeError, match="success -> queued"):
        pg_fast._check_moves()
