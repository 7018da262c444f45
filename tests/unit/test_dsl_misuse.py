"""Every misuse of the builder is a DefinitionError at the caller's line, never a bare TypeError.

Each case below calls the builder wrongly on a line marked ``# L:<tag>``; the error must be a
DefinitionError (or the subclass named), say what is wrong and how to fix it on one line, name
the flow and step, and point at that line.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from flowkit import Deadline, DefinitionError, Flow, InvalidParamError, Param
from flowkit.dsl import StepOptions, checks_arguments

from .where import assert_where

HERE = Path(__file__)


def noop(ctx):
    return None


# (tag, error type, flow, step, message regex), then the call on the line marked with the tag
CASES = [
    # -- keyword typos, with the closest name
    ("flow-typo", DefinitionError, "x", None,
     r"""flow "x": unknown option 'schedual'\. Did you mean "schedule"\? Options are: catchup, deadline, """,
     lambda: Flow("x", schedual="*/5 * * * *")),  # L:flow-typo
    ("step-typo", DefinitionError, "x", "a",
     r"""flow "x" step "a": unknown option 'retrys'\. Did you mean "retries"\? Options are: after, """
     r"""compensate, deadline, lock, """,
     lambda: Flow("x").step("a", noop, retrys=3)),  # L:step-typo
    ("then-typo", DefinitionError, "x", "b",
     r"""flow "x" step "b": unknown option 'triger'\. Did you mean "trigger"\?""",
     lambda: Flow("x").step("a", noop).then("b", noop, triger="all_done")),  # L:then-typo
    ("branch-typo", DefinitionError, "x", "pick",
     r"""flow "x" step "pick": unknown option 'aftr'\. Did you mean "after"\?""",
     lambda: Flow("x").step("a", noop).branch("pick", noop, aftr="a")),  # L:branch-typo
    ("step-option-on-flow", DefinitionError, "x", None,
     r'flow "x": lock= is a step option, not a flow default; set it on the steps that need it$',
     lambda: Flow("x", lock="ledger")),  # L:step-option-on-flow
    ("then-after", DefinitionError, "x", "b",
     r'flow "x" step "b": then\(\) chains after the previous step; use step\(\.\.\., after=\.\.\.\)',
     lambda: Flow("x").step("a", noop).then("b", noop, after="a")),  # L:then-after
    # -- missing, extra and doubled positional arguments
    ("no-fn", DefinitionError, "x", "a",
     r'flow "x" step "a": step\(\) is missing its fn argument; call it as \.step\(name, fn, \.\.\.\)$',
     lambda: Flow("x").step("a")),  # L:no-fn
    ("then-no-fn", DefinitionError, "x", "b",
     r'flow "x" step "b": then\(\) is missing its fn argument; call it as \.then\(name, fn, \.\.\.\)$',
     lambda: Flow("x").step("a", noop).then("b")),  # L:then-no-fn
    ("branch-nothing", DefinitionError, "x", None,
     r'flow "x": branch\(\) is missing its name and fn arguments; call it as \.branch\(name, fn, \.\.\.\)$',
     lambda: Flow("x").branch()),  # L:branch-nothing
    ("flow-no-name", DefinitionError, None, None,
     r"^[^ ]+: Flow\(\) is missing its name argument; call it as Flow\(name, \.\.\.\)$",
     lambda: Flow()),  # L:flow-no-name
    ("step-extra-positional", DefinitionError, "x", "b",
     r'flow "x" step "b": step\(\) takes 2 positional arguments \(name, fn\) but was given 3; pass the '
     r"options by keyword, e.g\. after=\.\.\.",
     lambda: Flow("x").step("a", noop).step("b", noop, "a")),  # L:step-extra-positional
    ("flow-extra-positional", DefinitionError, "x", None,
     r'flow "x": Flow\(\) takes 1 positional argument \(name\) but was given 2; .* e\.g\. schedule=\.\.\.',
     lambda: Flow("x", "*/5 * * * *")),  # L:flow-extra-positional
    ("name-twice", DefinitionError, "x", "a",
     r'flow "x" step "a": step\(\) got name twice, by position and as name=; give it once',
     lambda: Flow("x").step("a", noop, name="b")),  # L:name-twice
    # -- wrong types say what is accepted
    ("after-float", DefinitionError, "x", "b",
     r'flow "x" step "b": after= takes a step name or a list of them, not float 3\.14$',
     lambda: Flow("x").step("a", noop).step("b", noop, after=3.14)),  # L:after-float
    ("after-int-list", DefinitionError, "x", "b",
     r'flow "x" step "b": after= takes a step name or a list of them \(strings\), not 1 in \[1\]$',
     lambda: Flow("x").step("a", noop).step("b", noop, after=[1])),  # L:after-int-list
    ("after-dict", DefinitionError, "x", "b",
     r"after= takes a step name or a list of them, not dict",
     lambda: Flow("x").step("a", noop).step("b", noop, after={"a": True})),  # L:after-dict
    ("tags-int", DefinitionError, "x", None,
     r'flow "x": tags= takes a tag or a list of them, not int 5$',
     lambda: Flow("x", tags=5)),  # L:tags-int
    ("tags-mixed", DefinitionError, "x", None,
     r"""flow "x": tags= takes a tag or a list of them \(strings\), not None in \['a', None\]$""",
     lambda: Flow("x", tags=["a", None])),  # L:tags-mixed
    ("params-list", DefinitionError, "x", None,
     r'flow "x": params= takes a dict of name -> Param\(type, default=\.\.\.\), not list',
     lambda: Flow("x", params=[Param(int)])),  # L:params-list
    ("fn-not-callable", DefinitionError, "x", "a",
     r'flow "x" step "a": 42 is not callable; pass the function itself',
     lambda: Flow("x").step("a", 42)),  # L:fn-not-callable
    ("step-name-none", DefinitionError, "x", None,
     r"""flow "x": step name None is not valid; use letters, digits""",
     lambda: Flow("x").step(None, noop)),  # L:step-name-none
    ("flow-name-none", DefinitionError, None, None,
     r"flow name None is not valid; use letters, digits",
     lambda: Flow(None)),  # L:flow-name-none
    ("trigger-int", DefinitionError, "x", "a",
     r'flow "x" step "a": trigger 5 is not a trigger rule\. Use one of all_success, none_failed',
     lambda: Flow("x").step("a", noop, trigger=5)),  # L:trigger-int
    ("reads-int", DefinitionError, "x", "a",
     r'flow "x" step "a": reads= takes a dataset URI or a list of them, not int 5$',
     lambda: Flow("x").step("a", noop, reads=5)),  # L:reads-int
    ("writes-not-uri", DefinitionError, "x", "a",
     r"""flow "x" step "a": writes= takes dataset URIs like "file:///data/orders\.csv" .*, not 'out\.csv'$""",
     lambda: Flow("x").step("a", noop, writes=["out.csv"])),  # L:writes-not-uri
    ("schedule-int", DefinitionError, "x", None,
     r'flow "x": schedule 5 is not a cron expression',
     lambda: Flow("x", schedule=5)),  # L:schedule-int
    ("owner-int", DefinitionError, "x", None,
     r'flow "x": owner= takes a string, not int 7$',
     lambda: Flow("x", owner=7)),  # L:owner-int
    ("description-list", DefinitionError, "x", None,
     r"flow \"x\": description= takes a string, not list \['a'\]$",
     lambda: Flow("x", description=["a"])),  # L:description-list
    ("queue-int", DefinitionError, "x", "a",
     r'flow "x" step "a": queue=3 is not a valid queue name; use letters, digits',
     lambda: Flow("x").step("a", noop, queue=3)),  # L:queue-int
    # -- param defaults must match their type
    ("param-str-for-int", InvalidParamError, "x", None,
     r"""flow "x" param "limit": default 'ten' is a str, not an int; give a default of type int or """,
     lambda: Flow("x", params={"limit": Param(int, default="ten")})),  # L:param-str-for-int
    ("param-bool-for-int", InvalidParamError, "x", None,
     r'flow "x" param "n": default True is a bool, not an int',
     lambda: Flow("x", params={"n": Param(int, default=True)})),  # L:param-bool-for-int
    ("param-bool-for-float", InvalidParamError, "x", None,
     r'flow "x" param "ratio": default False is a bool, not a float',
     lambda: Flow("x", params={"ratio": Param(float, default=False)})),  # L:param-bool-for-float
    ("param-int-for-bool", InvalidParamError, "x", None,
     r'flow "x" param "dry": default 1 is an int, not a bool',
     lambda: Flow("x", params={"dry": Param(bool, default=1)})),  # L:param-int-for-bool
    ("param-tuple-for-list", InvalidParamError, "x", None,
     r'flow "x" param "ids": default \(1, 2\) is a tuple, not a list',
     lambda: Flow("x", params={"ids": Param(list, default=(1, 2))})),  # L:param-tuple-for-list
    ("param-not-json", InvalidParamError, "x", None,
     r'flow "x" param "ids": default \[.*\] cannot be stored as JSON \(.*\); use only str, int',
     lambda: Flow("x", params={"ids": Param(list, default=[1, {2}])})),  # L:param-not-json
    ("param-nan", InvalidParamError, "x", None,
     r'flow "x" param "ratio": default nan cannot be stored as JSON \(Out of range float values',
     lambda: Flow("x", params={"ratio": Param(float, default=float("nan"))})),  # L:param-nan
    ("param-bad-type", DefinitionError, None, None,
     r"param type <class 'set'> is not supported; use one of str, int, float, bool, list, dict$",
     lambda: Param(set)),  # L:param-bad-type
    # -- sensors: exactly one thing to wait for, and a sane schedule
    ("sensor-two-targets", DefinitionError, "x", "s",
     r'flow "x" step "s": give exactly one of poke=callable, file=PATH or flow=NAME \(got poke=, file=\); ',
     lambda: Flow("x").sensor("s", noop, file="/data/in.csv")),  # L:sensor-two-targets
    ("sensor-no-target", DefinitionError, "x", "s",
     r'flow "x" step "s": give exactly one of poke=callable, file=PATH or flow=NAME \(got none\)',
     lambda: Flow("x").sensor("s")),  # L:sensor-no-target
    ("sensor-typo", DefinitionError, "x", "s",
     r"""flow "x" step "s": unknown option 'evry'\. Did you mean "every"\? Options are: after, backoff, """,
     lambda: Flow("x").sensor("s", noop, evry="1m")),  # L:sensor-typo
    ("sensor-every", DefinitionError, "x", "s",
     r"""flow "x" step "s": every='soon' is not a duration; give seconds or a string like "30s", "5m"$""",
     lambda: Flow("x").sensor("s", file="/in.csv", every="soon")),  # L:sensor-every
    ("sensor-on-timeout", DefinitionError, "x", "s",
     r"""flow "x" step "s": on_timeout='retry' must be "fail" or "skip"$""",
     lambda: Flow("x").sensor("s", flow="orders", on_timeout="retry")),  # L:sensor-on-timeout
    ("sensor-poke-not-callable", DefinitionError, "x", "s",
     r"flow \"x\" step \"s\": poke='ready' is not callable; pass the function itself",
     lambda: Flow("x").sensor("s", "ready")),  # L:sensor-poke-not-callable
    ("sensor-compensate", DefinitionError, "x", "s",
     r"""flow "x" step "s": unknown option 'compensate'\.""",
     lambda: Flow("x").sensor("s", noop, compensate=noop)),  # L:sensor-compensate
]


@pytest.mark.parametrize(
    ("tag", "error", "flow", "step", "message", "call"), [pytest.param(*c, id=c[0]) for c in CASES]
)
def test_misuse_is_a_definition_error_at_the_callers_line(tag, error, flow, step, message, call):
    with pytest.raises(error, match=message) as ei:
        call()
    assert type(ei.value) is error
    assert_where(ei.value, HERE, tag, flow=flow, step=step)


def test_every_case_has_its_marker_once():
    assert len({c[0] for c in CASES}) == len(CASES)


# -- accepted names come from the signatures ------------------------------------------------------


VALID_OPTIONS: StepOptions = {
    "retries": 1, "retry_backoff": "1s", "retry_max_delay": 10, "timeout": "5m", "queue": "io",
    "priority": 3, "pool": "db", "slots": 2, "lock": ("ledger", "shared"), "trigger": "all_done",
    "reads": "s3://b/in", "writes": ["s3://b/out"], "compensate": noop,
    "success_when": bool,
    "on_success": noop, "on_failure": noop, "on_retry": noop,
    "deadline": Deadline(within="10m"),
}


def test_the_valid_options_cover_step_options():
    assert set(VALID_OPTIONS) == set(StepOptions.__optional_keys__)


@pytest.mark.parametrize("method", ["step", "then", "branch"])
@pytest.mark.parametrize("option", sorted(StepOptions.__optional_keys__))
def test_every_step_option_is_accepted_by_every_step_method(method, option):
    flow = Flow("f", pool="db").step("a", noop)  # the flow's pool, for slots= alone
    getattr(flow, method)("b", noop, **{option: VALID_OPTIONS[option]})
    assert flow.step_names == ["a", "b"]


@pytest.mark.parametrize("method", ["step", "then", "branch"])
def test_the_message_lists_every_step_option(method):
    flow = Flow("f")
    with pytest.raises(DefinitionError) as ei:
        getattr(flow, method)("b", noop, colour="red")
    listed = str(ei.value).split("Options are: ")[1].split(", ")
    expected = sorted(StepOptions.__optional_keys__ | ({"after"} if method != "then" else set()))
    assert listed == expected
    assert "Did you mean" not in str(ei.value)


def test_signatures_stay_visible_to_help_and_editors():
    assert list(inspect.signature(Flow.step).parameters) == ["self", "name", "fn", "after", "options"]
    assert "schedule" in inspect.signature(Flow).parameters
    assert Flow.step.__doc__ and "upstreams" in Flow.step.__doc__


def test_a_type_error_inside_a_well_formed_call_is_not_disguised():
    @checks_arguments()
    def buggy(name: str) -> None:
        raise TypeError("a bug in the builder")

    with pytest.raises(TypeError, match="a bug in the builder"):
        buggy("x")


# -- nothing but DefinitionError, whatever is passed ---------------------------------------------

WRONG_VALUES = [object(), 3.14, -1, 0, 10**6, [1], ["x y"], {"a": 1}, b"bytes", True, "", "no such thing", ("a",),
                ("a", "b", "c"), float("nan"), noop]


def _misfits(call: Callable[[str, object], object], cases: list[tuple[str, object]]) -> list[str]:
    """Each case (name, value) whose call raised anything but a one-line DefinitionError at this
    file, described with the case and the error."""
    out = []
    for name, value in cases:
        try:
            call(name, value)
        except DefinitionError as exc:
            if not str(exc).startswith(f"{__file__}:") or "\n" in str(exc):
                out.append(f"{name}={value!r}: DefinitionError not one line at the caller's: {exc}")
        except Exception as exc:  # any other error is the finding
            out.append(f"{name}={value!r}: {type(exc).__name__}: {exc}")
    return out


STEP_OPTIONS = sorted(StepOptions.__optional_keys__ | {"after"})


def test_any_value_for_a_step_option_is_accepted_or_a_definition_error():
    # every option x every wrong value (304 cases, well under a millisecond each) in one test
    def call(option: str, value: object) -> None:
        Flow("f").step("a", noop).step("b", noop, **{option: value})

    cases = [(option, value) for option in STEP_OPTIONS for value in WRONG_VALUES]
    assert len(cases) == 304
    assert _misfits(call, cases) == []


FLOW_OPTIONS = [n for n in inspect.signature(Flow).parameters if n != "name"]


def test_any_value_for_a_flow_option_is_accepted_or_a_definition_error():
    # every flow option x every wrong value (256 cases) in one test
    def call(option: str, value: object) -> None:
        Flow("f", **{option: value})

    cases = [(option, value) for option in FLOW_OPTIONS for value in WRONG_VALUES]
    assert len(cases) == len(FLOW_OPTIONS) * len(WRONG_VALUES)
    assert _misfits(call, cases) == []


def _stable_id(value: object) -> str:
    """The value's repr without its memory address: pytest-xdist workers must collect the same ids."""
    return re.sub(r" at 0x[0-9a-f]+", "", repr(value))


@pytest.mark.parametrize("value", WRONG_VALUES, ids=_stable_id)
def test_any_param_default_is_accepted_or_a_definition_error(value):
    for type_ in (str, int, float, bool, list, dict):
        try:
            Flow("f", params={"p": Param(type_, default=value)}).step("a", noop).spec().to_json()
        except DefinitionError as exc:
            assert 'param "p"' in str(exc)


def test_the_message_lists_every_sensor_option():
    from flowkit.dsl import SensorOptions

    with pytest.raises(DefinitionError) as ei:
        Flow("f").sensor("s", noop, colour="red")
    listed = str(ei.value).split("Options are: ")[1].split(", ")
    own = {"after", "backoff", "every", "file", "flow", "on_timeout", "timeout"}
    assert listed == sorted(SensorOptions.__optional_keys__ | own)
    # the step options a poke has use for, and not the ones it has none for
    assert SensorOptions.__optional_keys__ <= StepOptions.__optional_keys__
    assert StepOptions.__optional_keys__ - SensorOptions.__optional_keys__ == {"timeout", "compensate", "success_when"}


def test_any_value_for_a_sensor_option_is_accepted_or_a_definition_error():
    from flowkit.dsl import SensorOptions

    own = ["poke", "file", "flow", "every", "timeout", "backoff", "on_timeout", "after"]

    def call(option: str, value: object) -> None:
        target = {} if option in ("poke", "file", "flow") else {"file": "/data/in.csv"}
        Flow("f").step("a", noop).sensor("s", **{**target, option: value}).spec().to_json()

    options = sorted(set(own) | SensorOptions.__optional_keys__)
    cases = [(option, value) for option in options for value in WRONG_VALUES]
    assert _misfits(call, cases) == []
