"""Engine options in the builder: per-flow caps, pools and slots, locks, param defaults, tags."""

from __future__ import annotations

from pathlib import Path

import pytest

from flowkit import DefinitionError, Flow, Param
from flowkit.spec import FlowSpec, resolve_params

from .where import assert_where

HERE = Path(__file__)


def noop(ctx):
    return None


# -- max_active_runs / max_active_steps ------------------------------------------------------------


def test_flow_caps_reach_the_spec():
    spec = Flow("f", max_active_runs=1, max_active_steps=16).step("a", noop).spec()
    assert (spec.max_active_runs, spec.max_active_steps) == (1, 16)


def test_flow_caps_default_to_none():
    spec = Flow("f").step("a", noop).spec()
    assert (spec.max_active_runs, spec.max_active_steps) == (None, None)


@pytest.mark.parametrize("option", ["max_active_runs", "max_active_steps"])
@pytest.mark.parametrize("value", [0, -3, 1.5, "2", True])
def test_flow_caps_must_be_positive_whole_numbers(option, value):
    with pytest.raises(DefinitionError) as ei:
        Flow("f", **{option: value})  # L:caps
    assert str(ei.value).endswith(f'flow "f": {option}={value!r} must be a whole number >= 1, or None for no limit')
    assert_where(ei.value, HERE, "caps", flow="f", step=None)


# -- pools and slots -------------------------------------------------------------------------------


def test_pool_is_a_flow_default_that_steps_override_or_drop():
    spec = (
        Flow("f", pool="warehouse")
        .step("inherits", noop)
        .step("heavy", noop, slots=4)  # four slots of the flow's pool
        .step("elsewhere", noop, pool="api")
        .step("outside", noop, pool=None)
        .spec()
    )
    got = {s.name: (s.pool, s.slots) for s in spec.steps}
    assert got == {
        "inherits": ("warehouse", 1),
        "heavy": ("warehouse", 4),
        "elsewhere": ("api", 1),
        "outside": (None, 1),
    }


def test_no_pool_by_default():
    step = Flow("f").step("a", noop).spec().step("a")
    assert (step.pool, step.slots) == (None, 1)


@pytest.mark.parametrize("method", ["step", "then", "branch"])
def test_every_step_method_takes_pool_slots_and_lock(method):
    flow = Flow("f").step("a", noop)
    getattr(flow, method)("b", noop, pool="db", slots=3, lock=("ledger", "shared"))
    step = flow.spec().step("b")
    assert (step.pool, step.slots, step.lock, step.lock_mode) == ("db", 3, "ledger", "shared")


def test_slots_without_a_pool():
    flow = Flow("f")
    with pytest.raises(DefinitionError) as ei:
        flow.step("a", noop, slots=2)  # L:slots-no-pool
    assert str(ei.value).endswith(
        'flow "f" step "a": slots=2 needs a pool to count them in; add pool="name" to the step or the '
        "flow, or drop slots="
    )
    assert_where(ei.value, HERE, "slots-no-pool", flow="f", step="a")


def test_slots_on_a_step_that_drops_the_flows_pool():
    with pytest.raises(DefinitionError, match=r"slots=2 needs a pool"):
        Flow("f", pool="db").step("a", noop, pool=None, slots=2)


@pytest.mark.parametrize("slots", [0, -1, 1001, 2.0, "2", True, None])
def test_slots_range(slots):
    flow = Flow("f", pool="db")
    with pytest.raises(DefinitionError) as ei:
        flow.step("a", noop, slots=slots)  # L:slots-range
    assert str(ei.value).endswith(f'flow "f" step "a": slots={slots!r} must be a whole number from 1 to 1000')
    assert_where(ei.value, HERE, "slots-range", flow="f", step="a")


@pytest.mark.parametrize("slots", [1, 1000])
def test_slots_bounds_are_allowed(slots):
    assert Flow("f", pool="db").step("a", noop, slots=slots).spec().step("a").slots == slots


@pytest.mark.parametrize("pool", ["my pool", "", "x" * 101, 5, ("db",)])
def test_bad_pool_names(pool):
    with pytest.raises(DefinitionError, match=r"pool=.* is not a valid pool name; use letters, digits"):
        Flow("f").step("a", noop, pool=pool)
    with pytest.raises(DefinitionError, match=r'flow "g": pool=.* is not a valid pool name'):
        Flow("g", pool=pool)


# -- locks -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lock", "expected"),
    [
        (None, (None, "exclusive")),
        ("ledger", ("ledger", "exclusive")),
        (("ledger", "exclusive"), ("ledger", "exclusive")),
        (("ledger", "shared"), ("ledger", "shared")),
    ],
)
def test_lock_forms(lock, expected):
    step = Flow("f").step("a", noop, lock=lock).spec().step("a")
    assert (step.lock, step.lock_mode) == expected


def test_lock_mode_typo_suggests_the_mode():
    flow = Flow("f")
    with pytest.raises(DefinitionError) as ei:
        flow.step("a", noop, lock=("ledger", "shard"))  # L:lock-mode
    assert str(ei.value).endswith(
        """flow "f" step "a": lock mode 'shard' is not a lock mode. Did you mean "shared"? """
        'Use "exclusive" (alone) or "shared" (beside other shared holders)'
    )
    assert_where(ei.value, HERE, "lock-mode", flow="f", step="a")


@pytest.mark.parametrize("lock", [["ledger", "shared"], ("ledger",), ("a", "shared", "x"), 3, {"ledger": "shared"}])
def test_lock_must_be_a_name_or_a_pair(lock):
    with pytest.raises(DefinitionError, match=r'lock=.* is not a lock; pass a lock name \("ledger"\) or a'):
        Flow("f").step("a", noop, lock=lock)


@pytest.mark.parametrize("lock", ["my lock", ("my lock", "shared"), (3, "shared"), ""])
def test_bad_lock_names(lock):
    with pytest.raises(DefinitionError, match=r"lock name .* is not valid; use letters, digits"):
        Flow("f").step("a", noop, lock=lock)


def test_lock_is_not_a_flow_option():
    with pytest.raises(DefinitionError, match=r"lock= is a step option, not a flow default"):
        Flow("f", lock="ledger")


# -- the new options survive JSON ------------------------------------------------------------------


def test_round_trip_with_engine_options():
    spec = (
        Flow("rt", max_active_runs=2, max_active_steps=4, pool="db", params={"ratio": Param(float, default=1)})
        .step("a", noop, slots=2, lock="ledger")
        .then("b", noop, pool=None, lock=("ledger", "shared"), trigger="one_failed")
        .branch("c", noop, after="a", pool="api", trigger="none_failed_min_one_success")
        .spec(version="v1")
    )
    text = spec.to_json()
    again = FlowSpec.from_json(text)
    assert again == spec
    assert again.to_json() == text
    assert again.step("a").slots == 2
    assert again.step("b").trigger == "one_failed"


# -- param defaults and tags -----------------------------------------------------------------------


def test_an_int_default_is_a_fine_float_and_is_stored_as_one():
    spec = Flow("f", params={"ratio": Param(float, default=1)}).step("a", noop).spec()
    assert spec.params[0].default == 1.0
    assert type(spec.params[0].default) is float
    assert type(resolve_params(spec, {})["ratio"]) is float


def test_none_default_makes_a_param_optional_without_a_value():
    spec = Flow("f", params={"limit": Param(int, default=None)}).step("a", noop).spec()
    assert spec.params[0].required is False
    assert resolve_params(spec, {}) == {"limit": None}


@pytest.mark.parametrize(
    ("type_", "default"),
    [(str, "x"), (int, 0), (float, 0.5), (bool, False), (list, [1, "a", None]), (dict, {"k": [1]})],
)
def test_defaults_of_the_declared_type_are_kept(type_, default):
    spec = Flow("f", params={"p": Param(type_, default=default)}).step("a", noop).spec()
    assert spec.params[0].default == default


def test_a_single_string_is_one_tag():
    assert Flow("f", tags="nightly").step("a", noop).spec().tags == ("nightly",)


def test_tags_from_a_set_are_sorted():
    assert Flow("f", tags={"b", "a", "c"}).step("a", noop).spec().tags == ("a", "b", "c")


def test_after_from_a_set_is_sorted():
    spec = Flow("f").step("b", noop).step("a", noop).step("j", noop, after={"b", "a"}).spec()
    assert spec.step("j").upstream == ("a", "b")
