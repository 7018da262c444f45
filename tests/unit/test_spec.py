"""FlowSpec: JSON in and out (including specs stored by older versions) and its cached lookups."""

from __future__ import annotations

import json
import time

from flowkit.spec import FlowSpec, RetryPolicy, StepSpec

#: A spec as the store kept it before pools, locks and the max_active_* limits existed.
OLD_SPEC_JSON = """
{
  "name": "legacy", "schedule": null, "owner": "ops", "tags": ["old"], "description": "",
  "path": "/dags/legacy.py", "lineno": 3, "version": "abc", "params": [
    {"name": "day", "type": "str", "default": null, "required": true, "help": ""}
  ],
  "steps": [
    {"name": "a", "fn": "legacy:a", "upstream": [], "kind": "task",
     "retry": {"retries": 1, "backoff_seconds": 1.0, "max_delay_seconds": 300.0, "jitter": 0.25},
     "timeout_seconds": null, "queue": null, "priority": null, "trigger": "all_success",
     "lineno": 5, "doc": "", "reads": [], "writes": []},
    {"name": "b", "fn": "legacy:b", "upstream": ["a"], "kind": "task",
     "retry": {"retries": 0, "backoff_seconds": 1.0, "max_delay_seconds": 300.0, "jitter": 0.25},
     "timeout_seconds": 30.0, "queue": "io", "priority": 5, "trigger": "none_failed",
     "lineno": 6, "doc": "B.", "reads": [], "writes": ["file:///x"]}
  ]
}
"""


def test_a_spec_stored_before_the_new_fields_loads_with_their_defaults():
    spec = FlowSpec.from_json(OLD_SPEC_JSON)
    assert (spec.max_active_runs, spec.max_active_steps) == (None, None)
    for step in spec.steps:
        assert (step.pool, step.slots, step.lock, step.lock_mode) == (None, 1, None, "exclusive")
    assert spec.step("b").upstream == ("a",)
    assert spec.step("b").writes == ("file:///x",)
    assert spec.step("a").retry == RetryPolicy(retries=1)
    # written back, it carries the new fields and reads back equal
    again = FlowSpec.from_json(spec.to_json())
    assert again == spec
    assert json.loads(spec.to_json())["steps"][0]["lock_mode"] == "exclusive"


def test_round_trip_keeps_the_engine_options():
    spec = FlowSpec(
        name="f",
        steps=(
            StepSpec("a", "m:a", pool="db", slots=3),
            StepSpec("b", "m:b", upstream=("a",), lock="ledger", lock_mode="shared"),
        ),
        max_active_runs=2,
        max_active_steps=8,
    )
    again = FlowSpec.from_json(spec.to_json())
    assert again == spec
    assert (again.max_active_runs, again.max_active_steps) == (2, 8)
    assert (again.step("a").pool, again.step("a").slots) == ("db", 3)
    assert (again.step("b").lock, again.step("b").lock_mode) == ("ledger", "shared")


def _chain_with_fan_out(n: int) -> FlowSpec:
    steps = [StepSpec("root", "m:root")]
    steps += [StepSpec(f"s{i}", "m:s", upstream=("root",) if i % 2 else (f"s{i - 1}",)) for i in range(1, n)]
    return FlowSpec(name="big", steps=tuple(steps))


def test_downstream_of_matches_downstream():
    spec = _chain_with_fan_out(50)
    full = spec.downstream()
    for name in spec.step_names:
        assert spec.downstream_of(name) == tuple(full[name])
    assert spec.downstream_of("s1") == ("s2",)
    assert spec.downstream_of("s49") == ()


def test_downstream_of_is_built_once():
    spec = _chain_with_fan_out(10_000)
    assert spec.downstream_of("root") is spec.downstream_of("root")
    started = time.perf_counter()
    for name in spec.step_names:
        spec.downstream_of(name)
    # 10,000 lookups; rebuilding the map per call would take tens of seconds
    assert time.perf_counter() - started < 0.5


def test_downstream_returns_a_copy_callers_may_change():
    spec = _chain_with_fan_out(4)
    spec.downstream()["root"].append("intruder")
    assert "intruder" not in spec.downstream()["root"]
    assert "intruder" not in spec.downstream_of("root")


def test_cached_lookups_do_not_change_equality_or_json():
    a, b = _chain_with_fan_out(5), _chain_with_fan_out(5)
    a.downstream_of("root")
    _ = a.order
    assert a == b
    assert a.to_json() == b.to_json()
