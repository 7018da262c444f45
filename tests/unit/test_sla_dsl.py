"""deadline= on a flow and on a step: validated where it is written, carried in the spec."""

from __future__ import annotations

import pytest

from flowkit import Deadline, DefinitionError, Flow
from flowkit.spec import FlowSpec


def work(ctx):
    return 1


def test_flow_and_step_deadlines_reach_the_spec_and_survive_json():
    flow = (
        Flow("nightly", schedule="0 0 * * *", deadline=Deadline(by="06:00", day_offset=1))
        .step("extract", work)
        .step("load", work, after="extract", deadline=Deadline(within="10m"))
    )
    spec = flow.spec()
    assert spec.deadline == {"by": "06:00", "day_offset": 1}
    assert spec.step("load").deadline == {"within_seconds": 600.0}
    assert spec.step("extract").deadline is None
    again = FlowSpec.from_json(spec.to_json())
    assert again.deadline == spec.deadline and again.step("load").deadline == {"within_seconds": 600.0}


def test_a_flow_without_a_deadline_has_none():
    spec = Flow("plain").step("a", work).spec()
    assert spec.deadline is None and spec.step("a").deadline is None


@pytest.mark.parametrize("bad", ["06:00", 3600, {"by": "06:00"}])
def test_a_deadline_that_is_not_a_deadline_is_a_one_line_error(bad):
    with pytest.raises(DefinitionError, match=r'flow "f": deadline=.* must be a Deadline') as err:
        Flow("f", deadline=bad)
    assert "\n" not in str(err.value)
    with pytest.raises(DefinitionError, match=r'step "a": deadline=.* must be a Deadline'):
        Flow("g").step("a", work, deadline=bad)
