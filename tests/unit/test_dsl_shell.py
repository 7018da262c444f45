"""Defining shell steps and success_when=: misuse is a one-line DefinitionError at the
caller's line (marked ``# L:<tag>``); good definitions reach the spec and survive JSON."""

from __future__ import annotations

from pathlib import Path

import pytest

from flowkit import DefinitionError, Flow
from flowkit.spec import FlowSpec, ShellSpec

from .test_spec import OLD_SPEC_JSON
from .where import assert_where

HERE = Path(__file__)


def noop(ctx):
    return None


CASES = [
    ("shell-typo", "load",
     r"""flow "x" step "load": unknown option 'fail_onn'\. Did you mean "fail_on"\? Options are: after, """
     r"compensate, cwd, deadline, env, fail_on, lock, ",
     lambda: Flow("x").shell("load", "make load", fail_onn=["ERROR"])),  # L:shell-typo
    ("shell-step-option-typo", "load",
     r"""flow "x" step "load": unknown option 'retrys'\. Did you mean "retries"\?""",
     lambda: Flow("x").shell("load", "make load", retrys=3)),  # L:shell-step-option-typo
    ("step-typo", "a",
     r"""flow "x" step "a": unknown option 'succes_when'\. Did you mean "success_when"\?""",
     lambda: Flow("x").step("a", noop, succes_when=bool)),  # L:step-typo
    ("shell-after-float", "load",
     r"""flow "x" step "load": after= takes a step name or a list of them, not float 3\.14$""",
     lambda: Flow("x").shell("load", "make", after=3.14)),  # L:shell-after-float
    ("step-after-float", "a",
     r"""flow "x" step "a": after= takes a step name or a list of them, not float 3\.14$""",
     lambda: Flow("x").step("a", noop, after=3.14)),  # L:step-after-float
    ("empty-command", "load",
     r"""flow "x" step "load": the command must be a non-empty string, like "make build"; got '  '$""",
     lambda: Flow("x").shell("load", "  ")),  # L:empty-command
    ("missing-command", "load",
     r"""flow "x" step "load": shell\(\) is missing its command argument; call it as """
     r"""\.shell\(name, command, \.\.\.\)$""",
     lambda: Flow("x").shell("load")),  # L:missing-command
    ("bad-regex", "load",
     r"""flow "x" step "load": fail_on pattern 'ERROR\(' is not a valid regular expression \(missing \), """
     r"""unterminated subpattern at position 5\); escape special characters with re\.escape\(\)$""",
     lambda: Flow("x").shell("load", "make", fail_on=["ok", "ERROR("])),  # L:bad-regex
    ("fail-on-not-strings", "load",
     r"""flow "x" step "load": fail_on= takes regular expressions \(strings\), not 3$""",
     lambda: Flow("x").shell("load", "make", fail_on=[3])),  # L:fail-on-not-strings
    ("codes-not-ints", "load",
     r"""flow "x" step "load": success_codes=\('0',\) must be exit codes: whole numbers from 0 to 255, """
     r"""e\.g\. success_codes=\(0, 3\)$""",
     lambda: Flow("x").shell("load", "make", success_codes=("0",))),  # L:codes-not-ints
    ("codes-bool", "load",
     r"""flow "x" step "load": success_codes=True must be exit codes""",
     lambda: Flow("x").shell("load", "make", success_codes=True)),  # L:codes-bool
    ("codes-empty", "load",
     r"""flow "x" step "load": success_codes=\[\] must be exit codes""",
     lambda: Flow("x").shell("load", "make", success_codes=[])),  # L:codes-empty
    ("env-not-str", "load",
     r"""flow "x" step "load": env=\{'PORT': 5432\}: values must be strings; write '5432'$""",
     lambda: Flow("x").shell("load", "make", env={"PORT": 5432})),  # L:env-not-str
    ("env-not-dict", "load",
     r"""flow "x" step "load": env= takes a dict of names to strings, like \{"MODE": "full"\}; got list""",
     lambda: Flow("x").shell("load", "make", env=["A=1"])),  # L:env-not-dict
    ("cwd-not-path", "load",
     r"""flow "x" step "load": cwd= takes a directory path \(a string\), not 7$""",
     lambda: Flow("x").shell("load", "make", cwd=7)),  # L:cwd-not-path
    ("success-when-not-callable", "a",
     r"""flow "x" step "a": success_when=True is not callable; pass a function that takes the step's result """
     r"""and returns True when it succeeded, e\.g\. success_when=lambda r: r\["rows"\] > 0$""",
     lambda: Flow("x").step("a", noop, success_when=True)),  # L:success-when-not-callable
    ("success-when-on-flow", None,
     r"""flow "x": success_when= is a step option, not a flow default; set it on the steps that need it$""",
     lambda: Flow("x", success_when=bool)),  # L:success-when-on-flow
]


@pytest.mark.parametrize(("tag", "step", "message", "call"), CASES, ids=[c[0] for c in CASES])
def test_misuse_is_a_definition_error_at_the_line(tag, step, message, call):
    with pytest.raises(DefinitionError, match=message) as ei:
        call()
    assert_where(ei.value, HERE, tag, flow="x", step=step)


def test_a_shell_step_reaches_the_spec_and_survives_json():
    flow = (Flow("nightly")
            .shell("build", "make build", env={"MODE": "full", "A": "1"}, cwd=Path("/srv"),
                   fail_on=r"^ERROR", success_codes=[0, 3], timeout="5m", retries=2,
                   success_when=lambda r: r["exit_code"] == 0)
            .step("after", noop, after="build"))
    spec = flow.spec(version="v1")
    build = spec.step("build")
    assert build.kind == "shell"
    assert build.shell == ShellSpec(command="make build", env=(("A", "1"), ("MODE", "full")), cwd="/srv",
                                    fail_on=("^ERROR",), success_codes=(0, 3))
    assert build.fn == "/bin/sh -c make build"
    assert build.timeout_seconds == 300 and build.retry.retries == 2
    assert build.success_when is not None and build.success_when.endswith("<lambda>")
    assert spec.step("after").shell is None and spec.step("after").success_when is None
    assert FlowSpec.from_json(spec.to_json()) == spec
    hash(build)  # specs stay hashable


def test_a_spec_stored_before_shell_steps_existed_has_none():
    spec = FlowSpec.from_json(OLD_SPEC_JSON)
    assert all(s.shell is None and s.success_when is None for s in spec.steps)


def test_the_worker_gets_success_when_from_the_flow():
    def check(result):
        return result

    flow = Flow("x").step("a", noop, success_when=check).shell("b", "true")
    assert flow.success_check_for("a") is check
    assert flow.success_check_for("b") is None
    with pytest.raises(LookupError, match='step "b" of flow "x" is a shell step'):
        flow.callable_for("b")
