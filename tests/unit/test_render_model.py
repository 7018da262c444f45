"""Pictures of the engine's real model: map instances, approvals, shell steps, compensation
and cancelled attempts, drawn from runs made with InlineHarness (tests/dags/render)."""

from __future__ import annotations

import re
import time
from pathlib import Path
from xml.etree import ElementTree

import pytest

from flowkit import render as rd
from flowkit.execution.attempt import run_attempt
from flowkit.store import approvals
from flowkit.store.sql import SqlStore
from flowkit.testing import InlineHarness

ROOT = Path(__file__).resolve().parents[2]
DAGS = str(ROOT / "tests" / "dags" / "render")
SECRET = "hunter2-secret"


@pytest.fixture
def harness(sqlite_store: SqlStore) -> InlineHarness:
    return InlineHarness(sqlite_store, DAGS)


def node_line(dot: str, name: str) -> str:
    return next(ln for ln in dot.splitlines() if ln.lstrip().startswith(f'"{name}" ['))


def decide(h: InlineHarness, run_id: str, *, approve: bool, by: str, reason: str) -> None:
    approvals.decide(h.store, run_id, "sign_off", approve=approve, by=by, reason=reason)
    h.scheduler.handle([{"type": "approval_decided", "run_id": run_id}])
    h.scheduler.grant()


def work_some(h: InlineHarness, count: int) -> None:
    """Run at most ``count`` dispatched attempts (InlineHarness.work runs them all)."""
    for _ in range(count):
        if not h.dispatcher.sent:
            return
        item = h.dispatcher.sent.pop(0)
        run_attempt(h.runtime, item.run_id, item.step.name, item.attempt)
        h.scheduler.handle(h.events.wait(0))
        h.scheduler.grant()


@pytest.fixture
def approved_run(harness: InlineHarness) -> str:
    """pictured: every instance succeeds, ann approves, the shell step fails, prepare's
    compensation succeeds and numbers' fails."""
    run_id = harness.trigger("pictured")
    harness.work()
    decide(harness, run_id, approve=True, by="ann", reason="numbers <look> right")
    assert harness.run_until_done(run_id) == "failed"
    return run_id


# -- flow structure ---------------------------------------------------------------------------
def test_structure_shows_map_approval_shell_and_compensation(harness: InlineHarness, dot_binary: None) -> None:
    spec = harness.store.flow_spec("pictured")
    dot = rd.flow_dot(spec)
    square = node_line(dot, "square")
    assert 'shape="box3d"' in square and "over numbers · max_parallel 2" in square
    sign_off = node_line(dot, "sign_off")
    assert 'shape="octagon"' in sign_off and "timeout 1h → reject" in sign_off
    publish = node_line(dot, "publish")
    assert 'shape="component"' in publish
    # the command, escaped for an HTML-like label and clipped
    assert 'FACE="Courier"' in publish and "$ echo &quot;publishing &lt;all&gt; &amp; more&quot;; e" in publish
    assert "…" in publish and "exit 3" not in publish.split("tooltip=")[0]
    # compensation: a dashed cluster, what undoes what, and the order (numbers' first)
    assert 'subgraph "cluster_compensation"' in dot and "undo the succeeded steps, last first" in dot
    assert 'style="rounded,filled,dashed"' in node_line(dot, "numbers:compensate")
    assert '"numbers:compensate" -> "prepare:compensate" [color="#943126", style="dashed"];' in dot
    undoes = re.findall(r'"(\w+):compensate" -> "(\w+)" \[arrowhead="empty"', dot)
    assert sorted(undoes) == [("numbers", "numbers"), ("prepare", "prepare")]
    assert "compensation (dashed, undoes)" in dot and "shell (command box)" in dot
    ElementTree.fromstring(rd.dot_to(dot, "svg"))  # lays out and is well-formed


# -- run graphs -------------------------------------------------------------------------------
def test_run_graph_shows_decision_compensation_and_outcome(
    harness: InlineHarness, approved_run: str, dot_binary: None
) -> None:
    view = rd.load_run_view(harness.store, approved_run)
    dot = rd.run_dot(view)
    assert f"pictured run {approved_run[:8]} · failed, compensation failed" in dot
    assert "outcome compensation failed" in dot and "compensation: 1 success, 1 failed" in dot
    sign_off = node_line(dot, "sign_off")
    assert "approved by ann: numbers &lt;look&gt; right" in sign_off
    assert rd.STEP_STATE_COLORS["success"] in sign_off
    assert "4 instances" in node_line(dot, "square") and "4 success" in node_line(dot, "square")
    assert rd.STEP_STATE_COLORS["failed"] in node_line(dot, "numbers:compensate")
    assert rd.STEP_STATE_COLORS["success"] in node_line(dot, "prepare:compensate")
    assert "compensation (compensation failed)" in dot
    ElementTree.fromstring(rd.dot_to(dot, "svg"))


def test_run_without_compensation_draws_none_and_shows_the_wait(harness: InlineHarness) -> None:
    run_id = harness.trigger("pictured")
    harness.work()
    view = rd.load_run_view(harness.store, run_id)
    dot = rd.run_dot(view)
    assert ":compensate" not in dot and "cluster_compensation" not in dot
    sign_off = node_line(dot, "sign_off")
    assert rd.STEP_STATE_COLORS["awaiting_approval"] in sign_off
    assert "awaiting a decision since" in sign_off and "reject at" in sign_off
    assert "outcome" not in dot
    svg = rd.timeline_svg(view)
    assert 'class="approval-wait"' in svg and "waited" in svg and "so far" in svg


def test_rejection_says_who_and_why(harness: InlineHarness) -> None:
    run_id = harness.trigger("pictured")
    harness.work()
    decide(harness, run_id, approve=False, by="bob", reason="wrong totals")
    assert harness.run_until_done(run_id) == "failed"
    view = rd.load_run_view(harness.store, run_id)
    assert "rejected by bob: wrong totals" in node_line(rd.run_dot(view), "sign_off")
    page = rd.report_html(view, graph_svg="<svg></svg>")
    assert "rejected by bob: wrong totals" in page


def test_failed_instance_is_counted_named_and_its_traceback_masked(harness: InlineHarness) -> None:
    run_id = harness.trigger("pictured", {"bad": 1})
    assert harness.run_until_done(run_id) == "failed"
    view = rd.load_run_view(harness.store, run_id)
    square = node_line(rd.run_dot(view), "square")
    assert "4 instances" in square and "3 success, 1 failed" in square and "first failed square[1]" in square
    assert rd.STEP_STATE_COLORS["failed"] in square
    page = rd.report_html(view, graph_svg="<svg></svg>")
    assert '<tr class="instance" data-step="square[1]">' in page
    block = re.search(r'<details data-step="square\[1\]" data-attempt="1">.*?</details>', page, re.S)
    assert block is not None and "<details open" not in page
    assert "Traceback (most recent call last)" in block.group(0) and "ValueError: element 1 is bad" in block.group(0)
    assert SECRET not in page and "token ***" in block.group(0)
    # the map step says why it failed, from its audit trail
    assert "1 of 4 instance(s) failed (the first: square[1])" in page


# -- timeline and report ----------------------------------------------------------------------
def test_timeline_groups_instances_and_puts_compensation_last(harness: InlineHarness, approved_run: str) -> None:
    view = rd.load_run_view(harness.store, approved_run)
    svg = rd.timeline_svg(view)
    root = ElementTree.fromstring(svg)
    labels = [
        ("  " if t.get("x") == "22" else "") + str(t.text)
        for t in root.iter("{http://www.w3.org/2000/svg}text")
        if t.get("x") in ("10", "22")
    ]
    lanes = labels[labels.index("prepare") :]
    assert lanes[:10] == [
        "prepare",
        "numbers",
        "square",
        "  square[0]",
        "  square[1]",
        "  square[2]",
        "  square[3]",
        "sign_off",
        "publish",
        "compensation: compensation failed",
    ]
    # numbers' compensation ran first (it undoes the later step)
    assert lanes[10:] == ["numbers:compensate", "prepare:compensate"]
    assert "4 instances: 4 success" in svg and 'class="map-span"' in svg
    assert "approved by ann: numbers &lt;look&gt; right" in svg and 'class="decision"' in svg
    assert "failed, compensation failed" in svg
    assert ">cancelled</text>" in svg and ">awaiting approval</text>" in svg


def test_report_holds_output_tail_and_tracebacks_collapsed(harness: InlineHarness, approved_run: str) -> None:
    page = rd.report_html(rd.load_run_view(harness.store, approved_run), graph_svg="<svg></svg>")
    assert '<span class="state" style="background:#e74c3c">compensation failed</span>' in page
    shell = re.search(r'<details data-step="publish" data-attempt="1">.*?</details>', page, re.S)
    assert shell is not None
    assert "publishing &lt;all&gt; &amp; more" in shell.group(0) and "key=***" in shell.group(0)
    comp = re.search(r'<details data-step="numbers:compensate" data-attempt="1">.*?</details>', page, re.S)
    assert comp is not None and "RuntimeError: refund API down" in comp.group(0)
    assert SECRET not in page
    assert '<tr class="heading"><td colspan="7">compensation: compensation failed</td></tr>' in page
    assert page.index('data-step="publish"') < page.index('data-step="numbers:compensate"')


def test_cancelled_attempt_has_its_colour(harness: InlineHarness) -> None:
    run_id = harness.trigger("big_map", {"n": 8})
    work_some(harness, 1)  # numbers: the map expands and its first instances are dispatched
    item = harness.dispatcher.sent.pop(0)
    claim = harness.store.claim_attempt(
        run_id, item.step.name, item.attempt, worker="w9", lost_after=30, max_deliveries=3
    )
    assert claim.outcome == "run"
    harness.act(harness.store.cancel_run(run_id, by="ops", reason="wrong input"))
    view = rd.load_run_view(harness.store, run_id)
    assert view.run["state"] == "cancelled"
    svg = rd.timeline_svg(view)
    assert 'class="attempt cancelled" x="' in svg and rd.ATTEMPT_STATE_COLORS["cancelled"] in svg
    dot = rd.run_dot(view)
    assert f"big_map run {run_id[:8]} · cancelled" in dot
    assert "cancelled" in node_line(dot, "square")


# -- a large map ------------------------------------------------------------------------------
def test_ten_thousand_instances_render_as_one_node_and_a_short_page(harness: InlineHarness, dot_binary: None) -> None:
    run_id = harness.trigger("big_map", {"n": 10_000, "bad": 3})
    work_some(harness, 40)  # numbers, then instances as max_parallel lets them go
    assert sum(harness.store.map_counts(run_id)["square"].values()) == 10_000

    started = time.perf_counter()
    view = rd.load_run_view(harness.store, run_id)
    dot = rd.run_dot(view)
    svg = rd.dot_to(dot, "svg")
    timeline = rd.timeline_svg(view)
    page = rd.report_html(view, graph_svg=svg)
    elapsed = time.perf_counter() - started
    assert elapsed < 5.0, f"rendering a 10,000-instance run took {elapsed:.1f}s"

    counts = harness.store.map_counts(run_id)["square"]
    square = node_line(dot, "square")
    assert "10000 instances" in square and f"{counts['pending']} pending" in square
    assert f"{counts['success']} success" in square and "1 failed" in square
    assert "square[" not in dot.replace("first failed square[3]", "")
    # only the first instances (and the failed one) get a lane or a row
    assert timeline.count('<text x="22"') + timeline.count('<text x="10"') < 25
    assert f"… {10_000 - len(view.instances['square'])} more" in timeline
    assert page.count('<tr class="instance"') == len(view.instances["square"]) <= 15
    assert re.search(r"\d+ more of 10000 instances \([^)]*1 failed[^)]*\)", page)
    assert "events of map instances are not listed" in page
    assert len(page) < 400_000
