"""trigger_on=, trigger_mode= and trigger_batch=: checked where they are written (one line,
the file and line of the call), carried in the spec, and an unknown FlowDone flow is a
load-time warning (a flow may appear later), not an error."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from flowkit import Dataset, DefinitionError, Flow, FlowDone, Param
from flowkit.spec import FlowSpec
from flowkit.triggers.plan import Pending, plan_runs

from .where import line_of

HERE = Path(__file__)


def work(ctx):
    return 1


def test_triggers_reach_the_spec_and_survive_json():
    spec = (
        Flow("f", trigger_on=[FlowDone("orders", states=("success", "failed")), Dataset("s3://lake/x")])
        .step("a", work)
        .spec()
    )
    assert spec.triggers == {
        "on": [
            {"kind": "flow", "source": "orders", "states": ["success", "failed"]},
            {"kind": "dataset", "source": "s3://lake/x", "states": []},
        ],
        "mode": "all",
        "batch": False,
    }
    assert FlowSpec.from_json(spec.to_json()).triggers == spec.triggers
    assert Flow("g").step("a", work).spec().triggers is None
    one = Flow("h", trigger_on=Dataset("s3://lake/x"), trigger_mode="any", trigger_batch=True).step("a", work)
    assert one.spec().triggers == {"on": [Dataset("s3://lake/x").to_dict()], "mode": "any", "batch": True}


# fmt: off
CASES = [
    ("flow-name", r"FlowDone\(flow='no good'.*is not a flow name", lambda: FlowDone("no good")),  # L:flow-name
    ("state", r"states= holds 'ok', which is not a run end state; use success, failed, cancelled",
     lambda: FlowDone("orders", states=("ok",))),  # L:state
    ("uri", r"Dataset\(uri='orders'\): give a dataset URI like", lambda: Dataset("orders")),  # L:uri
    ("bare-string", r"""flow "f": trigger_on= holds 'orders', which is not FlowDone\("flow"\) or Dataset\("uri"\) """
     r"""\(FlowDone\('orders'\) for a flow""",
     lambda: Flow("f", trigger_on=["orders"])),  # L:bare-string
    ("not-a-list", r"""flow "f": trigger_on='orders' must list""",
     lambda: Flow("f", trigger_on="orders")),  # L:not-a-list
    ("mode", r"""flow "f": trigger_mode='some' is not a mode; use "all" """,
     lambda: Flow("f", trigger_on=[Dataset("s3://a/b")], trigger_mode="some")),  # L:mode
    ("batch", r"""flow "f": trigger_batch='yes' must be True""",
     lambda: Flow("f", trigger_on=[Dataset("s3://a/b")], trigger_batch="yes")),  # L:batch
    ("self", r"""flow "f": trigger_on= holds FlowDone\('f'\): the flow would start itself""",
     lambda: Flow("f", trigger_on=[FlowDone("f")])),  # L:self
    ("twice", r"""flow "f": trigger_on= names dataset 's3://a/b' twice; keep one""",
     lambda: Flow("f", trigger_on=[Dataset("s3://a/b"), Dataset("s3://a/b")])),  # L:twice
    ("mode-alone", r"""flow "f": trigger_mode=/trigger_batch= need trigger_on=""",
     lambda: Flow("f", trigger_mode="any")),  # L:mode-alone
    ("required", r"""flow "f": a triggered run gets no params, so with trigger_on= every param needs a default""",
     lambda: Flow("f", params={"day": Param(str)}, trigger_on=[Dataset("s3://a/b")])),  # L:required
    ("typo", r"""flow "f": unknown option 'trigger_onn'. Did you mean "trigger_on"\?""",
     lambda: Flow("f", trigger_onn=[Dataset("s3://a/b")])),  # L:typo
]
# fmt: on


@pytest.mark.parametrize(("tag", "message", "call"), CASES, ids=[c[0] for c in CASES])
def test_bad_trigger_input_is_a_one_line_error_at_its_line(tag, message, call):
    with pytest.raises(DefinitionError, match=message) as ei:
        call()
    err = ei.value
    assert "\n" not in str(err)
    assert err.lineno == line_of(tag, HERE) and Path(err.path) == HERE


def test_an_unknown_flow_in_flow_done_is_a_load_warning(tmp_path, sqlite_store, caplog):
    from flowkit.loading.sync import sync_dags

    (tmp_path / "later.py").write_text(
        "from flowkit import Flow, FlowDone\nflow = Flow('waits', trigger_on=[FlowDone('not_yet')]).step('a', print)\n"
    )
    with caplog.at_level(logging.WARNING, logger="flowkit.loading.sync"):
        report = sync_dags(sqlite_store, str(tmp_path))
    assert not report.errors and "waits" in report.flows
    assert 'flow "waits": trigger_on FlowDone("not_yet") names no loaded flow' in caplog.text


def p(i: int, kind: str = "dataset", source: str = "s3://a") -> Pending:
    return Pending(i, kind, source, f"run{i}", f"ds:{i}")


def test_the_plan_pairs_the_oldest_events_with_all_and_keeps_the_rest():
    trig = {"on": [{"kind": "dataset", "source": "s3://a"}, {"kind": "dataset", "source": "s3://b"}], "mode": "all"}
    plan = plan_runs(trig, [p(1), p(2), p(3, source="s3://b"), p(4), p(5, source="s3://x")])
    assert [[e.id for e in g] for g in plan.groups] == [[1, 3]]
    assert [e.id for e in plan.stale] == [5]
    batch = plan_runs({**trig, "batch": True}, [p(1), p(2), p(3, source="s3://b")])
    assert [[e.id for e in g] for g in batch.groups] == [[1, 2, 3]]
    anyone = plan_runs({**trig, "mode": "any"}, [p(2), p(1), p(3, source="s3://b")])
    assert [[e.id for e in g] for g in anyone.groups] == [[1], [2], [3]]
    assert plan_runs(trig, [p(1)]).groups == []
