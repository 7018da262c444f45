"""What the store's mixins share: the transaction of state changes (:class:`Tx`), time and
URL helpers, and row helpers. Not public API.

Every state change is a compare-and-set (the old state sits in the WHERE clause) and appends
an event row in the same transaction; the events table is the audit trail. The mixins
(``worker_ops``, ``scheduler_ops``, ``operator_ops``, ``map_ops``, ``picture_reads``) import
from here at the top; :mod:`.sql` puts them together as ``SqlStore``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, case, func, insert, or_, select, update

from ..errors import NotFoundError
from ..notify.outbox import outbox_rows
from ..spec import FlowSpec
from ..states import AttemptState, RunState, StepState, can_transition
from . import tables as t
from .ledger import Hold, Ledger, decode_holds
from .machine_types import Gate
from .trigger_ops import write_run_end_inbox

if TYPE_CHECKING:
    from .machine import Machine


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime | None) -> datetime | None:
    """SQLite hands datetimes back naive; every datetime flowkit keeps is UTC."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def normalize_url(url: str) -> str:
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def upsert(
    conn: Connection, table: Any, values: dict[str, Any], keys: list[str], update_columns: Iterable[str] | None = None
) -> None:
    """INSERT … ON CONFLICT: the loader runs in the scheduler and in `flowkit trigger` at
    once, so check-then-insert would race (PostgreSQL and SQLite both support this)."""
    from sqlalchemy.dialects import postgresql, sqlite

    dialect_insert: Any = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    stmt = dialect_insert(table).values(**values)
    columns = [c for c in (update_columns if update_columns is not None else values) if c not in keys]
    if columns:
        stmt = stmt.on_conflict_do_update(index_elements=keys, set_={c: stmt.excluded[c] for c in columns})
    else:
        stmt = stmt.on_conflict_do_nothing(index_elements=keys)
    conn.execute(stmt)


def one_line(exc: object) -> str:
    return " ".join(str(exc).split())


def row_dict(r: Any) -> dict[str, Any]:
    out = dict(r._mapping)
    for k, v in out.items():
        if isinstance(v, datetime):
            out[k] = as_utc(v)
    return out


def read_results(conn: Connection, run_id: str, steps: Iterable[str] | None) -> dict[str, Any]:
    q = select(t.results.c.step, t.results.c.value).where(t.results.c.run_id == run_id)
    if steps is not None:
        q = q.where(t.results.c.step.in_(list(steps)))
    return {r.step: json.loads(r.value) for r in conn.execute(q)}


def read_flow_spec(conn: Connection, name: str, version: str) -> FlowSpec:
    spec_json = conn.execute(
        select(t.flow_versions.c.spec_json).where(
            t.flow_versions.c.flow_name == name, t.flow_versions.c.version == version
        )
    ).scalar()
    if spec_json is None:
        raise NotFoundError(f'flow "{name}" has no version {version}', flow=name)
    return FlowSpec.from_json(spec_json)


def check_transitions(
    old: Iterable[StepState | RunState], new: StepState | RunState, operator: bool = False
) -> list[str]:
    """The old states as values, after checking each move against flowkit.states' tables
    (with ``operator``, also the moves only an operator's action may make)."""
    olds = list(old)
    for o in olds:
        if not can_transition(o, new, operator=operator):
            raise ValueError(f"{o.value} -> {new.value} is not an allowed transition (flowkit.states)")
    return [o.value for o in olds]


class Tx:
    """One transaction of state changes; each ``cas_*`` returns whether it won."""

    def __init__(self, conn: Connection, actor: str, now: datetime | None = None) -> None:
        self.conn = conn
        self.actor = actor
        self.now = now or utcnow()
        self._events: list[dict[str, Any]] = []

    def event(
        self,
        action: str,
        *,
        run_id: str | None = None,
        step: str | None = None,
        attempt: int | None = None,
        old: str | None = None,
        new: str | None = None,
        reason: str = "",
        actor: str | None = None,
        flow: str | None = None,
    ) -> None:
        self._events.append(
            {
                "run_id": run_id,
                "flow_name": flow,
                "step": step,
                "attempt": attempt,
                "at": self.now,
                "actor": actor or self.actor,
                "action": action,
                "old_state": old,
                "new_state": new,
                "reason": reason[:4000],
            }
        )

    def cas_step(
        self,
        run_id: str,
        step: str,
        old: Iterable[StepState],
        new: StepState,
        reason: str = "",
        *,
        operator: bool = False,
        **values: Any,
    ) -> bool:
        olds = check_transitions(old, new, operator)
        res = self.conn.execute(
            update(t.step_runs)
            .where(t.step_runs.c.run_id == run_id, t.step_runs.c.step == step, t.step_runs.c.state.in_(olds))
            .values(state=new.value, updated_at=self.now, **values)
        )
        if res.rowcount == 1:
            self.event(
                "step_state",
                run_id=run_id,
                step=step,
                old="|".join(olds),
                new=new.value,
                reason=reason,
                attempt=values.get("attempts"),
            )
            return True
        return False

    def cas_run(
        self,
        run_id: str,
        old: Iterable[RunState],
        new: RunState,
        reason: str = "",
        *,
        operator: bool = False,
        **values: Any,
    ) -> bool:
        olds = check_transitions(old, new, operator)
        res = self.conn.execute(
            update(t.runs)
            .where(t.runs.c.id == run_id, t.runs.c.state.in_(olds))
            .values(state=new.value, updated_at=self.now, **values)
        )
        if res.rowcount == 1:
            self.event("run_state", run_id=run_id, old="|".join(olds), new=new.value, reason=reason)
            return True
        return False

    def touch_attempt_dispatch(self, run_id: str, step: str, number: int, states: Iterable[str] = ("queued",)) -> bool:
        """Renew the lease of a live attempt that is being published again (by the
        scheduler: a queued one no longer waits for a worker to confirm its publish)."""
        a = t.attempts.c
        res = self.conn.execute(
            update(t.attempts)
            .where(a.run_id == run_id, a.step == step, a.number == number, a.state.in_(list(states)))
            .values(
                dispatched_at=self.now,
                heartbeat_at=case((a.state == AttemptState.QUEUED.value, None), else_=a.heartbeat_at),
            )
        )
        return res.rowcount == 1

    def end_attempt(
        self,
        run_id: str,
        step: str,
        number: int,
        *,
        state: AttemptState,
        from_states: Iterable[AttemptState] = (AttemptState.RUNNING,),
        worker: str | None = None,
        heartbeat_at: Any = ...,
        unclaimed_or: str | None = None,
        **values: Any,
    ) -> list[Hold] | None:
        """End a live attempt (compare-and-set on its state, and on its worker or heartbeat
        when given; ``unclaimed_or``: no worker recorded, or that one, which then holds it) and
        give back its ledger holds. Returns the holds, or None if lost."""
        a = t.attempts.c
        cond = [a.run_id == run_id, a.step == step, a.number == number, a.state.in_([s.value for s in from_states])]
        if worker is not None:
            cond.append(a.worker == worker)
        if unclaimed_or is not None:
            cond.append(or_(a.worker.is_(None), a.worker == unclaimed_or))
            values["worker"] = unclaimed_or  # it is this worker's attempt from now on
        if heartbeat_at is not ...:
            cond.append(a.heartbeat_at == heartbeat_at if heartbeat_at else a.heartbeat_at.is_(None))
        row = self.conn.execute(
            update(t.attempts).where(*cond).values(state=state.value, ended_at=self.now, **values).returning(a.holds)
        ).first()
        if row is None:
            return None
        holds = decode_holds(row.holds)
        if holds:
            self.ledger.lock(k for k, _ in holds)
            self.ledger.give_back(holds)
        return holds

    @property
    def clock(self) -> Any:
        """The time of the write that uses it: ``clock_timestamp()`` on PostgreSQL, where
        ``now`` (this transaction's start) can precede a concurrent transaction that
        committed before this one wrote (a cancel that waited for a claim's lock stamped
        its end before the claim's start); ``now`` on SQLite, which runs one writer at a
        time and takes its lock before ``now`` is read."""
        return func.clock_timestamp() if self.conn.dialect.name == "postgresql" else self.now

    @cached_property
    def ledger(self) -> Ledger:
        return Ledger(self.conn, self.now)

    def machine(
        self,
        spec: FlowSpec,
        run_id: str,
        *,
        global_cap: int | None,
        gate: Gate | None = None,
        worker_publishes: bool = False,
    ) -> Machine:
        from .machine import Machine  # the machine's modules import this one: Tx hands it on

        return Machine(self, spec, run_id, global_cap=global_cap, gate=gate, worker_publishes=worker_publishes)

    def results(self, run_id: str, steps: Iterable[str]) -> dict[str, Any]:
        return read_results(self.conn, run_id, steps)

    def flow_spec(self, name: str, version: str) -> FlowSpec:
        return read_flow_spec(self.conn, name, version)

    def flush(self) -> None:
        """Write the events, on PostgreSQL stamped with the time of their write: just before
        the commit, so the audit trail's times follow the order in which transactions that
        touched the same rows committed (as its ids do)."""
        if not self._events:
            return
        # The outbox row goes in the transaction of its audit event, on every backend and path.
        notifications = outbox_rows(self._events, self.now)
        if notifications:
            self.conn.execute(insert(t.notification_outbox), notifications)
        # So do the trigger inbox rows of runs that ended here (flowkit/store/trigger_ops.py).
        write_run_end_inbox(self.conn, self._events, self.now)
        if self.conn.dialect.name == "postgresql":
            rows = [{k: v for k, v in e.items() if k != "at"} for e in self._events]
            self.conn.execute(insert(t.events).values(at=func.clock_timestamp()), rows)
        else:
            self.conn.execute(insert(t.events), self._events)
        self._events = []
