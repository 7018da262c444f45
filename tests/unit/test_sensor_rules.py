"""The sensor rules (flowkit.sensors): options and their checks, the poke schedule with backoff
and its cap, the timeout by wall time from the first poke, what a poke's answer means, and the
file and flow pokes. Pure functions on an injected clock: nothing waits."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from flowkit.errors import DefinitionError
from flowkit.sensors import (
    MAX_POKE_INTERVAL_SECONDS,
    NotYet,
    PokeAgain,
    PokeOutcome,
    SensorPolicy,
    TimedOut,
    file_exists_poke,
    interpret_poke,
    next_poke,
    run_poke,
    sensor_policy,
    upstream_flow_outcome,
)
from flowkit.states import RunState

T0 = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)


def test_defaults_match_the_documented_options() -> None:
    assert sensor_policy() == SensorPolicy(30.0, 3600.0, 2.0, "fail")
    assert sensor_policy(every="1s", timeout="2m", backoff=1, on_timeout="skip") == SensorPolicy(
        1.0, 120.0, 1.0, "skip"
    )


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"every": "soon"}, "every='soon' is not a duration"),
        ({"every": 0}, "every=0 is not a duration"),
        ({"timeout": "-1s"}, "timeout='-1s' is not a duration"),
        ({"backoff": 0.5}, "backoff=0.5 must be a number >= 1"),
        ({"backoff": True}, "backoff=True must be a number >= 1"),
        ({"on_timeout": "retry"}, 'on_timeout=\'retry\' must be "fail" or "skip"'),
        ({"every": "2h", "timeout": "1h"}, "every='2h' is longer than timeout='1h'"),
    ],
)
def test_a_bad_option_is_a_one_line_definition_error(options: dict[str, object], fragment: str) -> None:
    with pytest.raises(DefinitionError) as caught:
        sensor_policy(who='flow "etl" sensor "wait_file"', **options)  # type: ignore[arg-type]
    message = str(caught.value)
    assert fragment in message
    assert message.startswith('flow "etl" sensor "wait_file": ')
    assert "\n" not in message


def test_backoff_multiplies_each_wait_and_is_capped() -> None:
    policy = SensorPolicy(every_seconds=10.0, timeout_seconds=10 * 86400.0, backoff=2.0)
    assert [policy.delay_after_poke(n) for n in range(1, 6)] == [10.0, 20.0, 40.0, 80.0, 160.0]
    assert policy.delay_after_poke(20) == MAX_POKE_INTERVAL_SECONDS
    assert policy.delay_after_poke(10_000) == MAX_POKE_INTERVAL_SECONDS  # no overflow


def test_steady_pace_without_backoff() -> None:
    policy = sensor_policy(every="1s", timeout="1m", backoff=1.0)
    assert {policy.delay_after_poke(n) for n in range(1, 60)} == {1.0}


def test_poke_schedule_follows_the_backoff_on_the_injected_clock() -> None:
    policy = sensor_policy(every="30s", timeout="1h", backoff=2.0)
    now, dues = T0, []
    for pokes_done in range(1, 5):
        decision = next_poke(policy, first_poke_at=T0, pokes_done=pokes_done, now=now)
        assert isinstance(decision, PokeAgain)
        dues.append((decision.due - now).total_seconds())
        now = decision.due
    assert dues == [30.0, 60.0, 120.0, 240.0]


@pytest.mark.parametrize("on_timeout", ["fail", "skip"])
def test_timeout_counts_wall_time_from_the_first_poke(on_timeout: str) -> None:
    policy = sensor_policy(every="10s", timeout="1m", backoff=1.0, on_timeout=on_timeout)
    # few pokes but a long wall time (a worker was busy, the scheduler down): timed out
    late = next_poke(policy, first_poke_at=T0, pokes_done=2, now=T0 + timedelta(minutes=5))
    assert late == TimedOut(on_timeout, 300.0)  # type: ignore[arg-type]
    # many pokes inside the window: not timed out
    early = next_poke(policy, first_poke_at=T0, pokes_done=500, now=T0 + timedelta(seconds=5))
    assert early == PokeAgain(T0 + timedelta(seconds=15))


def test_the_last_poke_lands_on_the_deadline_not_past_it() -> None:
    policy = sensor_policy(every="40s", timeout="1m", backoff=1.0)
    decision = next_poke(policy, first_poke_at=T0, pokes_done=1, now=T0 + timedelta(seconds=40))
    assert decision == PokeAgain(T0 + timedelta(minutes=1))
    at_deadline = next_poke(policy, first_poke_at=T0, pokes_done=2, now=T0 + timedelta(minutes=1))
    assert isinstance(at_deadline, TimedOut) and at_deadline.on_timeout == "fail"


@pytest.mark.parametrize(
    ("answer", "outcome"),
    [
        (True, PokeOutcome(True)),
        ({"rows": 3}, PokeOutcome(True, value={"rows": 3})),
        ("s3://bucket/key", PokeOutcome(True, value="s3://bucket/key")),
        (False, PokeOutcome(False, message="the poke returned a false value")),
        (None, PokeOutcome(False, message="the poke returned a false value")),
        ([], PokeOutcome(False, message="the poke returned a false value")),
        (NotYet("partition 12 missing"), PokeOutcome(False, message="partition 12 missing")),
    ],
)
def test_what_a_poke_answer_means(answer: object, outcome: PokeOutcome) -> None:
    assert interpret_poke(answer) == outcome


def test_a_raised_not_yet_is_an_answer_and_other_exceptions_propagate() -> None:
    def not_yet() -> None:
        raise NotYet("upstream export still writing")

    def broken() -> None:
        raise ConnectionError("metadata service down")

    assert run_poke(not_yet) == PokeOutcome(False, message="upstream export still writing")
    assert run_poke(lambda: 42) == PokeOutcome(True, value=42)
    with pytest.raises(ConnectionError):  # an error: it goes through the step's retries
        run_poke(broken)


def test_file_poke_waits_until_the_path_exists(tmp_path: object) -> None:
    from pathlib import Path

    target = Path(str(tmp_path)) / "x.csv"
    poke = file_exists_poke(target)
    assert poke() == PokeOutcome(False, message=f"{target} does not exist yet")
    target.write_text("a,b\n")
    assert poke() == PokeOutcome(True, value=str(target))


def test_flow_poke_needs_a_successful_run_of_the_same_logical_date() -> None:
    assert upstream_flow_outcome("ingest", "2026-12-05", []) == PokeOutcome(
        False, message='no run of flow "ingest" for 2026-12-05 yet'
    )
    waiting = upstream_flow_outcome("ingest", "2026-12-05", [RunState.FAILED, RunState.RUNNING])
    assert waiting == PokeOutcome(False, message='flow "ingest" for 2026-12-05: no run succeeded yet (failed, running)')
    done = upstream_flow_outcome("ingest", "2026-12-05", [RunState.FAILED, RunState.SUCCESS])
    assert done == PokeOutcome(True, value={"flow": "ingest", "logical_date": "2026-12-05"})
