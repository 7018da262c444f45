"""The rule of where a finish may find its attempt (flowkit.states.FINISHABLE_ATTEMPT), and the
step moves that PostgreSQL's one-statement claim and finish encode in SQL, checked against
flowkit.states: one rule, whichever path applies it."""

from __future__ import annotations

import re

from flowkit.states import FINISHABLE_ATTEMPT, AttemptState, StepState, can_transition
from flowkit.store import pg_fast

_STEP_CAS = re.compile(r"UPDATE step_runs SET state = '(\w+)'.*?WHERE .*?\(state = '(\w+)'\) IS TRUE", re.S)
_ATTEMPT_CAS = re.compile(r"UPDATE attempts SET state = '(\w+)'.*?WHERE .*?\(state = '(\w+)'\) IS TRUE", re.S)


def test_every_step_move_in_the_one_statement_sql_is_allowed_by_the_state_machine():
    moves = set()
    for sql in (pg_fast.CLAIM, pg_fast.FINISH_SUCCESS, pg_fast.FINISH_INSTANCE_SUCCESS):
        moves |= set(_STEP_CAS.findall(sql))
    assert moves == {("running", "queued"), ("success", "running")}
    for new, old in moves:
        assert can_transition(StepState(old), StepState(new)), (old, new)


def test_the_one_statement_finish_takes_the_claimed_case_of_the_rule_and_leaves_the_rest():
    # running on this worker is the common case, done in one statement; the queued case (a
    # claim lost in a database crash) goes to the generic path, which applies the whole rule
    claimed, unclaimed = FINISHABLE_ATTEMPT
    assert (claimed, unclaimed) == (AttemptState.RUNNING, AttemptState.QUEUED)
    for sql in (pg_fast.FINISH_SUCCESS, pg_fast.FINISH_INSTANCE_SUCCESS):
        assert _ATTEMPT_CAS.findall(sql) == [("success", claimed.value)]
        assert "AND worker = %(worker)s" in sql
    assert _ATTEMPT_CAS.findall(pg_fast.CLAIM) == [("running", unclaimed.value)]
    # and a recorded lost claim reads queued -> running -> outcome, as any claim and finish
    assert can_transition(StepState.QUEUED, StepState.RUNNING)
    assert can_transition(StepState.RUNNING, StepState.SUCCESS)
