"""Bounds on the shape of params and results: nesting depth and size, checked where they
come in, so a value nested ~1,000 deep never reaches the store (where every later reader,
the worker's claim included, would crash with RecursionError)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from flowkit import Flow, InvalidParamError, Param, jsonsafe
from flowkit.cli import main
from flowkit.config import Settings
from flowkit.errors import ConfigError, ResultTooLarge
from flowkit.execution.encoding import encode_result
from flowkit.spec import resolve_params
from flowkit.testing import InlineHarness

FLOW_MODULE = """
from flowkit import Flow, Param


def deep(ctx):
    value = []
    for _ in range(950):
        value = [value]
    return value


def after(ctx):
    return "ran"


flow = (
    Flow("etl", params={"lst": Param(list, default=[]), "note": Param(str, default="")})
    .step("deep", deep)
    .step("after", after, after="deep", trigger="all_done")
)
"""


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.fixture
def dags(tmp_path: Path) -> Path:
    folder = tmp_path / "dags"
    folder.mkdir()
    (folder / "etl.py").write_text(FLOW_MODULE)
    return folder


@pytest.fixture
def spec():  # type: ignore[no-untyped-def]
    return (
        Flow(
            "etl",
            params={"lst": Param(list, default=[]), "cfg": Param(dict, default={}), "note": Param(str, default="")},
        )
        .step("a", lambda: None)
        .spec()
    )


# -- the measures --------------------------------------------------------------------------------
def test_depth_of_text_and_of_values_without_recursion():
    assert jsonsafe.text_nesting_depth(nested(5000)) == 5000
    # brackets inside strings (escaped quotes included) do not count
    assert jsonsafe.text_nesting_depth('{"a": "[[[\\"[[", "b": [1, {"c": []}]}') == 4
    value: list = []
    for _ in range(5000):
        value = [value]
    assert jsonsafe.nesting_depth(value) == 5001
    assert jsonsafe.nesting_depth(value, stop_after=64) == 65
    cyclic: list = []
    cyclic.append(cyclic)
    assert jsonsafe.nesting_depth(cyclic, stop_after=10) == 11
    assert jsonsafe.nesting_depth({"a": (1, {2})}) == 3 and jsonsafe.nesting_depth("x") == 0


# -- params ---------------------------------------------------------------------------------------
def test_a_param_nested_too_deep_is_one_line_naming_flow_param_depth_and_fix(spec):
    with pytest.raises(InvalidParamError) as ei:
        resolve_params(spec, {"lst": nested(2000)})
    assert str(ei.value) == (
        'flow "etl" param "lst": nested 2000 levels deep; at most 64 allowed '
        "(FLOWKIT_MAX_JSON_DEPTH): flatten it, or pass the path or URI of the data instead"
    )
    assert ei.value.flow == "etl"
    assert resolve_params(spec, {"lst": nested(64)})["lst"] is not None
    with pytest.raises(InvalidParamError, match='param "lst": nested 65 levels deep'):
        resolve_params(spec, {"lst": nested(65)})
    with pytest.raises(InvalidParamError, match='param "cfg": nested 7 levels deep; at most 6 allowed'):
        resolve_params(spec, {"cfg": '{"a": ' + nested(6) + "}"}, max_depth=6)


def test_a_native_value_nested_too_deep_is_refused_too(spec):
    value: list = []
    for _ in range(950):
        value = [value]
    with pytest.raises(InvalidParamError, match='param "lst": nested 65 levels deep; at most 64'):
        resolve_params(spec, {"lst": value})


def test_params_over_the_byte_cap_are_refused_each_and_together(spec):
    with pytest.raises(InvalidParamError) as ei:
        resolve_params(spec, {"note": "x" * 10_000_000})
    assert str(ei.value) == (
        'flow "etl" param "note": 10,000,000 bytes; at most 262,144 allowed (FLOWKIT_MAX_PARAMS_BYTES): '
        "write the data elsewhere (a file, an object store) and pass its path or URI instead"
    )
    half = "y" * 150_000
    with pytest.raises(InvalidParamError, match=r'flow "etl" params: 300,\d{3} bytes; at most 262,144'):
        resolve_params(spec, {"note": half, "lst": json.dumps([half])})
    assert resolve_params(spec, {"note": half, "lst": json.dumps([half])}, max_bytes=0)["note"] == half
    assert resolve_params(spec, {"note": "x" * 900}, max_bytes=1000)["note"]


def test_settings_bound_the_depth_and_read_both_variables():
    s = Settings.from_env({"FLOWKIT_MAX_PARAMS_BYTES": "1000", "FLOWKIT_MAX_JSON_DEPTH": "10"})
    assert (s.max_params_bytes, s.max_json_depth) == (1000, 10)
    assert (Settings().max_params_bytes, Settings().max_json_depth) == (262144, 64)
    with pytest.raises(ConfigError, match="FLOWKIT_MAX_JSON_DEPTH=900 is outside 1-200"):
        Settings.from_env({"FLOWKIT_MAX_JSON_DEPTH": "900"})


def test_trigger_refuses_a_deep_param_in_one_line_and_creates_no_run(dags, tmp_path):
    runner = CliRunner()
    base = ["--database-url", f"sqlite:///{tmp_path / 'c.db'}", "--broker-url", "memory://", "--dags-folder", str(dags)]
    result = runner.invoke(main, [*base, "trigger", "etl", "-p", f"lst={nested(2000)}"])
    assert result.exit_code == 1
    assert result.output.splitlines() == [
        'error: flow "etl" param "lst": nested 2000 levels deep; at most 64 allowed '
        "(FLOWKIT_MAX_JSON_DEPTH): flatten it, or pass the path or URI of the data instead"
    ]
    small = runner.invoke(
        main, [*base, "trigger", "etl", "-p", f"lst={nested(3)}"], env={"FLOWKIT_MAX_JSON_DEPTH": "2"}
    )
    assert small.exit_code == 1 and "nested 3 levels deep; at most 2 allowed" in small.output
    assert json.loads(runner.invoke(main, [*base, "runs", "list", "--json"]).stdout) == []


# -- results --------------------------------------------------------------------------------------
def test_encode_result_refuses_a_deep_result_before_json_recurses():
    value: list = []
    for _ in range(5000):
        value = [value]
    with pytest.raises(ResultTooLarge) as ei:
        encode_result(value, run_id="r1", step="deep", cap=10_000)
    assert str(ei.value).startswith(
        "run r1 step deep: result nested 5001 levels deep; at most 64 allowed (FLOWKIT_MAX_JSON_DEPTH); flatten it"
    )
    assert encode_result([[1]], run_id="r1", step="s", cap=100, max_depth=2) == "[[1]]"
    with pytest.raises(ResultTooLarge, match="nested 3 levels deep; at most 2 allowed"):
        encode_result([[[1]]], run_id="r1", step="s", cap=100, max_depth=2)


def test_a_step_returning_a_deep_result_fails_and_its_downstream_still_runs(sqlite_store, dags):
    h = InlineHarness(sqlite_store, str(dags))
    run_id = h.trigger("etl")
    assert h.run_until_done(run_id) == "failed"
    steps = {s["step"]: s for s in sqlite_store.step_runs(run_id)}
    assert steps["deep"]["state"] == "failed" and steps["after"]["state"] == "success"
    (attempt,) = sqlite_store.attempts(run_id, "deep")
    assert "result nested 951 levels deep; at most 64 allowed" in attempt["error"]
    assert "deep" not in sqlite_store.results(run_id)
    shown = CliRunner().invoke(
        main,
        [
            "--database-url",
            sqlite_store.url,
            "--broker-url",
            "memory://",
            "--dags-folder",
            str(dags),
            "runs",
            "show",
            run_id,
            "--json",
        ],
    )
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.stdout)["state"] == "failed"
