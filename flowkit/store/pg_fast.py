"""PostgreSQL's one-statement forms of the worker's claim and successful finish. Not public API.

The generic path (``worker_ops``) takes a round trip per statement: about 5 for a claim and 9
for a finish. On PostgreSQL, data-modifying CTEs let one statement do the same writes, each
still a compare-and-set with its audit event, so a step costs about 4 round trips in all
(docs/design-notes.md#low-per-step-overhead). What cannot be decided in SQL (a skip
cascade, a fan-out beyond the fast-follow budget, the run's end, anything but success) goes
through the generic machine in the same transaction, so every outcome keeps one code path
for its rules.
"""

from __future__ import annotations

import functools
import json
import re
from typing import Any

from sqlalchemy import Connection

from ..states import RunState, StepState, can_transition
from .hot import HotConnection
from .machine_types import claimed_reason, dispatched_reason, started_reason, succeeded_reason
from .trigger_ops import DATASET_INBOX


def _sql_text(value: str) -> str:
    """``value`` as an SQL string literal (the audit reasons of :mod:`.machine_types`, written
    into the statements' text so that their parameters stay as they are)."""
    if "%" in value or ":" in value:  # would read as a placeholder
        raise ValueError(f"{value!r} cannot be written into a statement's text")
    return "'" + value.replace("'", "''") + "'"


def _driver_sql(sql: str) -> str:
    """``:name`` placeholders to psycopg's ``%(name)s``: these statements run on the driver
    connection under SQLAlchemy's, skipping its per-statement work (a third of the claim's
    CPU in a profile of the worker)."""
    return re.sub(r"(?<![:\w]):([a-z_]+)", r"%(\1)s", sql)


def _one(
    conn: Connection | HotConnection, sql: str, params: dict[str, Any], *, prepare: bool | None = None
) -> tuple[Any, ...] | None:
    """Run ``sql`` on ``conn``'s psycopg connection: a worker's own autocommit connection
    (:mod:`.hot`), or SQLAlchemy's, inside whatever transaction it has.

    A driver error is handed on as SQLAlchemy's own execution would: a lost connection is
    invalidated or closed (the next statement opens a new one; callers retry until the
    store answers) and every error is a ``DBAPIError``. Without that, a database restart
    left dead connections in the pool and every later claim failed on them.
    """
    import psycopg
    from sqlalchemy.exc import DBAPIError

    raw: Any = conn.raw if isinstance(conn, HotConnection) else conn.connection.driver_connection
    native, names = _native(sql)
    try:
        with psycopg.RawCursor(raw) as cur:
            cur.execute(native, [params[n] for n in names], prepare=prepare)
            row: tuple[Any, ...] | None = cur.fetchone()
            return row
    except psycopg.Error as exc:
        if isinstance(conn, HotConnection):
            lost = conn.lost(exc)
        else:
            lost = conn.dialect.is_disconnect(exc, conn.connection.dbapi_connection, None)  # type: ignore[arg-type]
            if lost:
                conn.invalidate(exc)
        raise DBAPIError.instance(
            sql, params, exc, psycopg.Error, connection_invalidated=lost, dialect=conn.dialect
        ) from exc


@functools.lru_cache(maxsize=256)
def _native(sql: str) -> tuple[str, tuple[str, ...]]:
    """``%(name)s`` placeholders to PostgreSQL's own ``$1``, and the names in that order.

    psycopg parses a query's placeholders on every execution once the text is over 4 KiB
    (its cache's limit): the finish statement is, and parsing it was a third of the finish's
    client CPU. A RawCursor takes the native form as it is."""
    names: list[str] = []

    def number(m: re.Match[str]) -> str:
        if m.group(1) not in names:
            names.append(m.group(1))
        return f"${names.index(m.group(1)) + 1}"

    native = re.sub(r"%\(([a-z_][a-z0-9_]*)\)s", number, sql).replace("%%", "%")
    return native, tuple(names)


@functools.lru_cache(maxsize=64)
def _fill(sql: str, marker: str, predicate: str) -> str:
    """``sql`` with its ``marker`` replaced: one text per list length, so each is prepared once."""
    return sql.replace(marker, predicate)


#: Up to this many step names are looked up one primary-key probe each; a longer list (a
#: fan-out's root, once per run) is one array, planned with its values (prepare=False).
LISTED_NAMES = 8

# Why one probe per name: the statements are prepared, and after five runs PostgreSQL may use
# a generic plan, costed from the statistics' rows per run. When those say "a few" (a big run
# that is new, or rare among small ones), ``run_id = $1 AND step = ANY($2)``, even with one
# placeholder per name, was planned as a scan of every row of the run (10,000 in a
# 10,000-step flow) per step. An equality on the whole primary key is always a unique probe.


def _upstream_results(names: list[str], params: dict[str, Any]) -> tuple[str, bool]:
    """SQL of the JSON array of ``[step, value]`` of these upstreams' results, and whether the
    statement may be prepared (adds the names to ``params``)."""
    if len(names) > LISTED_NAMES:
        params["ups"] = names
        return (
            "(SELECT json_agg(json_build_array(x.step, x.value)) FROM results x "
            "WHERE x.run_id = %(run)s AND x.step = ANY(CAST(%(ups)s AS text[])))"
        ), False
    if not names:
        return "NULL", True
    probes = []
    for i, name in enumerate(names):
        params[f"up{i}"] = name
        probes.append(f"SELECT step, value FROM results WHERE run_id = %(run)s AND step = %(up{i})s")
    return f"(SELECT json_agg(json_build_array(x.step, x.value)) FROM ({' UNION ALL '.join(probes)}) x)", True


_BUMP_SET = """
    ok_up = ok_up + 1,
    state = CASE WHEN step = ANY(CAST(%(eligible)s AS text[])) AND state = 'pending' AND attempts = 0
                      AND ok_up + 1 = n_up AND bad_up = 0 AND skip_up = 0
                 THEN 'queued' ELSE state END,
    attempts = CASE WHEN step = ANY(CAST(%(eligible)s AS text[])) AND state = 'pending' AND attempts = 0
                         AND ok_up + 1 = n_up AND bad_up = 0 AND skip_up = 0
                    THEN 1 ELSE attempts END,
    updated_at = %(now)s"""
_BUMP_RETURNING = "RETURNING step, state, attempts, n_up, ok_up, bad_up, skip_up"


def _bump_downstream(names: list[str], params: dict[str, Any]) -> tuple[str, bool]:
    """The CTEs that bump the downstream steps' ok_up (ending in ``dn``: every bumped row after
    the statement), and whether the statement may be prepared (adds the names to ``params``)."""
    if len(names) > LISTED_NAMES:
        params["downs"] = names
        return (
            f"dn AS (UPDATE step_runs SET {_BUMP_SET} WHERE run_id = %(run)s AND "
            f"step = ANY(CAST(%(downs)s AS text[])) AND EXISTS (SELECT 1 FROM st) {_BUMP_RETURNING}),"
        ), False
    if not names:
        return ("dn AS (SELECT step, state, attempts, n_up, ok_up, bad_up, skip_up FROM step_runs WHERE FALSE),"), True
    ctes = []
    for i, name in enumerate(names):
        params[f"down{i}"] = name
        ctes.append(
            f"dn{i} AS (UPDATE step_runs SET {_BUMP_SET} WHERE run_id = %(run)s AND "
            f"step = %(down{i})s AND EXISTS (SELECT 1 FROM st) {_BUMP_RETURNING}),"
        )
    union = " UNION ALL ".join(f"SELECT * FROM dn{i}" for i in range(len(names)))
    return "\n".join(ctes) + f"\ndn AS ({union}),", True


# Why ``(state = 'queued') IS TRUE``: every compare-and-set on a state also names the row's
# whole primary key, and the state test is written so that no index can serve it. The state
# indexes hold every queued (or running) row of every run; a generic plan costed from
# statistics that saw few such rows picked ix_attempts_state over the primary key, and each
# claim then walked the whole backlog of queued attempts (847 rows in one fan-out's claim).

CLAIM = _driver_sql("""
WITH a AS (
  UPDATE attempts SET state = 'running', deliveries = deliveries + 1, worker = :worker,
         started_at = :now, heartbeat_at = :now
  WHERE run_id = :run AND step = :step AND number = :num AND (state = 'queued') IS TRUE
  RETURNING deliveries),
s AS (
  UPDATE step_runs SET state = 'running', started_at = :now, updated_at = :now
  WHERE run_id = :run AND step = :step AND (state = 'queued') IS TRUE AND EXISTS (SELECT 1 FROM a)
  RETURNING step),
e AS (
  INSERT INTO events (run_id, step, attempt, at, actor, action, old_state, new_state, reason)
  SELECT :run, :step, NULL, :now, :worker, 'step_state', 'queued', 'running', :step_reason FROM s
  UNION ALL
  SELECT :run, :step, :num, :now, :worker, 'attempt_started', 'queued', 'running', :att_reason FROM a)
SELECT a.deliveries, r.flow_name, r.version, r.params,
       {upstream} AS upstream,
       (SELECT m.map_item FROM step_runs m WHERE m.run_id = :run AND m.step = :step) AS item
FROM a JOIN runs r ON r.id = :run
""")


def claim(
    conn: Connection | HotConnection, *, run_id: str, step: str, number: int, worker: str, now: Any, upstream: list[str]
) -> tuple[int, str, str, dict[str, Any], dict[str, Any], Any] | None:
    """Queued -> running for ``worker`` in one statement; None when the attempt was not
    queued (a redelivery, a takeover: the generic path tells those apart). The last item is
    the element of a map step's instance (None for a plain step)."""
    params: dict[str, Any] = {
        "run": run_id,
        "step": step,
        "num": number,
        "worker": worker,
        "now": now,
        "step_reason": started_reason(number, worker),
        "att_reason": claimed_reason(worker),
    }
    upstream_sql, prepare = _upstream_results(upstream, params)
    row = _one(conn, _fill(CLAIM, "{upstream}", upstream_sql), params, prepare=None if prepare else False)
    if row is None:
        return None
    deliveries, flow_name, version, run_params, upstream_rows, item = row
    results = {name: json.loads(value) for name, value in (upstream_rows or [])}
    return (
        deliveries,
        flow_name,
        version,
        json.loads(run_params),
        results,
        json.loads(item) if item is not None else None,
    )


#: The attempt's end, its slots given back, its result and datasets: shared by both finishes.
_FINISH_ATTEMPT = """
WITH a AS (
  UPDATE attempts SET state = 'success', ended_at = :now, error = NULL, traceback = NULL,
         retry_delay = NULL
  WHERE run_id = :run AND step = :step AND number = :num AND (state = 'running') IS TRUE
        AND worker = :worker
  RETURNING holds),
rel AS (
  UPDATE limits l SET used = l.used - CAST(h.value->>1 AS integer), updated_at = :now
  FROM a, json_array_elements(CAST(COALESCE(a.holds, '[]') AS json)) h
  WHERE l.key = h.value->>0
  RETURNING l.key),
res AS (
  INSERT INTO results (run_id, step, value, size, created_at)
  SELECT :run, :step, CAST(:value AS text), :size, :now FROM a WHERE CAST(:value AS text) IS NOT NULL
  ON CONFLICT (run_id, step) DO UPDATE
    SET value = EXCLUDED.value, size = EXCLUDED.size, created_at = EXCLUDED.created_at
  RETURNING 1),
ds AS (
  INSERT INTO dataset_events (uri, run_id, step, attempt, direction, at)
  SELECT d.uri, :run, :step, :num, d.dir, :now
  FROM a, unnest(CAST(:ds_uris AS text[]), CAST(:ds_dirs AS text[])) AS d(uri, dir)
  RETURNING id, uri, run_id, step, direction),
trig AS (
  -- the trigger inbox rows of the writes, in their statement (store/trigger_ops.py)
  {trigger_inbox}
  RETURNING 1),
st AS (
  UPDATE step_runs SET state = 'success', ended_at = :now, updated_at = :now
  WHERE run_id = :run AND step = :step AND (state = 'running') IS TRUE AND EXISTS (SELECT 1 FROM a)
  RETURNING step),
""".replace("{trigger_inbox}", DATASET_INBOX.format(source="ds", where="").replace("\n", "\n  "))

FINISH_SUCCESS = _driver_sql(
    _FINISH_ATTEMPT
    + """{dn}
q AS (
  SELECT dn.step, ids.task_id FROM dn
  JOIN unnest(CAST(:eligible AS text[]), CAST(:task_ids AS text[])) AS ids(step, task_id)
    ON ids.step = dn.step
  WHERE dn.state = 'queued' AND dn.attempts = 1 AND dn.ok_up = dn.n_up),
ins AS (
  -- a step queued before this statement (a one_success join its first upstream queued)
  -- already has attempt 1: nothing is inserted for it, and it is not reported as queued
  -- heartbeat_at: this worker publishes them, and clears it once it has (worker.py)
  INSERT INTO attempts (run_id, step, number, task_id, state, deliveries, dispatched_at, heartbeat_at,
                        interruptions)
  SELECT :run, q.step, 1, q.task_id, 'queued', 0, :now, :now, 0 FROM q
  ON CONFLICT DO NOTHING
  RETURNING step),
ready AS (
  SELECT 1 FROM dn WHERE dn.state = 'pending' AND dn.ok_up + dn.bad_up + dn.skip_up >= dn.n_up),
rn AS (
  -- followups: this statement commits alone and made a step ready that it did not queue; the
  -- worker's next transaction decides it (worker_ops), the sweep's reconcile resets the mark
  UPDATE runs SET steps_left = steps_left - 1,
         followups = followups + CASE WHEN CAST(:track AS boolean) AND EXISTS (SELECT 1 FROM ready)
                                      THEN 1 ELSE 0 END
  WHERE id = :run AND EXISTS (SELECT 1 FROM st)
  RETURNING steps_left),
ev AS (
  INSERT INTO events (run_id, step, attempt, at, actor, action, old_state, new_state, reason)
  SELECT :run, :step, :num, :now, :worker, 'attempt_finished', 'running', 'success', '' FROM a
  UNION ALL
  SELECT :run, :step, NULL, :now, :worker, 'step_state', 'running', 'success', :step_reason FROM st
  UNION ALL
  SELECT :run, ins.step, 1, :now, :worker, 'step_state', 'pending', 'queued', {queued_reason}
  FROM ins)
SELECT (SELECT count(*) FROM a) AS won, (SELECT holds FROM a) AS holds,
       (SELECT count(*) FROM st) AS stepped, (SELECT steps_left FROM rn) AS steps_left,
       (SELECT json_agg(json_build_array(step, state, n_up, ok_up, bad_up, skip_up)) FROM dn) AS downs,
       (SELECT json_agg(step) FROM ins) AS queued,
       CAST(:track AS boolean) AND EXISTS (SELECT 1 FROM ready) AND EXISTS (SELECT 1 FROM rn) AS followup
"""
).replace("{queued_reason}", _sql_text(dispatched_reason(1)))


def finish_success(
    conn: Connection | HotConnection,
    *,
    run_id: str,
    step: str,
    number: int,
    worker: str,
    now: Any,
    result_json: str | None,
    datasets: list[tuple[str, str]],
    downstream: list[str],
    eligible: list[str],
    task_ids: list[str],
    track_followup: bool = False,
) -> dict[str, Any] | None:
    """Running -> success with its result, slots given back, downstream counters bumped and the
    ``eligible`` downstream steps that became ready queued, in one statement.

    Returns None if this worker no longer holds the attempt; else ``holds`` (given back),
    ``stepped`` (the step moved to success), ``steps_left``, ``downs`` (each bumped
    downstream row, after the statement), ``queued`` (names given a first attempt) and
    ``followup``: with ``track_followup`` (the statement commits alone), whether it made a
    step ready that it did not queue (counted in ``runs.followups``, which the sweep's
    reconcile resets after deciding every pending step of the run).
    A ready step that has attempts already (an operator retried it) is not queued here: the
    generic machine gives it its next number, in the same transaction.
    """
    params: dict[str, Any] = {
        "run": run_id,
        "step": step,
        "num": number,
        "worker": worker,
        "now": now,
        "value": result_json,
        "size": len(result_json.encode()) if result_json is not None else 0,
        "ds_uris": [u for u, _ in datasets],
        "ds_dirs": [d for _, d in datasets],
        "eligible": eligible,
        "task_ids": task_ids,
        "step_reason": succeeded_reason(number),
        "track": track_followup,
    }
    bumps, prepare = _bump_downstream(downstream, params)
    row = _one(conn, _fill(FINISH_SUCCESS, "{dn}", bumps), params, prepare=None if prepare else False)
    assert row is not None  # the statement ends in a SELECT of aggregates: always one row
    won, holds, stepped, steps_left, downs, queued, followup = row
    if not won:
        return None
    return {
        "holds": holds,
        "stepped": bool(stepped),
        "steps_left": steps_left,
        "downs": downs or [],
        "queued": queued or [],
        "followup": bool(followup),
    }


FINISH_INSTANCE_SUCCESS = _driver_sql(
    _FINISH_ATTEMPT
    + """p AS (
  UPDATE step_runs SET map_left = map_left - 1, updated_at = :now
  WHERE run_id = :run AND step = :parent AND (state = 'running') IS TRUE AND EXISTS (SELECT 1 FROM st)
  RETURNING map_left, map_failed, map_next, map_total),
ev AS (
  INSERT INTO events (run_id, step, attempt, at, actor, action, old_state, new_state, reason)
  SELECT :run, :step, :num, :now, :worker, 'attempt_finished', 'running', 'success', '' FROM a
  UNION ALL
  SELECT :run, :step, NULL, :now, :worker, 'step_state', 'running', 'success', :step_reason FROM st)
SELECT (SELECT count(*) FROM a) AS won, (SELECT holds FROM a) AS holds,
       (SELECT json_build_array(map_left, map_failed, map_next, map_total) FROM p) AS parent
"""
)


def finish_instance_success(
    conn: Connection | HotConnection,
    *,
    run_id: str,
    step: str,
    parent: str,
    number: int,
    worker: str,
    now: Any,
    result_json: str | None,
    datasets: list[tuple[str, str]],
) -> dict[str, Any] | None:
    """Running -> success for an instance of map step ``parent``, with its result and slots
    given back, and the map step's count of instances left decremented, in one statement.

    Returns None if this worker no longer holds the attempt; else ``holds`` (given back) and
    ``parent``: the map step's (map_left, map_failed, map_next, map_total) after the count,
    or None if the map step is not running.
    """
    row = _one(
        conn,
        FINISH_INSTANCE_SUCCESS,
        {
            "run": run_id,
            "step": step,
            "parent": parent,
            "num": number,
            "worker": worker,
            "now": now,
            "value": result_json,
            "size": len(result_json.encode()) if result_json is not None else 0,
            "ds_uris": [u for u, _ in datasets],
            "ds_dirs": [d for _, d in datasets],
            "step_reason": succeeded_reason(number),
        },
    )
    assert row is not None  # the statement ends in a SELECT of aggregates: always one row
    won, holds, parent_counts = row
    if not won:
        return None
    return {"holds": holds, "parent": tuple(parent_counts) if parent_counts is not None else None}


# -- the moves these statements encode, checked against flowkit.states ------------------------

#: An attempt's moves (flowkit.states keeps the step and run tables): a claim starts a queued
#: one, a finish ends a running one (or a queued one whose claim was lost: FINISHABLE_ATTEMPT).
ATTEMPT_MOVES: dict[str, frozenset[str]] = {
    "queued": frozenset({"running", "success", "failed", "skipped", "cancelled"}),
    "running": frozenset({"queued", "success", "failed", "skipped", "cancelled"}),
}

_UPDATE = re.compile(r"UPDATE (\w+)(?: \w+)? SET (.*?) WHERE (.*?)(?=RETURNING|\),\s*\n|\)\s*$)", re.S)
_SET_CASE = re.compile(r"CASE WHEN (.*) THEN '(\w+)' ELSE state END", re.S)
_SET_LITERAL = re.compile(r"'(\w+)'")
_GUARD = re.compile(r"(?<![\w.])state = '(\w+)'")
_AUDIT = re.compile(r"'(step_state|run_state|attempt_\w+)', '(\w+)', '(\w+)'")


def statements() -> dict[str, str]:
    """Every text this module runs, each variant of its generated parts filled in."""
    out: dict[str, str] = {}
    for size in (0, 1, LISTED_NAMES + 1):
        names = [f"n{i}" for i in range(size)]
        out[f"claim/{size}"] = _fill(CLAIM, "{upstream}", _upstream_results(names, {})[0])
        out[f"finish/{size}"] = _fill(FINISH_SUCCESS, "{dn}", _bump_downstream(names, {})[0])
    out["finish_instance"] = FINISH_INSTANCE_SUCCESS
    return out


def transition_literals(sql: str) -> list[tuple[str, str, str]]:
    """The state moves ``sql`` writes, as (table, old, new): each ``UPDATE ... SET state = 'new'``
    with its ``state = 'old'`` guard, including the ``CASE WHEN ... state = 'old' ... THEN
    'new' ELSE state END`` form; and the moves its audit events record, as (``events:`` +
    action, old, new). A state write with no guard is reported with old ``*``."""
    moves: list[tuple[str, str, str]] = []
    for table, sets, where in _UPDATE.findall(sql):
        for column, value in _assignments(sets):
            if column != "state":
                continue
            if (case := _SET_CASE.fullmatch(value)) is not None:
                guards, new = _GUARD.findall(case.group(1)), case.group(2)
            elif (literal := _SET_LITERAL.fullmatch(value)) is not None:
                guards, new = _GUARD.findall(where), literal.group(1)
            else:
                guards, new = [], value
            moves += [(table, old, new) for old in guards] or [(table, "*", new)]
    moves += [(f"events:{action}", old, new) for action, old, new in _AUDIT.findall(sql)]
    return moves


def _assignments(sets: str) -> list[tuple[str, str]]:
    """``a = x, b = CASE ... END`` as [(a, x), (b, CASE ... END)]: split at the commas outside
    parentheses."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(sets):
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if ch == "," and depth == 0:
            parts.append(sets[start:i])
            start = i + 1
    parts.append(sets[start:])
    out = []
    for part in parts:
        column, _, value = part.strip().partition("=")
        out.append((column.strip(), " ".join(value.split())))
    return out


def move_problems(moves: list[tuple[str, str, str]]) -> list[str]:
    """The moves flowkit.states does not allow (steps, runs) or :data:`ATTEMPT_MOVES` (attempts)."""
    bad: list[str] = []
    for table, old, new in moves:
        kind = table.split(":", 1)[-1]
        if old == "*":
            ok = False
        elif table in ("step_runs", "events:step_state"):
            ok = can_transition(StepState(old), StepState(new))
        elif table in ("runs", "events:run_state"):
            ok = can_transition(RunState(old), RunState(new))
        elif table == "attempts" or kind.startswith("attempt_"):
            ok = new in ATTEMPT_MOVES.get(old, frozenset())
        else:
            ok = False
        if not ok:
            bad.append(f"{table}: {old} -> {new}")
    return bad


def _check_moves() -> None:
    """At import: every move the statements write and audit is one flowkit.states allows, and
    every step move is audited, so the fast path cannot drift from the machine unseen."""
    for name, sql in statements().items():
        moves = transition_literals(sql)
        problems = move_problems(moves)
        written = {(o, n) for table, o, n in moves if table == "step_runs"}
        audited = {(o, n) for table, o, n in moves if table == "events:step_state"}
        problems += [f"step_runs: {o} -> {n} is not audited" for o, n in sorted(written - audited)]
        if problems:
            raise RuntimeError(f"pg_fast {name}: moves flowkit.states does not allow: {'; '.join(problems)}")


_check_moves()
