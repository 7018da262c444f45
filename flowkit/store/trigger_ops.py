"""Flow and dataset triggers in the store: the inbox written with each event, its
consumption by the scheduler, the loader's subscriptions and the lineage reads. Not public API.

The invariant: every trigger event is consumed exactly once. It holds because

* the inbox row is written in the transaction that commits the event: a run's end goes
  through ``Tx.flush`` (:func:`write_run_end_inbox`, every backend and path: run states only
  change through ``Tx.cas_run``); a dataset write is inserted by the finish of its step,
  generic path (:func:`write_dataset_inbox`) and PostgreSQL fast path (``pg_fast``'s
  ``trig`` CTE), both from the one text :data:`DATASET_INBOX`. No event commits without its
  row, and no row without its event;
* the row is unique per (target flow, event): ``uq_trigger_inbox_target_event``;
* the sweep consumes it by compare-and-set (``consumed_at IS NULL`` in the WHERE) in the
  transaction that creates the run. A scheduler killed before that commit leaves the row
  pending; after it, consumed with its run. Of two schedulers racing for one row, the
  second's update finds it consumed (PostgreSQL re-reads the row once the first commits)
  and its transaction, run included, rolls back.

Rows are found by ``consumed_at IS NULL`` (a partial index), never by an id cursor: a
lower serial id can commit after a higher one on PostgreSQL and a cursor would skip it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, delete, func, select, text, update

from ..states import RUN_TERMINAL
from ..triggers.plan import Pending, describe, plan_runs
from . import tables as t

if TYPE_CHECKING:
    from ..spec import FlowSpec
    from .sql import SqlStoreBase as _Base
else:
    _Base = object

log = logging.getLogger(__name__)

#: The inbox rows of dataset writes: ``{source}`` is the table (or the fast path's CTE) of
#: the dataset events just written, ``{where}`` narrows it to them.
DATASET_INBOX = """INSERT INTO trigger_inbox
  (target_flow, kind, source, event_key, source_run_id, source_step, created_at)
SELECT s.target_flow, 'dataset', d.uri, 'ds:' || CAST(d.id AS VARCHAR(20)), d.run_id, d.step, :now
FROM {source} d JOIN trigger_subscriptions s ON s.kind = 'dataset' AND s.source = d.uri
WHERE d.direction = 'write'{where}
ON CONFLICT (target_flow, event_key) DO NOTHING"""

#: The inbox rows of a run's end, for the flows whose FlowDone waits for that end state.
RUN_END_INBOX = text(
    """INSERT INTO trigger_inbox
  (target_flow, kind, source, event_key, source_run_id, source_step, created_at)
SELECT s.target_flow, 'flow', r.flow_name, 'run:' || r.id || ':' || :state, r.id, NULL, :now
FROM runs r JOIN trigger_subscriptions s ON s.kind = 'flow' AND s.source = r.flow_name
WHERE r.id = :run AND s.states LIKE :pattern
ON CONFLICT (target_flow, event_key) DO NOTHING"""
)

_DATASET_INBOX_GENERIC = text(
    DATASET_INBOX.format(source="dataset_events", where=" AND d.run_id = :run AND d.step = :step AND d.attempt = :num")
)
_TERMINAL = frozenset(s.value for s in RUN_TERMINAL)
#: Inbox rows read per sweep (a bigger backlog is read by the next sweeps).
PENDING_READ_LIMIT = 20_000


def write_run_end_inbox(conn: Connection, events: Iterable[dict[str, Any]], now: datetime) -> None:
    """Called by ``Tx.flush`` with the audit events it writes: an inbox row per subscriber
    of each run that ended in this transaction."""
    for e in events:
        if e["action"] == "run_state" and e["new_state"] in _TERMINAL and e["run_id"]:
            state = e["new_state"]
            conn.execute(RUN_END_INBOX, {"run": e["run_id"], "state": state, "pattern": f"%|{state}|%", "now": now})


def write_dataset_inbox(conn: Connection, run_id: str, step: str, number: int, now: datetime) -> None:
    """The generic finish's inbox rows for the dataset writes it just inserted."""
    conn.execute(_DATASET_INBOX_GENERIC, {"run": run_id, "step": step, "num": number, "now": now})


def sync_subscriptions(conn: Connection, specs: Iterable[FlowSpec]) -> None:
    """Make the subscriptions of these flows the ones their specs declare, and drop those
    of flows no longer active (only the difference is written: this runs at every load)."""
    s = t.trigger_subscriptions.c
    specs = list(specs)
    want: dict[tuple[str, str, str], str] = {}
    for spec in specs:
        for c in (spec.triggers or {}).get("on", ()):
            states = "|" + "|".join(c.get("states") or ()) + "|" if c["kind"] == "flow" else ""
            want[(c["kind"], c["source"], spec.name)] = states
    names = {spec.name for spec in specs}
    inactive = set(conn.execute(select(t.flows.c.name).where(t.flows.c.active.is_(False))).scalars())
    have = {(r.kind, r.source, r.target_flow): r.states for r in conn.execute(select(t.trigger_subscriptions))}
    for key, states in have.items():
        if key[2] in inactive or (key[2] in names and want.get(key) != states):
            conn.execute(
                delete(t.trigger_subscriptions).where(s.kind == key[0], s.source == key[1], s.target_flow == key[2])
            )
    from .base import upsert  # base imports this module: not at its top

    for (k, src, target), states in want.items():
        if have.get((k, src, target)) != states:
            # an upsert: the scheduler and `flowkit trigger` may record one load at once
            values = {"kind": k, "source": src, "target_flow": target, "states": states}
            upsert(conn, t.trigger_subscriptions, values, ["kind", "source", "target_flow"])


class _Taken(Exception):
    """Another transaction consumed one of the group's events first: roll this run back."""


class TriggerOps(_Base):
    """The scheduler's consumption of the inbox and the lineage reads."""

    def consume_triggers(self, actor: str, *, limit: int = 200) -> tuple[list[str], bool]:
        """Create the runs that pending trigger events call for (at most ``limit``), each in
        the transaction that consumes its events. Paused or inactive flows keep theirs.
        Returns the new runs and whether more are due now."""
        pending = self._pending_by_target()
        if not pending:
            return [], False
        flows = {r.name: r for r in self._flow_rows(list(pending))}
        created: list[str] = []
        for target, rows in pending.items():
            flow = flows.get(target)
            if flow is None or not flow.active or flow.paused:
                continue  # kept until the flow is back or unpaused
            spec = self.flow_spec(target, flow.version)
            plan = plan_runs(spec.triggers, [p for p, _, _ in rows])
            if plan.stale:
                self._drop(actor, target, plan.stale)
            details = {p.id: (flow_name, step) for p, flow_name, step in rows}
            for group in plan.groups:
                if len(created) >= limit:
                    return created, True
                run_id = self._start_triggered(actor, spec, group, details)
                if run_id is not None:
                    created.append(run_id)
        return created, False

    def _pending_by_target(self) -> dict[str, list[tuple[Pending, str | None, str | None]]]:
        i, r = t.trigger_inbox.c, t.runs.c
        q = (
            select(i.id, i.target_flow, i.kind, i.source, i.source_run_id, i.event_key, i.source_step, r.flow_name)
            .select_from(t.trigger_inbox.outerjoin(t.runs, r.id == i.source_run_id))
            .where(i.consumed_at.is_(None))
            .order_by(i.target_flow, i.id)
            .limit(PENDING_READ_LIMIT)
        )
        out: dict[str, list[tuple[Pending, str | None, str | None]]] = {}
        with self._conn() as conn:
            for row in conn.execute(q):
                p = Pending(row.id, row.kind, row.source, row.source_run_id, row.event_key)
                out.setdefault(row.target_flow, []).append((p, row.flow_name, row.source_step))
        return out

    def _flow_rows(self, names: list[str]) -> list[Any]:
        f = t.flows.c
        with self._conn() as conn:
            return list(conn.execute(select(f.name, f.version, f.active, f.paused).where(f.name.in_(names))))

    def _start_triggered(
        self,
        actor: str,
        spec: FlowSpec,
        group: list[Pending],
        details: dict[int, tuple[str | None, str | None]],
    ) -> str | None:
        """One run for ``group``, its events consumed in the run's own transaction."""
        from ..spec import resolve_params

        try:
            params = resolve_params(spec, {})
        except Exception as exc:  # the DSL requires defaults; a stored spec may predate that
            log.error("flow %s: cannot start a triggered run: %s", spec.name, exc)
            return None
        ids = [p.id for p in group]
        words = [describe(p, *details.get(p.id, (None, None))) for p in group]
        reason = words[0] if len(words) == 1 else f"{len(words)} events: " + "; ".join(words[:5])
        kind = "flow" if all(p.kind == "flow" for p in group) else "dataset"
        first = group[-1]
        by = f"{first.kind}:{first.source}" + (f" +{len(group) - 1}" if len(group) > 1 else "")

        def consume(tx: Any, run_id: str) -> None:
            i = t.trigger_inbox.c
            won = tx.conn.execute(
                update(t.trigger_inbox)
                .where(i.id.in_(ids), i.consumed_at.is_(None))
                .values(consumed_at=tx.now, consumed_run_id=run_id)
            ).rowcount
            if won != len(ids):
                raise _Taken
            tx.conn.execute(update(t.runs).where(t.runs.c.id == run_id).values(triggered_by=by[:200]))
            keys = ", ".join(p.event_key for p in group[:20]) + (" ..." if len(group) > 20 else "")
            tx.event("trigger_consumed", run_id=run_id, reason=f"{reason} [{keys}]")

        try:
            return self.create_run(
                spec,
                params,
                actor=actor,
                trigger=kind,
                reason=reason,
                parent_run_id=group[-1].source_run_id,
                on_created=consume,
            )
        except _Taken:
            log.info("flow %s: trigger events %s were consumed by another scheduler", spec.name, ids)
            return None

    def _drop(self, actor: str, target: str, stale: list[Pending]) -> None:
        """Consume, with no run, events of conditions the flow no longer declares."""
        i = t.trigger_inbox.c
        with self.tx(actor) as tx:
            n = tx.conn.execute(
                update(t.trigger_inbox)
                .where(i.id.in_([p.id for p in stale]), i.consumed_at.is_(None))
                .values(consumed_at=tx.now)
            ).rowcount
            if n:
                tx.event(
                    "trigger_dropped",
                    flow=target,
                    reason=f"{n} pending event(s) of conditions flow {target} no longer declares in trigger_on",
                )

    # -- reads ----------------------------------------------------------------------------
    def trigger_events(
        self, *, consumed_run_id: str | None = None, source_run_id: str | None = None, target_flow: str | None = None
    ) -> list[dict[str, Any]]:
        """Inbox rows (oldest first) with the source run's flow: what triggered a run
        (``consumed_run_id``), what a run's end or writes triggered (``source_run_id``), or
        what a flow has pending and consumed (``target_flow``)."""
        from .base import row_dict

        i, r = t.trigger_inbox.c, t.runs.c
        q = (
            select(t.trigger_inbox, r.flow_name.label("source_flow"))
            .select_from(t.trigger_inbox.outerjoin(t.runs, r.id == i.source_run_id))
            .order_by(i.id)
        )
        if consumed_run_id is not None:
            q = q.where(i.consumed_run_id == consumed_run_id)
        if source_run_id is not None:
            q = q.where(i.source_run_id == source_run_id)
        if target_flow is not None:
            q = q.where(i.target_flow == target_flow)
        with self._conn() as conn:
            return [row_dict(row) for row in conn.execute(q)]

    def pending_trigger_count(self, flow: str | None = None) -> int:
        i = t.trigger_inbox.c
        q = select(func.count()).select_from(t.trigger_inbox).where(i.consumed_at.is_(None))
        if flow is not None:
            q = q.where(i.target_flow == flow)
        with self._conn() as conn:
            return int(conn.execute(q).scalar() or 0)
