"""The hot path's statements keep their primary-key probes under PostgreSQL's generic plans.

The worker's claim and finish are prepared statements; after five runs PostgreSQL may use a
generic plan, costed from the table's statistics. When those say "a few rows per run" (a big
run that is new, or rare among small ones), a list of step names (an array, or one
placeholder per name) was planned as a scan of every row of the run: O(steps in the run) per
step, which doubled the time of a 10,000-step run. Each name is now its own primary-key probe."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from flowkit.execution.attempt import run_attempt
from flowkit.store import pg_fast
from flowkit.store.sql import utcnow
from flowkit.testing import InlineHarness

DAGS = str(Path(__file__).resolve().parents[1] / "dags" / "plans")


def _generic_plan(conn: psycopg.Connection, text: str, params: dict[str, Any]) -> str:
    """EXPLAIN of ``text`` (psycopg placeholders) as a generic plan of a prepared statement."""
    names: list[str] = []

    def positional(m: re.Match[str]) -> str:
        if m.group(1) not in names:
            names.append(m.group(1))
        return f"${names.index(m.group(1)) + 1}"

    statement = re.sub(r"%[(](\w+)[)]s", positional, text)
    conn.execute("SET plan_cache_mode = force_generic_plan")
    conn.execute(f"PREPARE hot AS {statement}")
    args = ", ".join(sql.Literal(params[n]).as_string(conn) for n in names)
    try:
        return json.dumps(conn.execute(f"EXPLAIN (FORMAT JSON) EXECUTE hot({args})").fetchone()[0])
    finally:
        conn.execute("DEALLOCATE hot")


def _index_conds(plan: str, relation: str) -> list[str]:
    return [
        node["Index Cond"]
        for node in _nodes(json.loads(plan))
        if node.get("Relation Name") == relation and "Index Cond" in node
    ]


def _nodes(value: Any) -> list[dict[str, Any]]:
    if isinstance(value, dict):
        return [value] + [n for v in value.values() for n in _nodes(v)]
    if isinstance(value, list):
        return [n for v in value for n in _nodes(v)]
    return []


def _stale_statistics(conn: psycopg.Connection, h: InlineHarness, tables: tuple[str, ...]) -> None:
    """Statistics of ``tables`` taken after many tiny runs (tables of a few pages, two rows
    per run, nothing queued), kept as they are (no autovacuum) for what the test does next."""
    for table in tables:
        conn.execute(f"ALTER TABLE {table} SET (autovacuum_enabled = false)")
    for _ in range(60):
        assert h.run_until_done(h.trigger("tiny_plans")) == "success"
    for table in tables:
        conn.execute(f"ANALYZE {table}")


def _finish_params(run_id: str, step: str) -> dict[str, Any]:
    return {
        "run": run_id,
        "step": step,
        "num": 1,
        "worker": "w",
        "now": utcnow(),
        "value": None,
        "size": 0,
        "ds_uris": [],
        "ds_dirs": [],
        "eligible": [],
        "task_ids": [],
        "step_reason": "x",
        "track": True,
    }


def _claim_params(run_id: str, step: str) -> dict[str, Any]:
    return {
        "run": run_id,
        "step": step,
        "num": 1,
        "worker": "w",
        "now": utcnow(),
        "step_reason": "x",
        "att_reason": "x",
    }


def test_claim_and_finish_probe_by_step_under_stale_statistics(pg_url, open_store):
    store = open_store(pg_url)
    store.upgrade()
    h = InlineHarness(store, DAGS)
    with psycopg.connect(pg_url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as conn:
        _stale_statistics(conn, h, ("step_runs", "results"))
        run_id = h.trigger("wide_plans")  # 402 rows of one run, unknown to the statistics
        assert h.run_until_done(run_id) == "success"

        params = _finish_params(run_id, "m001")
        bumps, prepared = pg_fast._bump_downstream(["join", "m002", "m003"], params)
        assert prepared
        finish = _generic_plan(conn, pg_fast._fill(pg_fast.FINISH_SUCCESS, "{dn}", bumps), params)
        # every lookup of step_runs by its run also names the step (a probe, not a scan of the
        # run): the step's own row and its three downstream rows
        by_run = [c for c in _index_conds(finish, "step_runs") if "run_id" in c]
        assert len(by_run) == 4 and all("step" in c for c in by_run), finish

        params = _claim_params(run_id, "join")
        upstream, prepared = pg_fast._upstream_results(["m001", "m002", "m003"], params)
        assert prepared
        claim = _generic_plan(conn, pg_fast._fill(pg_fast.CLAIM, "{upstream}", upstream), params)
        conds = _index_conds(claim, "results")
        assert len(conds) == 3 and all("step" in c for c in conds), claim


def test_a_long_name_list_is_one_array_planned_with_its_values():
    names = [f"s{i}" for i in range(pg_fast.LISTED_NAMES + 1)]
    for build, key in ((pg_fast._bump_downstream, "downs"), (pg_fast._upstream_results, "ups")):
        params: dict[str, Any] = {}
        text, prepared = build(names, params)
        assert not prepared and params == {key: names} and f"ANY(CAST(%({key})s" in text
        params = {}
        text, prepared = build(names[:3], params)
        assert prepared and key not in params and len(params) == 3 and text.count(" UNION ALL ") == 2
    assert pg_fast._bump_downstream([], {}) == (
        "dn AS (SELECT step, state, attempts, n_up, ok_up, bad_up, skip_up FROM step_runs WHERE FALSE),",
        True,
    )


def test_the_claim_and_finish_find_their_rows_by_primary_key_under_a_queued_backlog(pg_url, open_store):
    """The compare-and-set on state must not steer the planner to a state index: that index
    holds every queued attempt of every run (a backlog of thousands), and a claim that
    scanned it cost O(queued) per step (seen: 847 rows filtered per claim in a fan-out)."""
    store = open_store(pg_url)
    store.upgrade()
    h = InlineHarness(store, DAGS)
    with psycopg.connect(pg_url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as conn:
        # Given statistics taken when nothing was queued or running, and then a fan-out whose
        # 400 members are queued at once
        _stale_statistics(conn, h, ("attempts", "step_runs"))
        run_id = h.trigger("wide_plans")
        root = h.dispatcher.sent.pop(0)
        run_attempt(h.runtime, root.run_id, root.step.name, root.attempt)
        h.scheduler.handle(h.events.wait(0))
        h.scheduler.grant()
        queued = conn.execute(
            "SELECT count(*) FROM attempts WHERE run_id = %s AND state = 'queued'", (run_id,)
        ).fetchone()[0]
        assert queued >= 300

        params = _claim_params(run_id, "m001")
        upstream, _ = pg_fast._upstream_results(["root"], params)
        claim = _generic_plan(conn, pg_fast._fill(pg_fast.CLAIM, "{upstream}", upstream), params)
        params = _finish_params(run_id, "m001")
        bumps, _ = pg_fast._bump_downstream(["join"], params)
        finish = _generic_plan(conn, pg_fast._fill(pg_fast.FINISH_SUCCESS, "{dn}", bumps), params)
    # Then every lookup of attempts and step_runs is an equality on the whole primary key
    for plan in (claim, finish):
        for relation, keys in (("attempts", ("run_id", "step", "number")), ("step_runs", ("run_id", "step"))):
            conds = _index_conds(plan, relation)
            assert conds and all(all(k in c for k in keys) and "state" not in c for c in conds), plan
