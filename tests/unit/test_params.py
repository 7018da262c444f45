"""resolve_params: checking and coercing the params a run is triggered with."""

from __future__ import annotations

import pytest

from flowkit import Flow, InvalidParamError, Param
from flowkit.spec import FlowSpec, resolve_params


def noop(ctx):
    return None


@pytest.fixture(scope="module")
def spec() -> FlowSpec:
    return (
        Flow(
            "report",
            params={
                "day": Param(str),
                "limit": Param(int, default=10),
                "ratio": Param(float, default=0.5),
                "dry_run": False,
                "ids": Param(list, default=[1, 2]),
                "opts": Param(dict, default={}),
            },
        )
        .step("build", noop)
        .spec()
    )


def test_defaults_fill_what_was_not_given(spec):
    assert resolve_params(spec, {"day": "2024-05-01"}) == {
        "day": "2024-05-01",
        "limit": 10,
        "ratio": 0.5,
        "dry_run": False,
        "ids": [1, 2],
        "opts": {},
    }


def test_cli_strings_are_coerced_to_the_declared_types(spec):
    got = resolve_params(
        spec,
        {"day": "42", "limit": "25", "ratio": "2", "dry_run": "yes", "ids": "[3, 4]", "opts": '{"k": {"n": 1}}'},
    )
    assert got == {
        "day": "42",
        "limit": 25,
        "ratio": 2.0,
        "dry_run": True,
        "ids": [3, 4],
        "opts": {"k": {"n": 1}},
    }
    assert type(got["limit"]) is int
    assert type(got["ratio"]) is float
    assert got["dry_run"] is True


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1", True),
        ("true", True),
        ("Yes", True),
        (" on ", True),
        ("0", False),
        ("FALSE", False),
        ("no", False),
        ("off", False),
    ],
)
def test_bool_strings(spec, text, value):
    assert resolve_params(spec, {"day": "d", "dry_run": text})["dry_run"] is value


def test_native_python_values_pass_through(spec):
    given = {"day": "d", "limit": 7, "ratio": 3, "dry_run": True, "ids": ["a"], "opts": {"a": 1}}
    got = resolve_params(spec, given)
    assert got == {"day": "d", "limit": 7, "ratio": 3.0, "dry_run": True, "ids": ["a"], "opts": {"a": 1}}
    assert type(got["ratio"]) is float


def test_bad_int_names_the_flow_the_param_and_shows_a_fix(spec):
    with pytest.raises(
        InvalidParamError, match=r"""flow "report" param "limit": 'abc' is not an int; .*e\.g\. -p limit=42"""
    ) as ei:
        resolve_params(spec, {"day": "d", "limit": "abc"})
    assert ei.value.flow == "report"


@pytest.mark.parametrize(
    ("name", "given", "shown", "why", "example"),
    [
        ("ratio", "fast", "'fast'", "is not a float", "-p ratio=0.5"),
        ("dry_run", "maybe", "'maybe'", "is not a boolean", "-p dry_run=true"),
        ("ids", "1,2", "'1,2'", "is not JSON", "-p ids='[1,2]'"),
        # valid JSON of the wrong shape: the message shows the parsed value
        ("ids", '{"a": 1}', "{'a': 1}", "is a dict", "-p ids='[1,2]'"),
        ("opts", "[1]", "[1]", "is a list", """-p opts='{"k":1}'"""),
        ("day", 5, "5", "is a int", "-p day=text"),
    ],
)
def test_other_bad_values(spec, name, given, shown, why, example):
    with pytest.raises(InvalidParamError) as ei:
        resolve_params(spec, {"day": "d", name: given})
    message = str(ei.value)
    assert f'flow "report" param "{name}": {shown} {why}' in message
    assert message.endswith(f"e.g. {example}")


def test_unknown_param_suggests_the_close_one(spec):
    with pytest.raises(
        InvalidParamError,
        match=r'flow "report" has no param "limt"\. Did you mean "limit"\? '
        r"Its params are: day, limit, ratio, dry_run, ids, opts",
    ) as ei:
        resolve_params(spec, {"day": "d", "limt": "5"})
    assert ei.value.flow == "report"


def test_unknown_param_on_a_flow_without_params():
    bare = Flow("bare").step("a", noop).spec()
    with pytest.raises(InvalidParamError, match=r'flow "bare" has no param "x"\. Its params are: none'):
        resolve_params(bare, {"x": 1})
    assert resolve_params(bare, {}) == {}


def test_missing_required_param(spec):
    with pytest.raises(InvalidParamError, match=r'flow "report" needs param "day" \(str\); pass -p day=text') as ei:
        resolve_params(spec, {"limit": "3"})
    assert ei.value.flow == "report"


@pytest.mark.parametrize("name", ["limit", "ratio"])
def test_bool_given_to_a_number_param_is_rejected(spec, name):
    with pytest.raises(InvalidParamError, match=rf'flow "report" param "{name}": True is a bool'):
        resolve_params(spec, {"day": "d", name: True})
