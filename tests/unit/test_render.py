"""flowkit.render and the render/lineage/timeline/report commands.

Golden files: ``tests/golden/*.dot`` hold the DOT source of the orders flow and of one run
of it with known states and fixed times. After a deliberate change to the drawing,
regenerate them and review the diff::

    FLOWKIT_UPDATE_GOLDEN=1 .venv/bin/python -m pytest -p no:celery tests/unit/test_render.py

Runs are built through the real store on a temporary SQLite file; steps move with the
store's transaction API (as the scheduler and workers move them), then the test pins the
timestamps with SQL so that durations in the golden output never change.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from xml.etree import ElementTree

import pytest
from click.testing import CliRunner
from sqlalchemy import update

from flowkit import render as rd
from flowkit.render.common import POOL_BADGE
from flowkit.spec import FlowSpec, RetryPolicy, StepSpec
from flowkit.states import AttemptState, RunState, StepState
from flowkit.store import tables as t
from flowkit.store.sql import SqlStore

from ..conftest import service_missing

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "golden"
UPDATE_GOLDEN = os.environ.get("FLOWKIT_UPDATE_GOLDEN") == "1"
T0 = datetime(2024, 5, 1, 9, 0, 0, tzinfo=UTC)


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if UPDATE_GOLDEN:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"{path} is missing; create it with FLOWKIT_UPDATE_GOLDEN=1"
    assert text == path.read_text(), (
        f"{name} differs from the golden file; if the change is intended, rerun with "
        "FLOWKIT_UPDATE_GOLDEN=1 and review the diff"
    )


# -- building runs through the store ------------------------------------------------------------
def attempt(
    store: SqlStore,
    run_id: str,
    step: str,
    number: int,
    outcome: str,
    *,
    error: str | None = None,
    result: object = None,
    datasets: tuple[tuple[str, str], ...] = (),
    final: bool = True,
) -> None:
    """Dispatch, claim and finish one attempt, then settle the step, each by hand: these
    fixtures pin every state themselves, so the engine's own moves stay out of the way."""
    from flowkit.store.machine import task_id_for

    old = StepState.PENDING if number == 1 else StepState.UP_FOR_RETRY
    with store.tx("scheduler@test") as tx:
        assert tx.cas_step(
            run_id,
            step,
            [old],
            StepState.QUEUED,
            attempts=number,
            reason=f"attempt {number} dispatched",
            next_attempt_at=None,
        )
        tx.conn.execute(
            t.attempts.insert().values(
                run_id=run_id,
                step=step,
                number=number,
                task_id=task_id_for(run_id, step, number),
                state="queued",
                deliveries=0,
                dispatched_at=tx.now,
                interruptions=0,
            )
        )
    claim = store.claim_attempt(run_id, step, number, worker="w1@host", lost_after=30, max_deliveries=3)
    assert claim.outcome == "run"
    with store.tx("w1@host") as tx:
        assert (
            tx.end_attempt(run_id, step, number, state=AttemptState(outcome), worker="w1@host", error=error) is not None
        )
        if result is not None:
            store._store_result(tx, run_id, step, json.dumps(result))
        if outcome == "success" and datasets:
            tx.conn.execute(
                t.dataset_events.insert(),
                [
                    {"uri": u, "run_id": run_id, "step": step, "attempt": number, "direction": d, "at": tx.now}
                    for u, d in datasets
                ],
            )
        tx.event(
            "attempt_finished",
            run_id=run_id,
            step=step,
            attempt=number,
            old="running",
            new=outcome,
            reason=(error or "")[:500],
        )
    if outcome == "success":
        new, extra = StepState.SUCCESS, {}
    elif final:
        new, extra = StepState.FAILED, {}
    else:
        new, extra = StepState.UP_FOR_RETRY, {"next_attempt_at": T0 + timedelta(hours=1)}
    with store.tx("scheduler@test") as tx:
        assert tx.cas_step(run_id, step, [StepState.RUNNING], new, reason=f"attempt {number} {outcome}", **extra)


def settle(store: SqlStore, run_id: str, step: str, new: StepState) -> None:
    with store.tx("scheduler@test") as tx:
        assert tx.cas_step(run_id, step, [StepState.PENDING], new, reason="settled by the test")


def pin_times(
    store: SqlStore,
    run_id: str,
    times: dict[tuple[str, int], tuple[float, float, float]],
    run_span: tuple[float, float] | None,
) -> None:
    """Set attempt (dispatched, started, ended) and run times to T0 + seconds."""
    at = lambda s: T0 + timedelta(seconds=s)  # noqa: E731
    with store.engine.begin() as conn:
        for (step, number), (d, s, e) in times.items():
            conn.execute(
                update(t.attempts)
                .where(
                    t.attempts.c.run_id == run_id,
                    t.attempts.c.step == step,
                    t.attempts.c.number == number,
                )
                .values(dispatched_at=at(d), started_at=at(s), ended_at=at(e))
            )
        firsts: dict[str, float] = {}
        lasts: dict[str, float] = {}
        for (step, _n), (_d, s, e) in times.items():
            firsts[step] = min(firsts.get(step, s), s)
            lasts[step] = max(lasts.get(step, e), e)
        for step in firsts:
            conn.execute(
                update(t.step_runs)
                .where(
                    t.step_runs.c.run_id == run_id,
                    t.step_runs.c.step == step,
                )
                .values(started_at=at(firsts[step]), ended_at=at(lasts[step]))
            )
        values = {"created_at": at(-1)}
        if run_span:
            values.update(started_at=at(run_span[0]), ended_at=at(run_span[1]))
        conn.execute(update(t.runs).where(t.runs.c.id == run_id).values(**values))


def end_run(store: SqlStore, run_id: str, final: RunState) -> None:
    with store.tx("scheduler@test") as tx:
        assert tx.cas_run(run_id, [RunState.QUEUED], RunState.RUNNING)
    with store.tx("scheduler@test") as tx:
        assert tx.cas_run(run_id, [RunState.RUNNING], final, reason="test")


FAILED_RUN_TIMES = {
    ("receive", 1): (0.0, 0.1, 0.4),
    ("check_inventory", 1): (0.5, 0.6, 1.6),
    ("check_inventory", 2): (3.6, 3.7, 4.2),
    ("route", 1): (4.3, 4.4, 4.45),
    ("reserve", 1): (4.5, 4.6, 5.0),
    ("invoice", 1): (5.1, 5.2, 6.7),
}


def make_failed_run(store: SqlStore) -> str:
    """An orders run: a retried stock check, the reserve path, an invoice that fails."""
    spec = store.flow_spec("orders")
    run_id = store.create_run(
        spec,
        {
            "customer": 7,
            "lines": [{"item": "widget", "quantity": 2}],
            "express": False,
            "approval_threshold": 100.0,
            "fail_shipping": False,
            "workdir": "",
        },
        actor="test",
    )
    assert run_id
    attempt(store, run_id, "receive", 1, "success", result={"order_id": "o-1"})
    attempt(store, run_id, "check_inventory", 1, "failed", error="ConnectionError: stock service down", final=False)
    attempt(store, run_id, "check_inventory", 2, "success", result={"in_stock": True})
    attempt(store, run_id, "route", 1, "success", result=["reserve"])
    attempt(store, run_id, "reserve", 1, "success", result={"reserved": 2})
    settle(store, run_id, "backorder", StepState.SKIPPED)
    attempt(store, run_id, "invoice", 1, "failed", error='ValueError: price <missing> & "tax"')
    for step in ("review", "approve_large", "pack", "ship", "notify_customer", "update_accounting"):
        settle(store, run_id, step, StepState.UPSTREAM_FAILED)
    end_run(store, run_id, RunState.FAILED)
    pin_times(store, run_id, FAILED_RUN_TIMES, (0.0, 6.8))
    return run_id


def normalise(text: str, run_id: str) -> str:
    return text.replace(run_id, "RUN-ID").replace(run_id[:8], "RUN-ID8")


# -- golden DOT ----------------------------------------------------------------------------------
def test_orders_structure_matches_golden(store: SqlStore) -> None:
    dot = rd.flow_dot(store.flow_spec("orders"))
    check_golden("orders_structure.dot", dot)


def test_orders_run_matches_golden(store: SqlStore) -> None:
    run_id = make_failed_run(store)
    dot = rd.run_dot(rd.load_run_view(store, run_id))
    check_golden("orders_run_failed.dot", normalise(dot, run_id))


def test_dot_output_is_stable_across_loads(store: SqlStore) -> None:
    run_id = make_failed_run(store)
    first = rd.run_dot(rd.load_run_view(store, run_id))
    second = rd.run_dot(rd.load_run_view(store, run_id))
    assert first == second
    # nodes in flow order, then edges in flow order of the downstream step
    names = store.flow_spec("orders").step_names
    node_lines = [ln for ln in first.splitlines() if re.match(r'^  "[a-z_]+" \[', ln)]
    assert [ln.split('"')[1] for ln in node_lines] == names


# -- what the run graph says ---------------------------------------------------------------------
def test_run_graph_shows_states_attempts_retries_and_durations(store: SqlStore) -> None:
    run_id = make_failed_run(store)
    dot = rd.run_dot(rd.load_run_view(store, run_id))
    node = {ln.split('"')[1]: ln for ln in dot.splitlines() if re.match(r'^  "[a-z_]+" \[', ln)}
    assert rd.STEP_STATE_COLORS["success"] in node["receive"]
    assert "success · 1 attempt · 300ms" in node["receive"]
    # retried: two attempts, first failed; total time from first start to last end
    assert "success · 2 attempts · 3.6s" in node["check_inventory"]
    assert "retried 1x: #1 failed 1.0s, #2 success 500ms" in node["check_inventory"]
    assert rd.STEP_STATE_COLORS["failed"] in node["invoice"]
    assert rd.STEP_STATE_COLORS["upstream_failed"] in node["ship"]
    assert rd.STEP_STATE_COLORS["skipped"] in node["backorder"]
    # the branch chose reserve: the edge to backorder is drawn as not taken
    assert re.search(r'"route" -> "backorder" \[.*label="not taken"', dot)
    assert not re.search(r'"route" -> "reserve" \[.*not taken', dot)
    # the legend counts states
    for cell in ("success 4", "skipped 1", "failed 1", "upstream_failed 6"):
        assert f'COLOR="#1b2631">{cell}</FONT>' in dot


def test_kinds_pools_and_triggers_are_drawn_distinctly() -> None:
    @dataclass(frozen=True)
    class PooledStep(StepSpec):  # pools are not in the DSL yet; the renderer reads getattr(step, "pool")
        pool: str | None = None

    spec = FlowSpec(
        name="kinds",
        version="v",
        steps=(
            StepSpec("start", "m:start"),
            StepSpec("choose", "m:choose", upstream=("start",), kind="branch"),
            StepSpec("fan", "m:fan", upstream=("choose",), kind="map"),
            StepSpec("sign_off", "m:sign_off", upstream=("fan",), kind="approval"),
            StepSpec("wait_file", "m:wait_file", kind="sensor"),
            PooledStep("load", "m:load", upstream=("sign_off", "wait_file"), trigger="none_failed", pool="db"),
            StepSpec("odd", "m:odd", upstream=("load",), kind="quantum", trigger="all_done"),
        ),
    )
    dot = rd.flow_dot(spec)
    shape = {
        ln.split('"')[1]: re.search(r'shape="([a-z0-9]+)"', ln).group(1)  # type: ignore[union-attr]
        for ln in dot.splitlines()
        if re.match(r'^  "[a-z_]+" \[', ln)
    }
    assert shape == {
        "start": "box",
        "choose": "diamond",
        "fan": "box3d",
        "sign_off": "octagon",
        "wait_file": "ellipse",
        "load": "box",
        "odd": "box",
    }
    assert "pool db" in dot and POOL_BADGE in dot
    assert "kind quantum" in dot  # an unknown kind is named, drawn dotted
    assert re.search(r'"odd" \[[^\n]*style="filled,dotted"', dot)
    assert re.search(r'"sign_off" -> "load" \[.*style="dashed"', dot)  # none_failed
    assert re.search(r'"load" -> "odd" \[.*style="dotted"', dot)  # all_done
    assert re.search(r'"choose" -> "fan" \[.*arrowtail="odiamond"', dot)
    for legend in ("branch (diamond)", "map (stacked box)", "approval (octagon)", "sensor (dashed oval)", "pool badge"):
        assert legend in dot


def test_map_step_is_one_node_with_counts_by_state() -> None:
    spec = FlowSpec(
        name="m", version="v", steps=(StepSpec("split", "m:s"), StepSpec("fan", "m:f", upstream=("split",), kind="map"))
    )
    rows = {"split": {"step": "split", "state": "success"}, "fan": {"step": "fan", "state": "running"}}
    for i, state in enumerate(["success", "success", "failed", "running", "queued"]):
        rows[f"fan[{i}]"] = {"step": f"fan[{i}]", "state": state}
    view = rd.RunView(run={"id": "r" * 36, "state": "running"}, spec=spec, steps=rows, attempts={})
    dot = rd.run_dot(view)
    fan = next(ln for ln in dot.splitlines() if ln.startswith('  "fan" ['))
    assert "5 instances" in fan and "2 success" in fan and "1 failed" in fan and "1 running" in fan
    assert rd.STEP_STATE_COLORS["failed"] in fan  # coloured by its worst state
    assert '"fan[0]"' not in dot


def test_labels_and_ids_are_escaped() -> None:
    spec = FlowSpec(
        name='we"ird\\flow',
        version="v",
        steps=(
            StepSpec('a"b', "m:a", doc='says "hi" \\ <b>&amp;</b>\nnext line'),
            StepSpec("c<d>&e", "m:c", upstream=('a"b',)),
        ),
    )
    dot = rd.flow_dot(spec)
    assert 'digraph "we\\"ird\\\\flow" {' in dot
    assert '"a\\"b" -> "c<d>&e"' in dot
    assert "<B>c&lt;d&gt;&amp;e</B>" in dot and "<B>a&quot;b</B>" in dot
    assert "\n  next line" not in dot  # newlines in docs never break a DOT line


# -- large flows ---------------------------------------------------------------------------------
def synthetic_flow(n: int = 500, width: int = 50, prefixed: bool = True) -> FlowSpec:
    """n steps in layers of ``width``; each step after the first layer has two upstreams."""
    steps = []
    for i in range(n):
        layer, pos = divmod(i, width)
        name = f"stage{layer:02d}_t{pos:03d}" if prefixed else f"t{i:04d}"
        ups: tuple[str, ...] = ()
        if layer:
            a, b = (layer - 1) * width + pos, (layer - 1) * width + (pos * 7 + 3) % width
            ups = tuple(sorted({steps[a].name, steps[b].name}))
        kind = "branch" if pos == 0 else "task"
        steps.append(StepSpec(name, f"m:{name}", upstream=ups, kind=kind, retry=RetryPolicy(retries=1)))
    return FlowSpec(name="big", steps=tuple(steps), version="v")


@pytest.mark.usefixtures("dot_binary")
def test_500_step_flow_is_clustered_and_renders_under_2s() -> None:
    spec = synthetic_flow()
    started = time.perf_counter()
    dot = rd.flow_dot(spec)
    svg = rd.dot_to(dot, "svg")
    elapsed = time.perf_counter() - started
    print(f"500-step flow: DOT + dot -Tsvg in {elapsed:.3f} s, {len(svg)} bytes", file=sys.stderr)
    assert elapsed < 2.0
    assert dot.count('subgraph "cluster_') == 10  # grouped by name prefix: stage00 .. stage09
    assert 'label="stage03 (50 steps)"' in dot
    root = ElementTree.fromstring(svg)
    assert sum(1 for el in root.iter() if el.tag.endswith("}g") and el.get("class") == "node") == 500


@pytest.mark.usefixtures("dot_binary")
def test_500_step_run_clusters_by_layers_without_prefixes_and_collapses() -> None:
    spec = synthetic_flow(prefixed=False)
    states = ["success"] * 480 + ["failed"] * 5 + ["upstream_failed"] * 15
    view = rd.RunView(
        run={"id": "f" * 36, "state": "failed"},
        spec=spec,
        steps={s.name: {"step": s.name, "state": st} for s, st in zip(spec.steps, states, strict=True)},
        attempts={},
    )
    started = time.perf_counter()
    dot = rd.run_dot(view)
    rd.dot_to(dot, "svg")
    assert time.perf_counter() - started < 2.0
    assert 'subgraph "cluster_' in dot  # no usable name prefix: grouped by topological layers
    assert 'label="layer 0 (50 steps): 50 success"' in dot
    assert 'label="layer 9 (50 steps): 30 success, 5 failed, 15 upstream_failed"' in dot
    collapsed = rd.run_dot(view, collapse=True)
    assert "subgraph" not in collapsed and "->" in collapsed
    assert len(re.findall(r'^  "group:\d+" \[', collapsed, flags=re.M)) == 10
    last = next(ln for ln in collapsed.splitlines() if ln.startswith('  "group:9" ['))
    assert rd.STEP_STATE_COLORS["failed"] in last and "30 success, 5 failed, 15 upstream_failed" in last
    groups = rd.group_steps(spec)
    assert groups and all(len(v) <= rd.DEFAULT_MAX_GROUP for v in groups.values())
    assert sorted(n for v in groups.values() for n in v) == sorted(spec.step_names)


def test_small_flows_are_not_grouped(store: SqlStore) -> None:
    assert rd.group_steps(store.flow_spec("orders")) is None
    # the only cluster is the compensation steps' own (orders has two), never a group of steps
    assert re.findall(r'subgraph "([^"]+)"', rd.flow_dot(store.flow_spec("orders"))) == ["cluster_compensation"]


# -- timeline ------------------------------------------------------------------------------------
def test_timeline_has_one_bar_per_attempt_with_failures_and_retry_waits(store: SqlStore) -> None:
    run_id = make_failed_run(store)
    svg = rd.timeline_svg(rd.load_run_view(store, run_id))
    root = ElementTree.fromstring(svg)
    ns = "{http://www.w3.org/2000/svg}"
    bars = [el for el in root.iter(f"{ns}rect") if (el.get("class") or "").startswith("attempt")]
    assert len(bars) == len(FAILED_RUN_TIMES)
    failed = [b for b in bars if b.get("class") == "attempt failed"]
    assert len(failed) == 2 and all(b.get("fill") == "url(#fk-hatch)" for b in failed)
    waits = [el for el in root.iter(f"{ns}line") if el.get("class") == "retry-wait"]
    assert len(waits) == 1
    assert "waited 2.0s before attempt 2" in waits[0].find(f"{ns}title").text  # type: ignore[union-attr]
    # bars sit on a common time axis: check_inventory #2 starts at +3.7 s of 6.8 s
    x0 = float(next(b for b in bars if "receive" in b.find(f"{ns}title").text).get("x"))  # type: ignore
    second = next(b for b in bars if "check_inventory attempt 2" in b.find(f"{ns}title").text)  # type: ignore
    width = 1100 - 210 - 40
    assert float(second.get("x")) == pytest.approx(210 + width * 3.7 / 6.8, abs=0.2)  # type: ignore[arg-type]
    assert float(x0) == pytest.approx(210 + width * 0.1 / 6.8, abs=0.2)
    ticks = [el.text for el in root.iter(f"{ns}text") if el.get("class") == "tick"]
    assert ticks[:3] == ["+0s", "+1s", "+2s"]
    assert "ValueError: price &lt;missing&gt;" in svg  # errors in tooltips are escaped


def test_timeline_of_a_step_waiting_to_retry(store: SqlStore) -> None:
    spec = store.flow_spec("orders")
    run_id = store.create_run(spec, {}, actor="test")
    assert run_id
    attempt(store, run_id, "receive", 1, "success")
    attempt(store, run_id, "check_inventory", 1, "failed", error="boom", final=False)
    pin_times(store, run_id, {("receive", 1): (0, 0.5, 1), ("check_inventory", 1): (1, 1.5, 2)}, None)
    view = rd.load_run_view(store, run_id)
    svg = rd.timeline_svg(view, now=T0 + timedelta(seconds=30))
    assert "next attempt at 2024-05-01 10:00:00 UTC" in svg
    assert "up_for_retry" in rd.run_dot(view)


def test_a_run_that_has_not_started_still_draws(store: SqlStore) -> None:
    run_id = store.create_run(store.flow_spec("orders"), {}, actor="test")
    assert run_id
    view = rd.load_run_view(store, run_id)
    root = ElementTree.fromstring(rd.timeline_svg(view))
    assert not [el for el in root.iter() if (el.get("class") or "").startswith("attempt")]
    page = rd.report_html(view, graph_svg="<svg></svg>")
    assert page.count('<span class="state" style="background:#ffffff">pending</span>') == 12
    assert "pending 12" in rd.run_dot(view)


# -- lineage -------------------------------------------------------------------------------------
def test_lineage_shows_parents_children_results_and_datasets(store: SqlStore) -> None:
    spec = store.flow_spec("orders")
    parent = store.create_run(spec, {}, actor="cron")
    run = store.create_run(spec, {}, actor="test", trigger="manual")
    child = store.create_run(spec, {}, actor="test")
    reader = store.create_run(spec, {}, actor="test")
    assert parent and run and child and reader
    with store.engine.begin() as conn:  # nothing sets parent_run_id yet: write it as sub-flows will
        conn.execute(update(t.runs).where(t.runs.c.id == run).values(parent_run_id=parent))
        conn.execute(update(t.runs).where(t.runs.c.id == child).values(parent_run_id=run))
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

    lin = rd.load_lineage(store, run)
    text = rd.lineage_text(lin)
    assert f"triggered by runs (parent first):\n  {parent}" in text
    assert f"triggered runs:\n  {child}" in text
    assert 'receive                  success          {"order_id": "o-9"}' in text
    assert f"write {uri}  by step receive #1" in text
    assert "read  file:///in/orders.csv" in text
    assert f"read  {uri}  by orders run {reader[:8]} step receive #1" in text

    dot = rd.lineage_dot(lin)
    assert f'"run:{parent}" -> "run:{run}" [label="triggered"' in dot
    assert f'"run:{run}" -> "run:{child}" [label="triggered"' in dot
    assert f'"step:{run}/receive" -> "ds:{uri}" [color="#9a7d0a", label="wrote #1"]' in dot
    assert f'"ds:{uri}" -> "step:{reader}/receive"' in dot
    assert f'"step:{run}/receive" -> "result:{run}/receive"' in dot
    assert f'"trigger:{parent}"' in dot and "by cron" in dot  # the chain starts at the oldest trigger
    assert dot == rd.lineage_dot(rd.load_lineage(store, run))

    dlin = rd.load_dataset_lineage(store, uri)
    dtext = rd.dataset_lineage_text(dlin)
    assert dtext.splitlines()[0] == f"dataset {uri}: 1 writes, 1 reads in 2 runs"
    assert f"write orders           run {run}  step receive #1" in dtext
    ddot = rd.dataset_lineage_dot(dlin)
    assert f'subgraph "cluster_run:{run}"' in ddot and f'subgraph "cluster_run:{reader}"' in ddot


def test_lineage_names_a_parent_missing_from_the_store(store: SqlStore) -> None:
    run = store.create_run(store.flow_spec("orders"), {}, actor="test")
    assert run
    with store.engine.begin() as conn:
        conn.execute(update(t.runs).where(t.runs.c.id == run).values(parent_run_id="gone-1234"))
    lin = rd.load_lineage(store, run)
    assert "gone-1234  ?  unknown  (not in the store)" in rd.lineage_text(lin)
    assert "run gone-123 (not in the store)" in rd.lineage_dot(lin)


# -- HTML report ---------------------------------------------------------------------------------
def test_report_is_self_contained_and_escaped(store: SqlStore) -> None:
    run_id = make_failed_run(store)
    view = rd.load_run_view(store, run_id)
    page = rd.report_html(
        view,
        graph_svg='<?xml version="1.0"?>\n<!DOCTYPE svg PUBLIC "x" '
        '"http://www.w3.org/Graphics/SVG/1.1/DTD/svg11.dtd">\n<!-- c -->'
        '<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink">'
        "<g/></svg>",
        generated_at=T0,
    )
    assert page.startswith("<!DOCTYPE html>")
    assert "://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")  # nothing to fetch
    assert "<script" not in page and "<link" not in page and "<img" not in page
    assert "<svg><g/></svg>" in page  # prolog, doctype, comments and namespaces stripped
    assert 'class="flowkit-timeline"' in page
    for name in store.flow_spec("orders").step_names:
        assert f'<tr data-step="{name}">' in page
    assert "ValueError: price &lt;missing&gt; &amp; &quot;tax&quot;" in page
    assert "price <missing>" not in page
    for action in ("run_created", "attempt_started", "attempt_finished", "step_state", "run_state"):
        assert f"<td>{action}</td>" in page
    assert "w1@host" in page and "scheduler@test" in page


def test_report_without_graphviz_shows_the_dot_source(store: SqlStore, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    run_id = make_failed_run(store)

    def no_dot(source: str, fmt: str) -> bytes:
        raise rd.RenderError("the Graphviz `dot` program is not installed")

    monkeypatch.setattr("flowkit.render.report.dot_to", no_dot)  # where the report calls it
    page = rd.report_html(rd.load_run_view(store, run_id))
    assert "dot` program is not installed" in page and "digraph &quot;orders&quot;" in page


def test_module_imports_without_celery_graphviz_or_sqlalchemy() -> None:
    import subprocess

    code = (
        "import sys, time; t = time.perf_counter(); import flowkit.render; "
        "print(time.perf_counter() - t); "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'celery', 'graphviz', 'sqlalchemy', "
        "'kombu'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    seconds, heavy = out.splitlines()
    assert heavy == "[]"
    assert float(seconds) < 1.0


# -- the commands --------------------------------------------------------------------------------
def invoke(tmp_path: Path, dags: Path, *args: str):  # type: ignore[no-untyped-def]
    from flowkit.cli import main

    base = ["--database-url", f"sqlite:///{tmp_path}/s.db", "--dags-folder", str(dags)]
    return CliRunner().invoke(main, [*base, *args], catch_exceptions=False)


def test_render_command_writes_dot_to_stdout_and_files(store: SqlStore, tmp_path: Path, dags: Path) -> None:
    res = invoke(tmp_path, dags, "render", "orders")
    assert res.exit_code == 0, res.output
    assert res.stdout == rd.flow_dot(store.flow_spec("orders"))
    res = invoke(tmp_path, dags, "render", "orders", "-o", str(tmp_path / "o.gv"))
    assert res.exit_code == 0 and (tmp_path / "o.gv").read_text() == rd.flow_dot(store.flow_spec("orders"))
    assert f"wrote dot of orders to {tmp_path / 'o.gv'}" in res.stderr


def test_render_command_colours_a_run(store: SqlStore, tmp_path: Path, dags: Path) -> None:
    run_id = make_failed_run(store)
    res = invoke(tmp_path, dags, "render", "orders", "--run", run_id[:8], "--format", "dot")
    assert res.exit_code == 0
    assert normalise(res.stdout, run_id) == (GOLDEN / "orders_run_failed.dot").read_text()


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["render", "nope"], 1, 'error: no flow named "nope".'),
        (["render", "orders", "-o", "x.txt"], 2, "error: cannot tell the format of 'x.txt' from its suffix .txt"),
        (["render", "orders", "--run", "zzzz"], 1, "error: no run with id 'zzzz'"),
        (["lineage"], 2, "error: give either a RUN id or --dataset URI"),
        (["lineage", "--dataset", "s3://none"], 1, "error: no step run read or wrote dataset 's3://none'"),
        (["timeline", "zzzz", "-o", "t.pdf"], 2, "error: a timeline is written as .svg or .png; got 't.pdf'"),
        (["timeline", "zzzz", "-o", "t.png"], 1, "error: no run with id 'zzzz'"),
        (["report", "zzzz", "-o", "r.pdf"], 2, "error: a report is written as .html or .htm; got 'r.pdf'"),
        (["report", "zzzz", "-o", "r.html"], 1, "error: no run with id 'zzzz'"),
    ],
)
def test_bad_input_gets_one_line_errors(
    store: SqlStore, tmp_path: Path, dags: Path, args: list[str], code: int, message: str
) -> None:
    res = invoke(tmp_path, dags, *args)
    assert res.exit_code == code
    assert res.stderr.startswith(message)
    assert res.stderr.count("\n") == 1 and res.stdout == ""


def test_render_of_a_run_of_another_flow_is_refused(store: SqlStore, tmp_path: Path, dags: Path) -> None:
    run_id = make_failed_run(store)
    res = invoke(tmp_path, dags, "render", "telematics", "--run", run_id)
    assert res.exit_code == 1
    assert res.stderr == f"error: run {run_id} is a run of flow 'orders', not 'telematics'\n"


def test_lineage_timeline_and_report_commands(store: SqlStore, tmp_path: Path, dags: Path) -> None:
    run_id = make_failed_run(store)
    res = invoke(tmp_path, dags, "lineage", run_id[:8], "-o", str(tmp_path / "lin.dot"))
    assert res.exit_code == 0
    assert res.stdout.startswith(f"run {run_id}  flow orders")
    assert (tmp_path / "lin.dot").read_text().startswith(f'digraph "lineage {run_id}"')
    res = invoke(tmp_path, dags, "timeline", run_id[:8])
    assert res.exit_code == 0 and res.stdout.startswith("<svg")
    res = invoke(tmp_path, dags, "timeline", run_id[:8], "-o", str(tmp_path / "t.svg"))
    assert res.exit_code == 0 and ElementTree.parse(tmp_path / "t.svg").getroot().tag.endswith("svg")
    res = invoke(tmp_path, dags, "report", run_id[:8], "-o", str(tmp_path / "r.html"))
    assert res.exit_code == 0, res.output
    page = (tmp_path / "r.html").read_text()
    assert "ConnectionError: stock service down" in page and "upstream_failed" in page


@pytest.fixture
def rsvg_binary() -> None:
    """librsvg's `rsvg-convert` draws PNG timelines; a required system package in CI (.ci/run)."""
    if shutil.which("rsvg-convert") is None:
        service_missing("the librsvg `rsvg-convert` binary", FileNotFoundError("rsvg-convert"))


def test_timeline_is_written_as_png_too(store: SqlStore, tmp_path: Path, dags: Path, rsvg_binary: None) -> None:
    run_id = make_failed_run(store)
    res = invoke(tmp_path, dags, "timeline", run_id[:8], "-o", str(tmp_path / "t.png"))
    assert res.exit_code == 0, res.output
    assert res.stderr == f"wrote png timeline of run {run_id} to {tmp_path / 't.png'}\n"
    data = (tmp_path / "t.png").read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    width = int.from_bytes(data[16:20], "big")  # the IHDR chunk: the SVG's width
    assert width == 1100


def test_a_png_timeline_without_rsvg_convert_is_one_line_saying_why(
    store: SqlStore, tmp_path: Path, dags: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_id = make_failed_run(store)
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None)
    res = invoke(tmp_path, dags, "timeline", run_id[:8], "-o", str(tmp_path / "t.png"))
    assert res.exit_code == 1
    assert res.stderr == (
        "error: a PNG timeline needs rsvg-convert, which is not installed; install librsvg "
        "(e.g. apt-get install librsvg2-bin) or write the timeline as .svg\n"
    )
    assert not (tmp_path / "t.png").exists()
