"""The Flow builder: its validation errors (message, flow, step, file:line) and what it builds."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from flowkit import CycleError, DefinitionError, DuplicateStepError, Flow, Param, UnknownStepError
from flowkit.dsl import parse_duration
from flowkit.spec import FlowSpec, RetryPolicy

from .where import assert_where, line_of

HERE = Path(__file__)


def _line(tag: str) -> int:
    return line_of(tag, HERE)


def _assert_where(err: BaseException, tag: str, *, flow: str | None, step: str | None) -> None:
    assert_where(err, HERE, tag, flow=flow, step=step)


def noop(ctx):
    return None


def other(ctx):
    return None


def no_args():
    return None


def two_args(ctx, extra):
    return None


def one_required(ctx, extra=1, *rest, **kw):
    return None


# -- validation errors -----------------------------------------------------------------------


def test_cycle_error_shows_the_path_and_points_at_its_first_step():
    flow = (
        Flow("loop")
        .step("a", noop, after="c")  # L:cycle-a
        .step("b", noop, after="a")
        .step("c", noop, after="b")
    )
    with pytest.raises(CycleError, match=r'flow "loop" has a cycle: a -> b -> c -> a; remove') as ei:
        flow.validate()
    assert ei.value.cycle == ["a", "b", "c", "a"]
    _assert_where(ei.value, "cycle-a", flow="loop", step="a")


def test_cycle_is_reported_by_spec_too_even_behind_a_valid_prefix():
    flow = Flow("loop2").step("start", noop).step("x", noop, after=["start", "y"]).step("y", noop, after="x")
    with pytest.raises(CycleError, match=r"x -> y -> x|y -> x -> y") as ei:
        flow.spec()
    assert ei.value.cycle[0] == ei.value.cycle[-1]
    assert set(ei.value.cycle) == {"x", "y"}


def test_self_dependency():
    flow = Flow("selfish").step("a", noop).step("b", noop, after=["a", "b"])  # L:self
    with pytest.raises(CycleError, match=r'flow "selfish" step "b" depends on itself; remove it from after=') as ei:
        flow.validate()
    assert ei.value.cycle == ["b", "b"]
    _assert_where(ei.value, "self", flow="selfish", step="b")


def test_unknown_upstream_suggests_the_close_name():
    flow = Flow("etl").step("extract", noop)
    flow.step("load", noop, after="extrakt")  # L:unknown
    with pytest.raises(
        UnknownStepError,
        match=r'step "load" depends on "extrakt", which flow "etl" does not define\. '
        r'Did you mean "extract"\?',
    ) as ei:
        flow.spec()
    _assert_where(ei.value, "unknown", flow="etl", step="load")


def test_unknown_upstream_without_a_close_name_says_how_to_fix():
    flow = Flow("etl").step("extract", noop).step("load", noop, after="zzz")
    with pytest.raises(UnknownStepError, match=r"does not define\. Define it or fix the name in after=") as ei:
        flow.validate()
    assert "Did you mean" not in str(ei.value)


def test_duplicate_step_names_where_the_first_was_defined():
    flow = Flow("dup").step("a", noop)  # L:dup-first
    with pytest.raises(DuplicateStepError, match=r'flow "dup" defines step "a" twice \(first at ') as ei:
        flow.step("a", other)  # L:dup-second
    assert f"(first at {__file__}:{_line('dup-first')})" in str(ei.value)
    assert "give one of them another name" in str(ei.value)
    _assert_where(ei.value, "dup-second", flow="dup", step="a")


def test_non_callable_step():
    flow = Flow("f")
    with pytest.raises(DefinitionError, match=r'flow "f" step "a": None is not callable; pass the function') as ei:
        flow.step("a", noop(None))  # L:noncallable
    _assert_where(ei.value, "noncallable", flow="f", step="a")


def test_step_function_with_two_required_args():
    flow = Flow("f")
    with pytest.raises(
        DefinitionError,
        match=r'flow "f" step "a": two_args\(\) takes 2 required arguments; a step function takes one',
    ) as ei:
        flow.step("a", two_args)  # L:twoargs
    _assert_where(ei.value, "twoargs", flow="f", step="a")


def test_step_functions_with_zero_or_one_required_arg_are_fine():
    spec = Flow("f").step("a", no_args).then("b", noop).then("c", one_required).then("d", print).spec()
    assert spec.step_names == ["a", "b", "c", "d"]


def test_bad_timeout_string():
    flow = Flow("f")
    with pytest.raises(
        DefinitionError,
        match=r"""flow "f" step "a": timeout='30 sec' is not a duration; use .*"30s", "5m", "1h30m\"""",
    ) as ei:
        flow.step("a", noop, timeout="30 sec")  # L:timeout
    _assert_where(ei.value, "timeout", flow="f", step="a")


def test_bad_flow_level_timeout_names_the_flow_line():
    with pytest.raises(DefinitionError, match=r"""flow "f": retry_backoff='soon' is not a duration""") as ei:
        Flow("f", retry_backoff="soon")  # L:flowtimeout
    _assert_where(ei.value, "flowtimeout", flow="f", step=None)


def test_negative_retries():
    flow = Flow("f")
    with pytest.raises(DefinitionError, match=r'flow "f" step "a": retries=-1 must be a whole number >= 0') as ei:
        flow.step("a", noop, retries=-1)  # L:retries
    _assert_where(ei.value, "retries", flow="f", step="a")


@pytest.mark.parametrize("retries", [-1, 1.5, "3", True])
def test_flow_level_retries_must_be_a_whole_number(retries):
    with pytest.raises(DefinitionError, match=r'flow "f": retries=.* must be a whole number >= 0'):
        Flow("f", retries=retries)


@pytest.mark.parametrize("priority", [10, -1, "high", 2.5])
def test_bad_priority(priority):
    flow = Flow("f")
    with pytest.raises(
        DefinitionError, match=r'flow "f" step "a": priority=.* must be a whole number from 0 to 9'
    ) as ei:
        flow.step("a", noop, priority=priority)  # L:priority
    _assert_where(ei.value, "priority", flow="f", step="a")


def test_boolean_priority_is_refused_like_boolean_retries():
    with pytest.raises(DefinitionError, match=r"priority=True must be a whole number from 0 to 9"):
        Flow("f").step("a", noop, priority=True)


def test_bad_trigger_rule_suggests_the_close_one():
    flow = Flow("f").step("a", noop)
    with pytest.raises(
        DefinitionError,
        match=r"""flow "f" step "b": trigger 'all_sucess' is not a trigger rule\. """
        r'Did you mean "all_success"\? Use one of all_success, none_failed, all_done',
    ) as ei:
        flow.step("b", noop, after="a", trigger="all_sucess")  # L:trigger
    _assert_where(ei.value, "trigger", flow="f", step="b")


def test_bad_cron_schedule():
    with pytest.raises(
        DefinitionError,
        match=r"""flow "nightly": schedule 'every night' is not a cron expression; use five fields""",
    ) as ei:
        Flow("nightly", schedule="every night")  # L:cron
    _assert_where(ei.value, "cron", flow="nightly", step=None)


def test_valid_cron_schedule_is_kept():
    assert Flow("nightly", schedule="0 3 * * *").step("a", noop).spec().schedule == "0 3 * * *"


@pytest.mark.parametrize("name", ["my flow", "1st", "", "a" * 101, "x/y"])
def test_invalid_flow_name(name):
    with pytest.raises(DefinitionError, match=r"flow name .* is not valid; use letters, digits, '_' and '-'") as ei:
        Flow(name)  # L:flowname
    assert ei.value.lineno == _line("flowname")
    assert Path(ei.value.path) == HERE


def test_invalid_step_name():
    flow = Flow("f")
    with pytest.raises(DefinitionError, match=r"""flow "f": step name 'load data' is not valid""") as ei:
        flow.step("load data", noop)  # L:stepname
    _assert_where(ei.value, "stepname", flow="f", step="load data")


def test_empty_flow():
    flow = Flow("empty")  # L:empty
    with pytest.raises(DefinitionError, match=r'flow "empty" has no steps; add one with \.step\(name, fn\)') as ei:
        flow.spec()
    _assert_where(ei.value, "empty", flow="empty", step=None)


def test_unknown_option_to_then_suggests_the_close_one():
    flow = Flow("f").step("a", noop)
    with pytest.raises(
        DefinitionError,
        match=r"""flow "f" step "b": unknown option 'retrys'\. Did you mean "retries"\? """
        r"Options are: compensate, deadline, lock, on_failure, on_retry, on_success, pool, priority, queue, reads, "
        r"retries, retry_backoff, retry_max_delay, slots, success_when, timeout, trigger, writes$",
    ) as ei:
        flow.then("b", noop, retrys=2)  # L:then-unknown
    _assert_where(ei.value, "then-unknown", flow="f", step="b")


def test_then_refuses_after():
    flow = Flow("f").step("a", noop)
    with pytest.raises(DefinitionError, match=r'step "b": then\(\) chains after the previous step; use step') as ei:
        flow.then("b", noop, after="a")  # L:then-after
    _assert_where(ei.value, "then-after", flow="f", step="b")


def test_unknown_option_to_branch():
    flow = Flow("f").step("a", noop)
    with pytest.raises(
        DefinitionError, match=r"""flow "f" step "pick": unknown option 'timout'\. Did you mean "timeout"\?"""
    ) as ei:
        flow.branch("pick", noop, after="a", timout="5s")  # L:branch-unknown
    _assert_where(ei.value, "branch-unknown", flow="f", step="pick")


def test_unknown_option_without_a_close_one_lists_the_options():
    with pytest.raises(
        DefinitionError,
        match=r"unknown option 'colour'\. Options are: after, compensate, deadline, lock, "
        r"on_failure, on_retry, on_success, pool",
    ) as ei:
        Flow("f").branch("pick", noop, colour="red")
    assert "Did you mean" not in str(ei.value)


# -- what the builder builds ------------------------------------------------------------------


def test_then_chains_after_the_previous_step():
    spec = (
        Flow("chain")
        .then("a", noop)
        .then("b", noop)
        .step("side", noop)
        .then("c", noop)
        .step("join", noop, after=["b", "c"])
        .spec()
    )
    assert {s.name: s.upstream for s in spec.steps} == {
        "a": (),
        "b": ("a",),
        "side": (),
        "c": ("side",),
        "join": ("b", "c"),
    }
    assert spec.downstream() == {"a": ["b"], "b": ["join"], "side": ["c"], "c": ["join"], "join": []}


def test_branch_builds_a_branch_step_and_keeps_triggers():
    spec = (
        Flow("br")
        .step("start", noop)
        .branch("pick", noop, after="start")
        .step("left", noop, after="pick")
        .step("right", noop, after="pick")
        .step("join", noop, after=["left", "right"], trigger="none_failed")
        .spec()
    )
    assert spec.step("pick").kind == "branch"
    assert spec.step("left").kind == "task"
    assert spec.step("join").trigger == "none_failed"
    assert spec.step("left").trigger == "all_success"


def test_flow_defaults_are_inherited_and_overridden_per_step():
    spec = (
        Flow("d", retries=3, retry_backoff="2s", retry_max_delay="1m", timeout="30s", queue="etl")
        .step("inherits", noop)
        .step("overrides", noop, retries=0, retry_backoff=5, timeout="1h30m", queue="fast", priority=9)
        .then("no_timeout", noop, timeout=None, retries=1)
        .spec()
    )
    inherits = spec.step("inherits")
    assert inherits.retry == RetryPolicy(retries=3, backoff_seconds=2.0, max_delay_seconds=60.0)
    assert inherits.timeout_seconds == 30.0
    assert inherits.queue == "etl"
    assert inherits.priority is None

    overrides = spec.step("overrides")
    assert overrides.retry.retries == 0
    assert overrides.retry.max_attempts == 1
    assert overrides.retry.backoff_seconds == 5.0
    assert overrides.retry.max_delay_seconds == 60.0  # still the flow's
    assert overrides.timeout_seconds == 5400.0
    assert overrides.queue == "fast"
    assert overrides.priority == 9

    no_timeout = spec.step("no_timeout")
    assert no_timeout.timeout_seconds is None
    assert no_timeout.retry.retries == 1
    assert no_timeout.queue == "etl"
    assert spec.max_timeout_seconds() == 5400.0


def test_spec_records_where_and_what():
    flow = Flow("w", owner="ana", tags=["a", "b"], description="desc")  # L:spec-flow
    flow.step("s", noop)  # L:spec-step
    spec = flow.spec(version="abc123")
    assert (spec.path, spec.lineno) == (__file__, _line("spec-flow"))
    assert spec.step("s").lineno == _line("spec-step")
    assert spec.step("s").fn == f"{__name__}:noop"
    assert (spec.owner, spec.tags, spec.description, spec.version) == ("ana", ("a", "b"), "desc", "abc123")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("250ms", 0.25),
        ("30s", 30.0),
        ("5m", 300.0),
        ("1h30m", 5400.0),
        ("1d", 86400.0),
        ("1.5h", 5400.0),
        (" 2m 30s ", 150.0),
        ("1m30s500ms", 90.5),
        (45, 45.0),
        (2.5, 2.5),
        (None, None),
    ],
)
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["30 sec", "abc", "", "0s", "-5s", "1h30", "ms", "5mm", "s5", "1h,30m"])
def test_parse_duration_rejects_bad_strings(text):
    with pytest.raises(ValueError, match=r"is not a duration"):
        parse_duration(text)


@pytest.mark.parametrize(("value", "why"), [(0, "must be positive"), (-1.5, "must be positive"), (True, "boolean")])
def test_parse_duration_rejects_bad_numbers(value, why):
    with pytest.raises(ValueError, match=why):
        parse_duration(value)


def test_parse_duration_rejects_nan():
    with pytest.raises(ValueError):
        parse_duration(float("nan"))


def test_spec_json_round_trip():
    spec = (
        Flow(
            "roundtrip",
            schedule="*/5 * * * *",
            owner="data",
            tags=["x", "y"],
            description="all the features",
            params={
                "day": Param(str, help="YYYY-MM-DD"),
                "limit": Param(int, default=10),
                "ratio": 0.5,
                "dry_run": False,
                "ids": Param(list, default=[1, 2]),
                "opts": Param(dict, default={"k": {"n": 1}}),
            },
            retries=2,
            timeout="10m",
        )
        .step("extract", noop, queue="io", priority=7)
        .branch("pick", noop, after="extract", retry_backoff="250ms")
        .step("left", noop, after="pick")
        .step("right", noop, after="pick", timeout=None)
        .step("join", noop, after=["left", "right"], trigger="none_failed")
        .then("notify", no_args, trigger="all_done")
        .spec(version="0123456789abcdef")
    )
    text = spec.to_json()
    again = FlowSpec.from_json(text)
    assert again == spec
    assert again.to_json() == text
    assert isinstance(again.steps, tuple) and isinstance(again.step("join").upstream, tuple)
    assert isinstance(again.tags, tuple)
    assert again.params[0].required is True and again.params[1].default == 10


def test_retry_delay_grows_exponentially_and_is_capped():
    policy = RetryPolicy(retries=6, backoff_seconds=2.0, max_delay_seconds=20.0, jitter=0.0)
    assert [policy.delay_after(n) for n in range(1, 7)] == [2.0, 4.0, 8.0, 16.0, 20.0, 20.0]
    assert policy.max_attempts == 7


def test_retry_delay_jitter_stays_within_bounds_and_is_seeded():
    policy = RetryPolicy(retries=10, backoff_seconds=1.0, max_delay_seconds=50.0, jitter=0.25)
    rng = random.Random(1234)
    delays = [policy.delay_after(n, rng) for n in range(1, 11)]
    bases = [min(2.0 ** (n - 1), 50.0) for n in range(1, 11)]
    for delay, base in zip(delays, bases, strict=True):
        assert 0.75 * base <= delay <= base
    assert any(delay < base for delay, base in zip(delays, bases, strict=True))  # jitter is applied
    assert max(delays) <= 50.0
    rng2 = random.Random(1234)
    assert [policy.delay_after(n, rng2) for n in range(1, 11)] == delays


def test_param_rejects_unsupported_types():
    with pytest.raises(DefinitionError, match=r"param type .* is not supported; use one of str, int, float"):
        Param(set)
    with pytest.raises(DefinitionError, match=r'flow "f" param "when": default .* is not JSON-like; wrap it as Param'):
        Flow("f", params={"when": object()})
