"""The scheduler's path through the store: start runs, grant waiters, retry timers, the ledger.

Not public API. The scheduler is the only actor that takes slots from the ledger: a step
that needs one waits in state ``scheduled`` until :meth:`SchedulerOps.grant_waiters` finds
room for it, in priority order and taking turns across runs (fairness).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select, update

from ..errors import NotFoundError
from ..spec import FlowSpec, StepSpec
from ..states import AttemptState, RunState, StepState
from . import tables as t
from .base import read_flow_spec, row_dict, upsert, utcnow
from .ledger import GLOBAL_KEY, Hold, decode_holds, holds_for, pool_key
from .machine import Effects, Gate, recount
from .machine_types import BAD
from .run_lanes import RunAdmission

if TYPE_CHECKING:
    from .sql import SqlStoreBase as _Base
else:
    _Base = object

Specs = dict[tuple[str, str], FlowSpec]
#: Waiters granted in one pass, by run: (its spec, the steps, each step's holds).
Grants = dict[str, tuple[FlowSpec, list[str], dict[str, list[Hold]]]]


class SchedulerOps(_Base):
    def _spec_for(self, tx: Any, specs: Specs, flow: str, version: str) -> FlowSpec:
        key = (flow, version)
        if key not in specs:
            specs[key] = read_flow_spec(tx.conn, flow, version)
        return specs[key]

    # -- runs ---------------------------------------------------------------------------
    def start_runs(
        self, actor: str, *, specs: Specs, global_cap: int | None, gate: Gate, run_ids: Iterable[str] | None = None
    ) -> Effects:
        """Move queued runs to running (within their lane's cap: the flow's max_active_runs,
        or their backfill's), oldest first, and start their first steps."""
        effects = Effects()
        r = t.runs.c
        with self.tx(actor) as tx:
            paused = select(t.flows.c.name).where(t.flows.c.paused.is_(True))
            q = (
                select(r.id, r.flow_name, r.version, r.steps_left, r.trigger, r.backfill_id)
                .where(r.state == RunState.QUEUED.value, r.flow_name.not_in(paused))
                .order_by(r.created_at, r.id)
            )
            if run_ids is not None:
                q = q.where(r.id.in_(list(run_ids)))
            admission = RunAdmission(tx.conn)  # lanes: the flow's, each backfill's (run_lanes.py)
            for run in tx.conn.execute(q).all():
                spec = self._spec_for(tx, specs, run.flow_name, run.version)
                if not admission.admit(run, spec):
                    continue
                if not tx.cas_run(run.id, [RunState.QUEUED], RunState.RUNNING, started_at=tx.now):
                    continue
                if run.steps_left is None:
                    recount(tx, spec, run.id)
                machine = tx.machine(spec, run.id, global_cap=global_cap, gate=gate)
                roots = [s.name for s in spec.steps if not s.upstream]
                machine.start(roots, StepState.PENDING)
                effects.merge(machine.effects)
        return effects

    def reconcile_run(
        self,
        actor: str,
        run_id: str,
        *,
        specs: Specs,
        global_cap: int | None,
        gate: Gate,
        recount_counters: bool = True,
    ) -> Effects:
        """Recount a running run's counters from its step states and decide its pending
        steps: the safety net for runs created before the counters, or left stuck.

        Without ``recount_counters`` (a run only marked by ``runs.followups``, whose steps may
        still be finishing) the counters are left as the workers' finishes keep them: a
        recount writes totals read before a concurrent finish's bump, and would lose it."""
        effects = Effects()
        with self.tx(actor) as tx:
            # Locked: a worker's finish counting a follow-up in waits for this decision.
            run = tx.conn.execute(select(t.runs).where(t.runs.c.id == run_id).with_for_update()).first()
            if run is None or run.state != RunState.RUNNING.value:
                return effects
            spec = self._spec_for(tx, specs, run.flow_name, run.version)
            if run.followups:  # every pending step is decided below
                tx.conn.execute(update(t.runs).where(t.runs.c.id == run_id).values(followups=0))
            if recount_counters:
                recount(tx, spec, run_id)
            machine = tx.machine(spec, run_id, global_cap=global_cap, gate=gate)
            if "map" in spec.kinds:
                from .map_ops import end_counted_maps

                end_counted_maps(machine)
            # A run only marked by followups: its finishes kept the counters, and only steps
            # with every upstream counted can be left undecided (one_success downstream steps
            # are decided in the finish's own transaction).
            machine.decide_pending("decided on reconcile", counted_only=not recount_counters)
            effects.merge(machine.effects)
        return effects

    # -- waiters --------------------------------------------------------------------------
    def grant_waiters(
        self, actor: str, *, specs: Specs, global_cap: int | None, allow: Callable[[StepSpec], bool], batch: int = 500
    ) -> tuple[Effects, bool]:
        """Queue waiting steps that the ledger and backpressure allow, in order.

        Order: priority (9 first), then ``wait_seq`` (the k-th waiter of every run before the
        (k+1)-th of any: runs take turns), then run id. A limit that refuses one waiter is
        closed to the waiters behind it in this pass, so an exclusive lock or a large
        ``slots=`` request is not overtaken for ever by smaller ones. Returns the effects
        and whether a full batch was granted (call again).
        """
        effects = Effects()
        c, r = t.step_runs.c, t.runs.c
        with self.tx(actor) as tx:
            rows = tx.conn.execute(
                select(c.run_id, c.step, c.attempts, r.flow_name, r.version, r.state.label("run_state"))
                .join(t.runs, r.id == c.run_id)
                .where(c.state == StepState.SCHEDULED.value)
                .order_by(c.priority.desc(), c.wait_seq, c.run_id)
                .limit(batch)
            ).all()
            if not rows:
                return effects, False
            wanted: list[tuple[Any, FlowSpec, StepSpec, list[Hold]]] = []
            for row in rows:
                if row.run_state != RunState.RUNNING.value:
                    continue
                spec = self._spec_for(tx, specs, row.flow_name, row.version)
                step = spec.step(row.step)
                wanted.append((row, spec, step, holds_for(spec, step, global_cap)))
            tx.ledger.lock(k for *_, holds in wanted for k, _ in holds)
            grants, impossible, granted = self._choose_grants(tx, wanted, allow)
            effects.merge(self._queue_grants(tx, grants, impossible, global_cap))
        return effects, granted == len(rows) == batch

    def _choose_grants(
        self, tx: Any, wanted: list[tuple[Any, FlowSpec, StepSpec, list[Hold]]], allow: Callable[[StepSpec], bool]
    ) -> tuple[Grants, list[tuple[Any, FlowSpec, str]], int]:
        """Take the ledger's slots for the waiters ``wanted`` (in order) that fit: by run, the
        steps granted with their holds; the waiters no capacity can ever hold, with why; and
        how many were granted. A limit or queue that refuses one is closed to the rest."""
        closed: set[str] = set()
        impossible: list[tuple[Any, FlowSpec, str]] = []
        grants: Grants = {}
        granted = 0
        for row, spec, step, holds in wanted:
            keys = [k for k, _ in holds]
            queue_key = f"queue:{step.queue or ''}"
            if queue_key in closed or any(k in closed for k in keys):
                continue
            why = self._never_fits(tx, step, holds)
            if why:
                impossible.append((row, spec, why))
                continue
            if not tx.ledger.fits(holds):
                closed.update(keys)
                continue
            if not allow(step):
                closed.add(queue_key)
                continue
            tx.ledger.take(holds)
            entry = grants.setdefault(row.run_id, (spec, [], {}))
            entry[1].append(row.step)
            entry[2][row.step] = holds
            granted += 1
        return grants, impossible, granted

    @staticmethod
    def _queue_grants(
        tx: Any, grants: Grants, impossible: list[tuple[Any, FlowSpec, str]], global_cap: int | None
    ) -> Effects:
        """Queue the granted waiters (giving back the slots of any another actor moved) and
        fail the ones that can never fit."""
        effects = Effects()
        for run_id, (spec, names, holds_by_step) in grants.items():
            machine = tx.machine(spec, run_id, global_cap=global_cap)
            lost = machine.queue(names, StepState.SCHEDULED, holds_by_step)
            for name in lost:
                tx.ledger.give_back(holds_by_step[name])
            effects.merge(machine.effects)
        for row, spec, why in impossible:
            # A pool deleted or shrunk after the flow loaded: fail the step, don't wait forever.
            if tx.cas_step(row.run_id, row.step, [StepState.SCHEDULED], StepState.FAILED, reason=why, ended_at=tx.now):
                machine = tx.machine(spec, row.run_id, global_cap=global_cap)
                machine.callback("step", "on_failure", row.step, StepState.FAILED.value, error=why)
                machine.settle([(row.step, BAD, None)])
                effects.merge(machine.effects)
        return effects

    @staticmethod
    def _never_fits(tx: Any, step: StepSpec, holds: list[Hold]) -> str:
        for key in tx.ledger.missing(holds):
            return (
                f'pool "{key[5:]}" does not exist; create it with `flowkit pools set {key[5:]} SLOTS`'
                if key.startswith("pool:")
                else f"limit {key} is missing from the ledger"
            )
        for key, amount in holds:
            capacity = tx.ledger._rows[key][0]
            if key.startswith("pool:") and capacity is not None and amount > capacity:
                return (
                    f'asks for {amount} slots of pool "{key[5:]}", which has {capacity}; lower '
                    f"slots= or `flowkit pools set {key[5:]} {amount}`"
                )
        return ""

    def waiting_count(self) -> int:
        with self._conn() as conn:
            return int(
                conn.execute(
                    select(func.count())
                    .select_from(t.step_runs)
                    .where(t.step_runs.c.state == StepState.SCHEDULED.value)
                ).scalar()
                or 0
            )

    # -- retry timers ------------------------------------------------------------------
    def start_due_retries(
        self, actor: str, now: datetime, *, specs: Specs, global_cap: int | None, gate: Gate
    ) -> Effects:
        effects = Effects()
        c, r = t.step_runs.c, t.runs.c
        with self.tx(actor, now) as tx:
            rows = tx.conn.execute(
                select(c.run_id, c.step, c.attempts, r.flow_name, r.version)
                .join(t.runs, r.id == c.run_id)
                .where(
                    c.state == StepState.UP_FOR_RETRY.value, c.next_attempt_at <= now, r.state == RunState.RUNNING.value
                )
            ).all()
            by_run: dict[str, list[Any]] = {}
            for row in rows:
                by_run.setdefault(row.run_id, []).append(row)
            for run_id, items in by_run.items():
                spec = self._spec_for(tx, specs, items[0].flow_name, items[0].version)
                machine = tx.machine(spec, run_id, global_cap=global_cap, gate=gate)
                machine.start([i.step for i in items], StepState.UP_FOR_RETRY)
                effects.merge(machine.effects)
        return effects

    # -- the ledger --------------------------------------------------------------------
    def set_limit(self, key: str, capacity: int | None) -> None:
        with self._conn() as conn:
            upsert(
                conn,
                t.limits,
                {"key": key, "capacity": capacity, "used": 0, "updated_at": utcnow()},
                ["key"],
                update_columns=["capacity", "updated_at"],
            )

    def set_pool(self, name: str, slots: int) -> None:
        self.set_limit(pool_key(name), slots)

    def delete_pool(self, name: str) -> None:
        with self.tx("cli") as tx:
            row = tx.conn.execute(select(t.limits.c.used).where(t.limits.c.key == pool_key(name))).first()
            if row is None:
                raise NotFoundError(f'no pool named "{name}"; see `flowkit pools list`')
            if row.used:
                raise NotFoundError(f'pool "{name}" has {row.used} slot(s) in use; delete it when idle')
            tx.conn.execute(t.limits.delete().where(t.limits.c.key == pool_key(name)))

    def limits(self) -> list[dict[str, Any]]:
        with self._conn() as conn:
            return [dict(r._mapping) for r in conn.execute(select(t.limits).order_by(t.limits.c.key))]

    def pool_sizes(self) -> dict[str, int | None]:
        return {row["key"][5:]: row["capacity"] for row in self.limits() if row["key"].startswith("pool:")}

    def ledger_balance(self) -> dict[str, tuple[int, int]]:
        """For every limit: (used in the ledger, sum of the holds of live attempts). Equal
        pairs mean the ledger balances; a difference would be a leaked slot."""
        held: dict[str, int] = {}
        with self._conn() as conn:
            if conn.dialect.name == "postgresql":
                # One snapshot for both reads: a commit between them would show a false leak.
                conn.exec_driver_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            for (text,) in conn.execute(
                select(t.attempts.c.holds).where(
                    t.attempts.c.state.in_([AttemptState.QUEUED.value, AttemptState.RUNNING.value]),
                    t.attempts.c.holds.is_not(None),
                )
            ):
                for key, amount in decode_holds(text):
                    held[key] = held.get(key, 0) + amount
            used = {row.key: row.used for row in conn.execute(select(t.limits.c.key, t.limits.c.used))}
        return {k: (used.get(k, 0), held.get(k, 0)) for k in sorted(set(used) | set(held))}

    def set_global_cap(self, cap: int | None) -> None:
        self.set_limit(GLOBAL_KEY, cap)

    def sync_flow_caps(self, specs: Iterable[FlowSpec]) -> None:
        for spec in specs:
            if spec.max_active_steps:
                self.set_limit(f"flow:{spec.name}", spec.max_active_steps)

    # -- schedulers -----------------------------------------------------------------------
    def register_scheduler(self, name: str, config: dict[str, Any]) -> None:
        """A scheduler process starts (as a standby until it holds the lease): its row, with
        the settings it runs with, which `flowkit status` shows rather than its own."""
        now = utcnow()
        with self._conn() as conn:
            upsert(
                conn,
                t.schedulers,
                {
                    "name": name,
                    "started_at": now,
                    "heartbeat_at": now,
                    "last_loop_at": None,
                    "stats": json.dumps({"role": "standby"}),
                    "stopped_at": None,
                    "config": json.dumps(config, sort_keys=True, default=str),
                },
                ["name"],
            )

    def beat_scheduler(self, name: str, stats: dict[str, Any], *, started: bool = False) -> None:
        now = utcnow()
        values = {
            "name": name,
            "heartbeat_at": now,
            "last_loop_at": now,
            "stats": json.dumps(stats, sort_keys=True, default=str),
        }
        with self._conn() as conn:
            if started:
                upsert(
                    conn,
                    t.schedulers,
                    {**values, "started_at": now},
                    ["name"],
                    update_columns=["heartbeat_at", "last_loop_at", "stats"],
                )
            else:
                n = conn.execute(update(t.schedulers).where(t.schedulers.c.name == name).values(**values)).rowcount
                if n == 0:
                    upsert(conn, t.schedulers, {**values, "started_at": now}, ["name"])

    def mark_scheduler_stopped(self, name: str) -> None:
        """A clean stop: `flowkit status` shows it stopped, not "not responding"."""
        with self._conn() as conn:
            conn.execute(
                update(t.schedulers)
                .where(t.schedulers.c.name == name)
                .values(stopped_at=utcnow(), stats=json.dumps({"role": "stopped"}))
            )

    def scheduler_lease(self) -> dict[str, Any] | None:
        """The lease row (PostgreSQL) with ``expired`` decided by the database's clock, the
        one the schedulers use; None on SQLite or before any scheduler asked for it."""
        if self.is_sqlite:
            return None
        lease = t.scheduler_lease.c
        with self._conn() as conn:
            row = conn.execute(
                select(
                    lease.holder,
                    lease.token,
                    lease.expires_at,
                    lease.acquired_at,
                    (lease.expires_at <= func.clock_timestamp()).label("expired"),
                ).where(lease.id == 1)
            ).first()
        if row is None or row.holder is None:
            return None
        return {
            "holder": row.holder,
            "token": row.token,
            "expires_at": row.expires_at,
            "acquired_at": row.acquired_at,
            "expired": bool(row.expired),
        }

    def schedulers(self) -> list[dict[str, Any]]:
        with self._conn() as conn:
            rows = [row_dict(r) for r in conn.execute(select(t.schedulers).order_by(t.schedulers.c.name))]
        for row in rows:
            row["stats"] = json.loads(row["stats"] or "{}")
            row["config"] = json.loads(row["config"] or "{}")
        return rows

    def in_flight(self) -> dict[str, int]:
        with self._conn() as conn:
            return {
                r.state: r.n
                for r in conn.execute(
                    select(t.attempts.c.state, func.count().label("n"))
                    .where(t.attempts.c.state.in_([AttemptState.QUEUED.value, AttemptState.RUNNING.value]))
                    .group_by(t.attempts.c.state)
                )
            }
