"""Strict JSON: NaN and Infinity refused in params and results, and never printed by --json."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import insert, update

from flowkit import DefinitionError, Flow, InvalidParamError, Param, jsonsafe
from flowkit.cli import main
from flowkit.execution.encoding import encode_result
from flowkit.spec import resolve_params
from flowkit.store import tables as t
from flowkit.testing import InlineHarness

NAN, INF = float("nan"), float("inf")

FLOW_MODULE = """
from flowkit import Flow, Param


def loss(ctx):
    return {"epochs": [{"loss": 0.5}, {"loss": float("nan")}]}


def fine(ctx):
    return {"ok": 1.5}


flow = (
    Flow("metrics", params={"rate": Param(float, default=0.5), "cfg": Param(dict, default={})})
    .step("loss", loss)
    .step("fine", fine)
)
"""


@pytest.fixture
def dags(tmp_path: Path) -> Path:
    folder = tmp_path / "dags"
    folder.mkdir()
    (folder / "metrics.py").write_text(FLOW_MODULE)
    return folder


def strict(text: str) -> object:
    """Parse as a strict JSON parser (jq, a browser, PostgreSQL jsonb) would."""
    return json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} in JSON output"))


# -- the helpers ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "path"),
    [
        (NAN, "$"),
        ([1, 2, -INF], "$[2]"),
        ({"a": {"b": [0.1, NAN]}}, "$.a.b[1]"),
        ({"a b": INF}, '$["a b"]'),
        ({"first": NAN, "second": INF}, "$.first"),
        ((1.0, (2.0, NAN)), "$[1][1]"),
        ({"fine": [1, "nan", None, True]}, None),
    ],
)
def test_find_non_finite_gives_the_path(value, path):
    assert jsonsafe.find_non_finite(value) == path


def test_dumps_refuses_nan_with_its_path():
    with pytest.raises(jsonsafe.NonFiniteNumberError) as info:
        jsonsafe.dumps({"metrics": [1.0, NAN]})
    assert info.value.path == "$.metrics[1]"
    assert jsonsafe.dumps({"b": 1, "a": [1.5]}, sort_keys=True) == '{"a": [1.5], "b": 1}'


def test_dumps_refuses_nan_that_default_produced():
    with pytest.raises(jsonsafe.NonFiniteNumberError):
        jsonsafe.dumps({"x": object()}, default=lambda o: NAN)


@pytest.mark.parametrize("text", ["NaN", '{"a": Infinity}', "[-Infinity]"])
def test_loads_refuses_the_nan_tokens(text):
    with pytest.raises(ValueError, match="is not JSON; use null or a string"):
        jsonsafe.loads(text)


def test_sanitize_turns_nan_and_infinity_into_null():
    assert jsonsafe.sanitize({"a": [NAN, 1.5, (INF, "x")], "b": -INF}) == {"a": [None, 1.5, [None, "x"]], "b": None}


# -- params ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def spec():  # type: ignore[no-untyped-def]
    return (
        Flow(
            "metrics",
            params={"rate": Param(float, default=0.5), "cfg": Param(dict, default={}), "ids": Param(list, default=[])},
        )
        .step("loss", lambda: None)
        .spec()
    )


@pytest.mark.parametrize("raw", ["nan", "NaN", "inf", "-Infinity", "1e400"])
def test_a_float_param_refuses_nan_and_infinity(spec, raw):
    with pytest.raises(InvalidParamError) as info:
        resolve_params(spec, {"rate": raw})
    assert str(info.value) == (
        f'flow "metrics" param "rate": {raw!r} is not a finite number; pass a float, e.g. -p rate=0.5'
    )


@pytest.mark.parametrize(
    ("name", "raw", "where"), [("cfg", '{"a": {"b": NaN}}', "$.a.b"), ("ids", "[1, Infinity]", "$[1]")]
)
def test_a_json_param_refuses_nan_and_says_where(spec, name, raw, where):
    with pytest.raises(InvalidParamError, match=rf"param \"{name}\": .* holds NaN or Infinity at {re.escape(where)}"):
        resolve_params(spec, {name: raw})


def test_params_given_as_values_are_checked_too(spec):
    with pytest.raises(InvalidParamError, match="is not a finite number"):
        resolve_params(spec, {"rate": INF})
    with pytest.raises(InvalidParamError, match=r"holds NaN or Infinity at \$.x"):
        resolve_params(spec, {"cfg": {"x": NAN}})
    assert resolve_params(spec, {"rate": "1e300"})["rate"] == 1e300


def test_a_nan_default_fails_where_the_flow_is_defined():
    # (checked when the flow is defined, so the error can name the flow and the param)
    with pytest.raises(DefinitionError, match='param "x"'):
        Flow("f", params={"x": Param(float, default=NAN)})
    with pytest.raises(DefinitionError, match='param "x"'):
        Flow("f", params={"x": INF})


def test_trigger_refuses_nan_in_one_line(tmp_path, dags):
    runner = CliRunner()
    base = ["--database-url", f"sqlite:///{tmp_path / 'f.db'}", "--broker-url", "memory://", "--dags-folder", str(dags)]
    for args, expected in [
        (["-p", "rate=nan"], 'error: flow "metrics" param "rate": \'nan\' is not a finite number; pass a float'),
        (
            ["-p", 'cfg={"limit": NaN}'],
            'error: flow "metrics" param "cfg": \'{"limit": NaN}\' holds NaN or Infinity at $.limit; pass a dict',
        ),
    ]:
        result = runner.invoke(main, [*base, "trigger", "metrics", *args])
        assert result.exit_code == 1
        assert len(result.output.strip().splitlines()) == 1
        assert result.output.startswith(expected), result.output
    assert strict(runner.invoke(main, [*base, "runs", "list", "--json"]).stdout) == []


# -- results -------------------------------------------------------------------------------------
def test_encode_result_names_the_path_and_the_fix():
    with pytest.raises(ValueError) as info:
        encode_result({"epochs": [{"loss": NAN}]}, run_id="r1", step="train", cap=1000)
    assert str(info.value) == (
        "run r1 step train: result contains NaN/Infinity at $.epochs[0].loss; return None or a string instead"
    )
    assert encode_result({"loss": 0.25}, run_id="r1", step="train", cap=1000) == '{"loss": 0.25}'


def test_a_step_returning_nan_fails_with_the_path(sqlite_store, dags):
    h = InlineHarness(sqlite_store, str(dags))
    run_id = h.trigger("metrics")
    assert h.run_until_done(run_id) == "failed"
    (attempt,) = [a for a in sqlite_store.attempts(run_id) if a["step"] == "loss"]
    assert attempt["error"] == (
        f"ValueError: run {run_id} step loss: result contains NaN/Infinity at "
        "$.epochs[1].loss; return None or a string instead"
    )
    assert sqlite_store.results(run_id) == {"fine": {"ok": 1.5}}


def test_runs_show_json_is_valid_even_with_nan_stored_before_the_check(tmp_path, sqlite_store, dags):
    # Given a run whose params and a result hold NaN/Infinity, written as older flowkit wrote them
    h = InlineHarness(sqlite_store, str(dags))
    run_id = h.trigger("metrics")
    created = sqlite_store.get_run(run_id)["created_at"]
    with sqlite_store.engine.begin() as conn:
        conn.execute(update(t.runs).where(t.runs.c.id == run_id).values(params='{"cfg": {}, "rate": NaN}'))
        conn.execute(
            insert(t.results).values(
                run_id=run_id, step="loss", value='{"loss": NaN, "best": -Infinity}', size=31, created_at=created
            )
        )
    runner = CliRunner()
    base = ["--database-url", sqlite_store.url, "--broker-url", "memory://", "--dags-folder", str(dags)]
    # When it is shown as JSON
    shown = runner.invoke(main, [*base, "runs", "show", run_id, "--json"])
    listed = runner.invoke(main, [*base, "runs", "list", "--json"])
    text = runner.invoke(main, [*base, "runs", "show", run_id])
    # Then every output parses strictly, with null where NaN was
    assert shown.exit_code == 0, shown.output
    data = strict(shown.stdout)
    assert data["params"] == {"cfg": {}, "rate": None}
    assert next(s for s in data["steps"] if s["step"] == "loss")["result"] == {"best": None, "loss": None}
    assert strict(listed.stdout)[0]["params"]["rate"] is None
    assert 'params {"cfg": {}, "rate": null}' in text.stdout
    assert math.isnan(sqlite_store.get_run(run_id)["params"]["rate"])  # the store itself is left as it was


def test_the_store_refuses_to_write_nan_params(sqlite_store, spec):
    with pytest.raises(jsonsafe.NonFiniteNumberError):
        sqlite_store.create_run(spec, {"rate": NAN, "cfg": {}, "ids": []}, actor="test")
