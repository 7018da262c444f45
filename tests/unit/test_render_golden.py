"""Golden files for every picture the renderers draw, so that a refactoring of a renderer
is proven byte-identical.

``tests/golden/`` holds, besides the orders DOT files of test_render.py: the timeline SVG
and HTML report of the failed orders run, the run graph, timeline and report of a run with
map instances, an approval, a shell step and compensation, the structure of a flow of every
kind, a large flow drawn in clusters and collapsed, and the lineage pictures. Regenerate
after a deliberate change to the drawing and review the diff::

    FLOWKIT_UPDATE_GOLDEN=1 .venv/bin/python -m pytest -p no:celery tests/unit/test_render_golden.py

Times that the engine writes (audit events, the harness's attempts) are replaced by times
fixed in the order they happened, and ids, versions and paths by placeholders, so that the
same run always gives the same bytes.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from flowkit import render as rd
from flowkit.render.common import RunView
from flowkit.spec import FlowSpec, StepSpec
from flowkit.store import tables as t
from flowkit.store.sql import SqlStore
from flowkit.testing import InlineHarness

from .test_render import T0, attempt, check_golden, make_failed_run, normalise, synthetic_flow
from .test_render_model import decide

ROOT = Path(__file__).resolve().parents[2]
DAGS = str(ROOT / "tests" / "dags" / "render")
#: The graph the report embeds: fixed, so that the report's bytes do not depend on Graphviz's.
GRAPH_SVG = '<svg xmlns="http://www.w3.org/2000/svg"><g id="graph0"/></svg>'


def pin_event_times(store: SqlStore, run_id: str) -> None:
    """Audit events at T0 + 10 ms apart, in the order they were written."""
    with store.engine.begin() as conn:
        ids = (
            conn.execute(select(t.events.c.id).where(t.events.c.run_id == run_id).order_by(t.events.c.id))
            .scalars()
            .all()
        )
        for i, event_id in enumerate(ids):
            conn.execute(
                update(t.events).where(t.events.c.id == event_id).values(at=T0 + timedelta(milliseconds=10 * i))
            )


def fixed_times(view: RunView) -> RunView:
    """The same view with every time replaced by T0 + 0.25 s times its rank among the
    distinct times of the view, so order and equality hold and nothing else of the clock does."""
    found: set[datetime] = set()

    def collect(value: Any) -> None:
        if isinstance(value, datetime):
            found.add(value)
        elif isinstance(value, dict):
            for v in value.values():
                collect(v)
        elif isinstance(value, list):
            for v in value:
                collect(v)

    parts = (view.run, view.steps, view.attempts, view.events, view.instances, view.datasets)
    for part in parts:
        collect(part)
    rank = {when: T0 + timedelta(milliseconds=250 * i) for i, when in enumerate(sorted(found))}

    def fix(value: Any) -> Any:
        if isinstance(value, datetime):
            return rank[value]
        if isinstance(value, dict):
            return {k: fix(v) for k, v in value.items()}
        if isinstance(value, list):
            return [fix(v) for v in value]
        return value

    return replace(
        view,
        run={**fix(view.run), "version": "VERSION"},
        steps=fix(view.steps),
        attempts=fix(view.attempts),
        events=fix(view.events),
        instances=fix(view.instances),
        datasets=fix(view.datasets),
    )


#: Traceback frames inside flowkit itself, with its source line: the goldens pin what a
#: user's failure looks like, not where the engine's own code happens to sit.
ENGINE_FRAMES = re.compile(r"(?:  File (?:&quot;|\")ROOT/flowkit/[^\n]*\n(?:    [^\n]*\n)?)+")


#: A flow version in an audit reason: the hash of its module's source, which formatting changes.
VERSION_IN_REASON = re.compile(r"version [0-9a-f]{16}")


def placeholders(text: str, run_id: str) -> str:
    text = normalise(text, run_id).replace(str(ROOT), "ROOT")
    return VERSION_IN_REASON.sub("version VERSION", ENGINE_FRAMES.sub("  (flowkit frames)\n", text))


# -- the failed orders run ------------------------------------------------------------------------
def failed_orders_view(store: SqlStore) -> tuple[str, RunView]:
    run_id = make_failed_run(store)
    pin_event_times(store, run_id)
    return run_id, rd.load_run_view(store, run_id)


def without_version(text: str, view: RunView) -> str:
    """The flow version (a hash of dags/orders.py and its helpers) as a placeholder: the
    pictures must not change when the example's code does."""
    return text.replace(str(view.run["version"]), "VERSION")


def test_orders_failed_run_timeline_matches_golden(store: SqlStore) -> None:
    run_id, view = failed_orders_view(store)
    check_golden("orders_run_failed_timeline.svg", normalise(without_version(rd.timeline_svg(view), view), run_id))


def test_orders_failed_run_report_matches_golden(store: SqlStore) -> None:
    run_id, view = failed_orders_view(store)
    page = rd.report_html(view, graph_svg=GRAPH_SVG, generated_at=T0)
    check_golden("orders_run_failed_report.html", normalise(without_version(page, view), run_id))


def test_orders_run_waiting_to_retry_timeline_matches_golden(store: SqlStore) -> None:
    from .test_render import pin_times

    run_id = store.create_run(store.flow_spec("orders"), {}, actor="test")
    assert run_id
    attempt(store, run_id, "receive", 1, "success")
    attempt(store, run_id, "check_inventory", 1, "failed", error="boom", final=False)
    pin_times(store, run_id, {("receive", 1): (0, 0.5, 1), ("check_inventory", 1): (1, 1.5, 2)}, None)
    svg = rd.timeline_svg(rd.load_run_view(store, run_id), now=T0 + timedelta(seconds=30))
    check_golden("orders_run_retrying_timeline.svg", normalise(svg, run_id))


# -- maps, an approval, a shell step and compensation ------------------------------------------
@pytest.fixture
def harness(sqlite_store: SqlStore) -> InlineHarness:
    return InlineHarness(sqlite_store, DAGS)


def pictured_view(harness: InlineHarness, params: dict[str, Any] | None = None) -> tuple[str, RunView]:
    """pictured, approved by ann: the shell step fails and the run compensates."""
    run_id = harness.trigger("pictured", params or {})
    harness.work()
    if harness.store.get_run(run_id)["state"] == "running":
        decide(harness, run_id, approve=True, by="ann", reason="numbers <look> right")
    assert harness.run_until_done(run_id) == "failed"
    return run_id, fixed_times(rd.load_run_view(harness.store, run_id))


def test_compensated_run_pictures_match_golden(harness: InlineHarness) -> None:
    run_id, view = pictured_view(harness)
    check_golden("pictured_run.dot", placeholders(rd.run_dot(view), run_id))
    check_golden("pictured_run_timeline.svg", placeholders(rd.timeline_svg(view), run_id))
    page = rd.report_html(view, graph_svg=GRAPH_SVG, generated_at=T0)
    check_golden("pictured_run_report.html", placeholders(page, run_id))


def test_run_with_more_instances_than_drawn_matches_golden(harness: InlineHarness) -> None:
    # the last instance fails, so the run fails before its approval
    run_id, view = pictured_view(harness, {"n": 13, "bad": 12})
    assert "square[12]" in {r["step"] for r in view.instances["square"]}
    assert len(view.instances["square"]) < 13
    check_golden("pictured_map13_timeline.svg", placeholders(rd.timeline_svg(view), run_id))
    page = rd.report_html(view, graph_svg=GRAPH_SVG, generated_at=T0)
    check_golden("pictured_map13_report.html", placeholders(page, run_id))


def test_awaiting_approval_run_matches_golden(harness: InlineHarness) -> None:
    run_id = harness.trigger("pictured")
    harness.work()
    view = fixed_times(rd.load_run_view(harness.store, run_id))
    check_golden("pictured_waiting.dot", placeholders(rd.run_dot(view), run_id))
    check_golden("pictured_waiting_timeline.svg", placeholders(rd.timeline_svg(view), run_id))


# -- structures ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class PooledStep(StepSpec):  # the renderer reads getattr(step, "pool")
    pool: str | None = None


def test_structure_of_every_kind_matches_golden(harness: InlineHarness) -> None:
    spec = FlowSpec(
        name="kinds",
        version="v",
        steps=(
            StepSpec("start", "m:start", doc='says "hi" <b>\nnext line'),
            StepSpec("choose", "m:choose", upstream=("start",), kind="branch"),
            StepSpec("fan", "m:fan", upstream=("choose",), kind="map"),
            StepSpec("sign_off", "m:sign_off", upstream=("fan",), kind="approval"),
            StepSpec("wait_file", "m:wait_file", kind="sensor"),
            PooledStep("load", "m:load", upstream=("sign_off", "wait_file"), trigger="none_failed", pool="db"),
            StepSpec("odd", "m:odd", upstream=("load",), kind="quantum", trigger="all_done"),
        ),
    )
    check_golden("kinds_structure.dot", rd.flow_dot(spec))
    check_golden("pictured_structure.dot", rd.flow_dot(harness.store.flow_spec("pictured")))


def test_large_flow_clustered_and_collapsed_matches_golden() -> None:
    spec = synthetic_flow(n=200, width=20)
    check_golden("big_structure.dot", rd.flow_dot(spec))
    check_golden("big_structure_collapsed.dot", rd.flow_dot(spec, collapse=True))
    layered = synthetic_flow(n=200, width=20, prefixed=False)
    states = ["success"] * 185 + ["failed"] * 5 + ["upstream_failed"] * 10
    view = rd.RunView(
        run={"id": "f" * 36, "state": "failed"},
        spec=layered,
        steps={s.name: {"step": s.name, "state": st} for s, st in zip(layered.steps, states, strict=True)},
        attempts={},
    )
    check_golden("big_run_layers.dot", rd.run_dot(view))
    check_golden("big_run_collapsed.dot", rd.run_dot(view, collapse=True))


# -- lineage ------------------------------------------------------------------------------------
def test_lineage_pictures_match_golden(store: SqlStore, monkeypatch: pytest.MonkeyPatch) -> None:
    # run ids in a fixed order: the pictures sort by them
    numbers = iter(range(1, 100))
    monkeypatch.setattr("flowkit.store.sql.uuid.uuid4", lambda: uuid.UUID(int=next(numbers)))
    spec = store.flow_spec("orders")
    parent = store.create_run(spec, {}, actor="cron")
    run = store.create_run(spec, {}, actor="test", trigger="manual")
    child = store.create_run(spec, {}, actor="test")
    reader = store.create_run(spec, {}, actor="test")
    assert parent and run and child and reader
    with store.engine.begin() as conn:
        conn.execute(update(t.runs).where(t.runs.c.id == run).values(parent_run_id=parent))
        conn.execute(update(t.runs).where(t.runs.c.id == child).values(parent_run_id=run))
        conn.execute(update(t.runs).values(created_at=T0))
    uri = "s3://lake/orders/2024-05-01.parquet"
    attempt(
        store,
        run,
        "receive",
        1,
        "success",
        result={"order_id": "o-9"},
        datasets=(("file:///in/orders.csv", "read"), (uri, "write")),
    )
    attempt(store, reader, "receive", 1, "success", datasets=((uri, "read"),))
    with store.engine.begin() as conn:
        conn.execute(update(t.dataset_events).values(at=T0))
        conn.execute(update(t.attempts).values(dispatched_at=T0, started_at=T0, ended_at=T0))
        conn.execute(update(t.step_runs).values(started_at=T0, ended_at=T0))

    version = store.get_run(run)["version"]

    def ids(text: str) -> str:
        return text.replace(version, "VERSION")

    check_golden("orders_lineage.dot", ids(rd.lineage_dot(rd.load_lineage(store, run))))
    check_golden("orders_lineage.txt", ids(rd.lineage_text(rd.load_lineage(store, run))))
    check_golden("dataset_lineage.dot", ids(rd.dataset_lineage_dot(rd.load_dataset_lineage(store, uri))))
