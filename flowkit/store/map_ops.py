"""Map steps: one instance per element of an upstream's list result. Not public API.

A map step that becomes ready expands instead of queuing: its row goes ``pending ->
running`` and one ``step_runs`` row per element is inserted, named ``step[i]``, holding its
element (``map_item``). Each instance is then an ordinary step to the rest of the engine:
attempts, claim, finish, retries, heartbeats, sweeps, interruption, hard timeouts and the
slot ledger work on it unchanged (``FlowSpec.step`` resolves an instance name to its map
step's options). Only two things differ, both here:

* an instance that ends counts down its map step (``map_left``, ``map_failed``) instead of
  settling downstream steps; the last one ends the map step, which then settles as usual
  (success with the ordered list of results, or failed if any instance failed);
* with ``max_parallel``, only that many instances start at expansion; each one that ends
  starts the next (``map_next``), in the same transaction.

``runs.steps_left`` counts the map step once, never its instances. Every write here is
proportional to what changed: expansion writes the n rows it creates, an instance's end
touches its map step's row (and the next instance), and only the last one reads all n
results, once, to store the list.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, insert, select, update

from ..spec import COMPENSATION_SUFFIX, FlowSpec, StepSpec, instance_name, split_instance
from ..states import StepState
from . import tables as t
from .base import upsert, utcnow
from .machine_types import BAD, OK, SKIP, Effects

if TYPE_CHECKING:
    from .base import Tx
    from .machine import Gate, Machine


log = logging.getLogger(__name__)


def is_instance(name: str) -> bool:
    return split_instance(name)[1] is not None


def expand_ready(machine: Machine, names: list[str], old: StepState) -> list[str]:
    """Expand the map steps among ``names`` (ready to start, in state ``old``); return the
    other names, which start as usual."""
    spec = machine.spec
    maps = [n for n in names if spec.step(n).kind == "map" and not is_instance(n)]
    if not maps:
        return names
    for name in maps:
        _expand(machine, spec.step(name), old)
    return [n for n in names if n not in maps]


def _expand(machine: Machine, step: StepSpec, old: StepState) -> None:
    tx, run_id = machine.tx, machine.run_id
    over = step.over or ""
    found = tx.results(run_id, [over])
    value = found.get(over)
    if not isinstance(value, list):
        got = type(value).__name__ if over in found else "no result"
        why = (
            f'flow "{machine.spec.name}" map step "{step.name}": its upstream "{over}" (over=) '
            f'must return a list, got {got}; return a list from "{over}"'
        )
        if tx.cas_step(run_id, step.name, [old], StepState.FAILED, reason=why, ended_at=tx.now):
            machine.settle([(step.name, BAD, None)])
        return
    if not value:
        if tx.cas_step(
            run_id,
            step.name,
            [old],
            StepState.SKIPPED,
            ended_at=tx.now,
            reason=f'the list from "{over}" (over=) was empty: no instance to run',
        ):
            machine.settle([(step.name, SKIP, None)])
        return
    total = len(value)
    first = min(total, step.max_parallel or total)
    if not tx.cas_step(
        run_id,
        step.name,
        [old],
        StepState.RUNNING,
        started_at=tx.now,
        reason=(
            f'expanded over {total} element(s) of "{over}"'
            + (f"; at most {step.max_parallel} at once" if step.max_parallel else "")
        ),
        map_total=total,
        map_left=total,
        map_failed=0,
        map_next=first,
    ):
        return
    # n_up=1 with nothing counted: any trigger rule says "wait", so no path that decides
    # pending steps by their counters can start an instance that max_parallel holds back.
    # Attempt numbers go on after an operator's retry (none on a first expansion).
    made = _instance_attempts_made(tx, run_id, step.name)
    tx.conn.execute(
        insert(t.step_runs),
        [
            {
                "run_id": run_id,
                "step": instance_name(step.name, i),
                "state": StepState.PENDING.value,
                "attempts": made.get(instance_name(step.name, i), 0),
                "retry_base": made.get(instance_name(step.name, i), 0),
                "updated_at": tx.now,
                "n_up": 1,
                "ok_up": 0,
                "bad_up": 0,
                "skip_up": 0,
                "priority": step.priority or 0,
                "map_parent": step.name,
                "map_index": i,
                "map_item": json.dumps(item),
            }
            for i, item in enumerate(value)
        ],
    )
    machine.start([instance_name(step.name, i) for i in range(first)], StepState.PENDING)


def attempts_made(tx: Tx, run_id: str, names: Iterable[str]) -> dict[str, int]:
    """Attempts made so far by each of ``names``, steps whose rows an operator's retry took
    out of the run (instances of a map step run again, compensations of a compensated run):
    a new row goes on from there, so task ids never collide."""
    a = t.attempts.c
    return {
        r.step: int(r.n)
        for r in tx.conn.execute(
            select(a.step, func.max(a.number).label("n"))
            .where(a.run_id == run_id, a.step.in_(list(names)))
            .group_by(a.step)
        )
    }


def _instance_attempts_made(tx: Tx, run_id: str, parent: str) -> dict[str, int]:
    """:func:`attempts_made` for every instance of map step ``parent`` (by name prefix: one
    range of the attempts' primary key, whatever the map's size)."""
    a = t.attempts.c
    return {
        r.step: int(r.n)
        for r in tx.conn.execute(
            select(a.step, func.max(a.number).label("n"))
            .where(a.run_id == run_id, a.step.startswith(f"{parent}[", autoescape=True))
            .group_by(a.step)
        )
    }


def route_ended(
    machine: Machine, ended: Iterable[tuple[str, str, list[str] | None]]
) -> list[tuple[str, str, list[str] | None]]:
    """Count ended instances against their map step; return the other ended steps."""
    rest = []
    for item in ended:
        base, index = split_instance(item[0])
        if index is None:
            rest.append(item)
        else:
            _instance_ended(machine, base, item[1])
    return rest


def _instance_ended(machine: Machine, parent: str, outcome: str) -> None:
    tx, run_id = machine.tx, machine.run_id
    c = t.step_runs.c
    row = tx.conn.execute(
        update(t.step_runs)
        .where(c.run_id == run_id, c.step == parent, c.state == StepState.RUNNING.value)
        .values(map_left=c.map_left - 1, map_failed=c.map_failed + (1 if outcome == BAD else 0), updated_at=tx.now)
        .returning(c.map_left, c.map_failed, c.map_next, c.map_total)
    ).first()
    if row is None:
        return  # the map step is no longer running (cancelled): nothing to count
    counted(machine, parent, row.map_left, row.map_failed, row.map_next, row.map_total)


def counted(machine: Machine, parent: str, left: int, failed: int, next_index: int, total: int) -> None:
    """An instance's end was counted on its map step's row (now ``left``, ``failed``,
    ``next_index`` of ``total``): start the next instance max_parallel held back, and end the
    map step after its last instance."""
    if next_index < total:
        c = t.step_runs.c
        machine.tx.conn.execute(
            update(t.step_runs).where(c.run_id == machine.run_id, c.step == parent).values(map_next=next_index + 1)
        )
        machine.start([_member(machine, parent, next_index)], StepState.PENDING)
    if left == 0:
        _finish(machine, parent, total, failed)


def _member(machine: Machine, parent: str, index: int) -> str:
    """The instance of ``parent`` that starts ``index``-th: ``parent[index]`` of a map step.
    The instances of a map step's compensation start in the order of their rows' map_index
    (the highest instance first, see store/saga.py), which their names do not give."""
    if not parent.endswith(COMPENSATION_SUFFIX):
        return instance_name(parent, index)
    c = t.step_runs.c
    name: str = machine.tx.conn.execute(
        select(c.step).where(c.run_id == machine.run_id, c.map_parent == parent, c.map_index == index)
    ).scalar_one()
    return name


def finish_success_pg(
    store: Any,
    run_id: str,
    step: str,
    number: int,
    *,
    worker: str,
    result_json: str | None,
    datasets: list[tuple[str, str]],
    spec: FlowSpec,
    gate: Gate | None,
    global_cap: int | None,
) -> Effects | None:
    """PostgreSQL: an instance's success and its map step's count in one statement
    (:mod:`.pg_fast`); the machine does the rest (the next instance, the map step's end).

    Without max_parallel the statement commits on its own (one round trip, not three), and
    only the last instance needs a second transaction, to end the map step: a worker that
    dies in between leaves the map step running with no instance left, which the sweep
    finds and ends (:func:`end_counted_maps`). With max_parallel, starting the next
    instance shares the count's transaction."""
    from sqlalchemy.exc import DBAPIError

    from . import pg_fast

    parent = split_instance(step)[0]
    if spec.step(parent).max_parallel is None:
        with store.hot_finishes.connection() as hot:
            out = pg_fast.finish_instance_success(
                hot,
                run_id=run_id,
                step=step,
                parent=parent,
                number=number,
                worker=worker,
                now=utcnow(),
                result_json=result_json,
                datasets=datasets,
            )
        if out is None:
            return None
        effects = Effects()
        if out["parent"] is not None and out["parent"][0] == 0:
            try:
                with store.tx(worker) as tx:
                    machine = tx.machine(spec, run_id, global_cap=global_cap, gate=gate, worker_publishes=True)
                    counted(machine, parent, *out["parent"])
                effects = machine.effects
            except DBAPIError as exc:  # committed: the sweep ends the map step
                log.warning(
                    "run %s step %s: ending map step %s failed (%s); the scheduler's sweep ends it",
                    run_id,
                    step,
                    parent,
                    " ".join(str(exc.orig).split())[:200],
                )
                effects.wake = True
    else:
        with store.tx(worker) as tx:
            out = pg_fast.finish_instance_success(
                tx.conn,
                run_id=run_id,
                step=step,
                parent=parent,
                number=number,
                worker=worker,
                now=tx.now,
                result_json=result_json,
                datasets=datasets,
            )
            if out is None:
                return None
            machine = tx.machine(spec, run_id, global_cap=global_cap, gate=gate, worker_publishes=True)
            if out["parent"] is not None:
                counted(machine, parent, *out["parent"])
            effects = machine.effects
    if out["holds"]:
        effects.wake = True  # slots freed: waiters can go now
    return effects


def counted_maps_query(run_id: Any = None) -> Any:
    """Running map steps with no instance left: ended, but not yet decided (the last
    instance's worker died between its finish and ending the map step)."""
    c = t.step_runs.c
    q = select(c.run_id, c.step, c.map_total, c.map_failed).where(
        c.state == StepState.RUNNING.value, c.map_total.is_not(None), c.map_left == 0
    )
    return q if run_id is None else q.where(c.run_id == run_id)


def end_counted_maps(machine: Machine) -> None:
    """End the map steps of the run that :func:`counted_maps_query` finds (the sweep)."""
    for row in machine.tx.conn.execute(counted_maps_query(machine.run_id)).all():
        _finish(machine, row.step, row.map_total, row.map_failed)


def _finish(machine: Machine, parent: str, total: int, failed: int) -> None:
    """The last instance ended: end the map step and settle its downstream steps."""
    tx, run_id = machine.tx, machine.run_id
    c = t.step_runs.c
    if failed:
        first_failed = tx.conn.execute(
            select(c.step)
            .where(c.run_id == run_id, c.map_parent == parent, c.state == StepState.FAILED.value)
            .order_by(c.map_index)
            .limit(1)
        ).scalar()
        if tx.cas_step(
            run_id,
            parent,
            [StepState.RUNNING],
            StepState.FAILED,
            ended_at=tx.now,
            reason=f"{failed} of {total} instance(s) failed (the first: {first_failed})",
        ):
            machine.callback(
                "step", "on_failure", parent, StepState.FAILED.value, error=f"{failed} of {total} instance(s) failed"
            )
            machine.settle([(parent, BAD, None)])
        return
    text = instance_results_text(tx.conn, run_id, parent)
    upsert(
        tx.conn,
        t.results,
        {"run_id": run_id, "step": parent, "value": text, "size": len(text.encode()), "created_at": tx.now},
        ["run_id", "step"],
    )
    if tx.cas_step(
        run_id, parent, [StepState.RUNNING], StepState.SUCCESS, ended_at=tx.now, reason=f"all {total} instance(s) ended"
    ):
        machine.callback("step", "on_success", parent, StepState.SUCCESS.value)
        machine.settle([(parent, OK, None)])


def instance_results_text(conn: Any, run_id: str, parent: str) -> str:
    """The JSON list of the instances' results in index order, spliced from the stored JSON
    texts (no parse); an instance with no result (it skipped itself, failed, or never ran)
    contributes null."""
    c, r = t.step_runs.c, t.results.c
    values = conn.execute(
        select(r.value)
        .select_from(t.step_runs.outerjoin(t.results, (r.run_id == c.run_id) & (r.step == c.step)))
        .where(c.run_id == run_id, c.map_parent == parent)
        .order_by(c.map_index)
    ).scalars()
    return "[" + ",".join(v if v is not None else "null" for v in values) + "]"


def read_item(conn: Any, run_id: str, name: str) -> Any:
    """The element an instance maps (None for a plain step)."""
    text = conn.execute(
        select(t.step_runs.c.map_item).where(t.step_runs.c.run_id == run_id, t.step_runs.c.step == name)
    ).scalar()
    return json.loads(text) if text is not None else None


class MapReads:
    """The store's reads of map instances (for ``flowkit runs show``); a mixin of SqlStore."""

    _conn: Any

    def map_counts(self, run_id: str) -> dict[str, dict[str, int]]:
        """For each map step of the run: its instances counted by state."""
        c = t.step_runs.c
        out: dict[str, dict[str, int]] = {}
        with self._conn() as conn:
            for row in conn.execute(
                select(c.map_parent, c.state, func.count().label("n"))
                .where(c.run_id == run_id, c.map_parent.is_not(None))
                .group_by(c.map_parent, c.state)
            ):
                out.setdefault(row.map_parent, {})[row.state] = int(row.n)
        return out

    def map_instances(
        self, run_id: str, parent: str, *, states: Iterable[str] | None = None, limit: int | None = None
    ) -> list[dict[str, Any]]:
        """Instance rows of map step ``parent`` in index order (optionally only ``states``)."""
        c = t.step_runs.c
        q = select(t.step_runs).where(c.run_id == run_id, c.map_parent == parent).order_by(c.map_index)
        if states is not None:
            q = q.where(c.state.in_(list(states)))
        if limit is not None:
            q = q.limit(limit)
        with self._conn() as conn:
            return [dict(r._mapping) for r in conn.execute(q)]

    def last_reason(self, run_id: str, step: str) -> str | None:
        """The reason of the latest state change of ``step`` (why a map step failed)."""
        e = t.events.c
        with self._conn() as conn:
            reason: str | None = conn.execute(
                select(e.reason)
                .where(e.run_id == run_id, e.step == step, e.action == "step_state")
                .order_by(e.id.desc())
                .limit(1)
            ).scalar()
        return reason
