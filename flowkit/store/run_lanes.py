"""Whether a run may become active now: the one run-start rule, for every backend.

Not public API. ``SchedulerOps.start_runs`` (queued -> running) and an operator's retry
(a finished run reopened) both ask :class:`RunAdmission`; nothing else decides it.

A run is in one lane, and each lane has its own cap, so a backfill neither starves a
flow's scheduled and manual runs nor is starved by them:

* a backfill's runs (``runs.backfill_id`` set): the backfill's ``max_active_runs``; none
  starts while the backfill is paused;
* every other run of the flow: the flow's ``max_active_runs`` (backfill runs not counted).

On top of its lane, a scheduled run of a flow whose ``overlap=`` policy buffers waits while
an earlier scheduled run of the flow is running (flowkit/schedules/overlap.py).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import Connection

from ..schedules.overlap import buffers
from ..spec import FlowSpec
from ..states import RunState
from . import tables as t

#: (kind, name): ("backfill", "7"), ("flow", "orders"), ("overlap", "orders").
LaneKey = tuple[str, str]


class RunAdmission:
    """Counts of running runs per lane, read once per lane and kept up to date as runs are
    admitted within one transaction (``start_runs`` admits many in one pass)."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self._running: dict[LaneKey, int] = {}
        self._backfills: dict[int, Any] = {}

    def admit(self, run: Any, spec: FlowSpec) -> bool:
        """Whether ``run`` (with flow_name, trigger, backfill_id) may become active now; if so
        it is counted in its lanes."""
        if self.why_held(run, spec):
            return False
        for key, _ in self._caps(run, spec):
            self._running[key] = self._count(key) + 1
        return True

    def why_held(self, run: Any, spec: FlowSpec) -> str:
        """Why ``run`` must wait (one line), or "" if its lanes have room."""
        backfill = self._backfill(run.backfill_id)
        if backfill is not None and backfill.state == "paused":
            return f"backfill {backfill.id} is paused (`flowkit backfill unpause {backfill.id}`)"
        for key, cap in self._caps(run, spec):
            running = self._count(key)
            if running >= cap:
                return _held_line(key, running, cap)
        return ""

    def _caps(self, run: Any, spec: FlowSpec) -> list[tuple[LaneKey, int]]:
        caps: list[tuple[LaneKey, int]] = []
        backfill = self._backfill(run.backfill_id)
        if run.backfill_id is not None:
            if backfill is not None:
                caps.append((("backfill", str(run.backfill_id)), int(backfill.max_active_runs)))
        elif spec.max_active_runs:
            caps.append((("flow", run.flow_name), spec.max_active_runs))
        if run.trigger == "schedule" and run.backfill_id is None and buffers(spec):
            caps.append((("overlap", run.flow_name), 1))
        return caps

    def _backfill(self, backfill_id: int | None) -> Any:
        if backfill_id is None:
            return None
        if backfill_id not in self._backfills:
            b = t.backfills.c
            self._backfills[backfill_id] = self.conn.execute(
                select(b.id, b.state, b.max_active_runs).where(b.id == backfill_id)
            ).first()
        return self._backfills[backfill_id]

    def _count(self, key: LaneKey) -> int:
        if key not in self._running:
            r = t.runs.c
            kind, name = key
            where = [r.state == RunState.RUNNING.value]
            if kind == "backfill":
                where.append(r.backfill_id == int(name))
            else:
                where += [r.flow_name == name, r.backfill_id.is_(None)]
                if kind == "overlap":
                    where.append(r.trigger == "schedule")
            self._running[key] = int(self.conn.execute(select(func.count()).where(*where)).scalar() or 0)
        return self._running[key]


def _held_line(key: LaneKey, running: int, cap: int) -> str:
    kind, name = key
    if kind == "backfill":
        return f"backfill {name} already has {running} running run(s) (--max-active-runs {cap})"
    if kind == "overlap":
        return f'flow "{name}" has a scheduled run still running (its overlap= policy buffers the next)'
    return f'flow "{name}" already has {running} running run(s) (max_active_runs={cap})'
