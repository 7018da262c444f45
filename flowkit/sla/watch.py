"""The scheduler's deadline check, as pure decisions on its own clock.

Each decision says which audit action to raise now: ``sla_at_risk`` once a run's predicted
finish passes its deadline (before the deadline), ``sla_missed`` once the deadline passes
with the run unfinished. The store records that an action was raised (a column or a unique
row), so a restart or a second scheduler does not raise it again: callers pass that record
in as ``already``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from flowkit.sla.deadline import Deadline, as_utc
from flowkit.sla.history import StepStats
from flowkit.sla.predict import (
    DONE_STATES,
    OVERRUN_FACTOR,
    NoPrediction,
    Prediction,
    StepProgress,
    predict_finish,
)

if TYPE_CHECKING:
    from flowkit.spec import FlowSpec
    from flowkit.store.sql import SqlStoreBase

SLA_AT_RISK = "sla_at_risk"
SLA_MISSED = "sla_missed"
#: How far back the sweep looks for scheduled intervals that never got a run.
MISSED_SCHEDULE_LOOKBACK = timedelta(days=2)


@dataclass(frozen=True)
class SlaEvent:
    action: str
    reason: str


def sla_events(
    deadline_at: datetime,
    prediction: Prediction | NoPrediction | None,
    now: datetime,
    *,
    finished: bool,
    already: frozenset[str] = frozenset(),
    subject: str = "run",
) -> list[SlaEvent]:
    """The SLA actions to raise now for one run (or one step), each at most once."""
    if finished:
        return []
    due = deadline_at.isoformat(timespec="seconds")
    if now >= deadline_at:
        if SLA_MISSED in already:
            return []
        return [SlaEvent(SLA_MISSED, f"{subject} unfinished at its deadline {due}")]
    if SLA_AT_RISK in already or not isinstance(prediction, Prediction):
        return []
    if prediction.finish_at <= deadline_at:
        return []
    finish = prediction.finish_at.isoformat(timespec="seconds")
    path = " -> ".join(prediction.critical_path)
    return [
        SlaEvent(
            SLA_AT_RISK, f"{subject} predicted to finish {finish}, after its deadline {due} (critical path {path})"
        )
    ]


def scheduled_intervals(
    schedule: str, since: datetime, until: datetime, schedule_options: dict[str, Any] | None = None
) -> Iterator[datetime]:
    """The logical dates ``schedule`` fires in (since, until], in UTC: the scheduler's own
    timetable (the flow's time zone and DST policy, flowkit.schedules)."""
    from ..schedules.options import ScheduleOptions

    timetable = ScheduleOptions.from_dict(schedule, schedule_options).timetable()
    for moment in timetable.ticks_after(as_utc(since)):
        if moment > as_utc(until):
            return
        yield moment


def missed_scheduled_runs(
    schedule: str,
    deadline: Deadline,
    now: datetime,
    *,
    has_run: set[datetime],
    timezone: str = "UTC",
    lookback: timedelta = MISSED_SCHEDULE_LOOKBACK,
    not_before: datetime | None = None,
    schedule_options: dict[str, Any] | None = None,
) -> list[datetime]:
    """Logical dates of ``schedule`` whose ``by=`` deadline has passed with no run created.

    ``has_run`` holds the logical dates (UTC) that have a run; ``within=`` deadlines count
    from a run's creation, so only ``by=`` deadlines apply to runs that never started.
    """
    if deadline.by is None:
        return []
    now = as_utc(now)
    since = now - lookback if not_before is None else max(now - lookback, as_utc(not_before))
    missed = []
    for logical in scheduled_intervals(schedule, since, now, schedule_options):
        if logical in has_run:
            continue
        if deadline.due_at(logical_date=logical, created_at=logical, timezone=timezone) <= now:
            missed.append(logical)
    return missed


# -- the scheduler's sweep over the store ---------------------------------------------------
ACTIVE_RUN_STATES = ("queued", "running", "paused")


@dataclass(frozen=True)
class RunView:
    """What the sweep reads of one unfinished run."""

    run_id: str
    flow: str
    version: str
    logical_date: datetime | None
    created_at: datetime
    steps: dict[str, StepProgress]


def check_deadlines(
    store: SqlStoreBase, actor: str, now: datetime, spec_of: Callable[[str, str], FlowSpec]
) -> list[SlaEvent]:
    """One check with nothing remembered from earlier ones (every run's prediction is
    computed): see :meth:`DeadlineWatch.check`, which the scheduler calls every sweep."""
    return DeadlineWatch().check(store, actor, now, spec_of)


#: A run whose steps did not change is checked again at least this often anyway: the
#: statistics its prediction reads may have changed with other runs' successes.
MAX_RECHECK = timedelta(minutes=5)
#: How fast a run's predicted finish can move later while none of its steps changes state: a
#: running step past its estimate needs OVERRUN_FACTOR times its overrun more
#: (predict.remaining_seconds), so its run's finish moves 1 + OVERRUN_FACTOR s per second;
#: anything else 1 s or less. The prediction is continuous in time (no leap to look out for).
MAX_FINISH_DRIFT = 1.0 + OVERRUN_FACTOR


@dataclass
class _Seen:
    """What the last check saw of a run: its change signature and when to look again."""

    signature: tuple[Any, ...]
    next_check_at: datetime


@dataclass
class DeadlineWatch:
    """The scheduler's deadline check, with the memory that keeps each sweep's work bounded.

    A run's prediction is computed again only when one of its steps changed state since the
    last check (its ``steps_left`` or its newest audit event id moved: one indexed read per
    active run) or when the check it was due for comes: ``slack / MAX_FINISH_DRIFT`` from the
    last one (the predicted finish cannot pass the deadline sooner), its deadline (for
    ``sla_missed``), or ``MAX_RECHECK``. Near the deadline that is every sweep, so an alert
    is raised at most one sweep late. A restarted scheduler starts with no memory: its first
    sweep checks every run once.
    """

    max_recheck: timedelta = MAX_RECHECK
    _seen: dict[str, _Seen] = field(default_factory=dict)
    #: How many runs the last check computed a prediction for (the bench reports it).
    last_recomputed: int = 0

    def check(
        self, store: SqlStoreBase, actor: str, now: datetime, spec_of: Callable[[str, str], FlowSpec]
    ) -> list[SlaEvent]:
        """Fold new successes into the statistics, then raise what is due for the unfinished
        runs with a deadline that changed or are due a check, and for scheduled intervals that
        never got a run. Returns what it raised."""
        from flowkit.store import sla_ops

        sla_ops.fold_successes(store, now)
        active = read_run_signatures(store, lambda flow, version: has_deadline(spec_of(flow, version)))
        self._seen = {rid: seen for rid, seen in self._seen.items() if rid in active}
        due = [rid for rid, sig in active.items() if self._due(rid, sig, now)]
        runs = read_active_runs(store, now, run_ids=due)
        marks = sla_ops.raised_marks(store, (r.run_id for r in runs))
        stats_by_flow: dict[str, dict[str, StepStats]] = {}
        raised: list[SlaEvent] = []
        for run in runs:
            spec = spec_of(run.flow, run.version)
            stats = stats_by_flow.setdefault(run.flow, sla_ops.step_stats(store, run.flow))
            next_at = now + self.max_recheck
            for step, deadline_at, prediction, done in run_checks(spec, run, stats, now):
                already = frozenset(action for rid, s, action in marks if rid == run.run_id and s == step)
                raised += raise_due(store, actor, now, run, step, deadline_at, prediction, done, already)
                next_at = min(next_at, next_check_at(deadline_at, prediction, now, done=done))
            self._seen[run.run_id] = _Seen(active[run.run_id], next_at)
        self.last_recomputed = len(runs)
        raised.extend(check_missed_schedules(store, actor, now, spec_of))
        return raised

    def _due(self, run_id: str, signature: tuple[Any, ...], now: datetime) -> bool:
        seen = self._seen.get(run_id)
        return seen is None or seen.signature != signature or seen.next_check_at <= now


def raise_due(
    store: SqlStoreBase,
    actor: str,
    now: datetime,
    run: RunView,
    step: str | None,
    deadline_at: datetime,
    prediction: Prediction | NoPrediction,
    done: bool,
    already: frozenset[str],
) -> list[SlaEvent]:
    """Raise (once, in the store) what one deadline of ``run`` calls for now."""
    from flowkit.store import sla_ops

    subject = f'run {run.run_id} of flow "{run.flow}"' + (f' step "{step}"' if step else "")
    raised = []
    for event in sla_events(deadline_at, prediction, now, finished=done, already=already, subject=subject):
        if sla_ops.raise_once(
            store, actor, now, action=event.action, flow=run.flow, reason=event.reason, run_id=run.run_id, step=step
        ):
            raised.append(event)
    return raised


def next_check_at(
    deadline_at: datetime, prediction: Prediction | NoPrediction | None, now: datetime, *, done: bool
) -> datetime:
    """When this deadline needs a look again if none of the run's steps changes state."""
    if done or now >= deadline_at:
        return datetime.max.replace(tzinfo=deadline_at.tzinfo)  # raised or moot: nothing left to see
    if isinstance(prediction, Prediction) and prediction.finish_at <= deadline_at:
        slack = prediction.slack_seconds(deadline_at)
        return min(deadline_at, now + timedelta(seconds=slack / MAX_FINISH_DRIFT))
    return deadline_at  # at risk already, or no prediction: only sla_missed is left to raise


def has_deadline(spec: FlowSpec) -> bool:
    return spec.deadline is not None or any(s.deadline is not None for s in spec.steps)


def flow_timezone(spec: FlowSpec) -> str:
    return spec.timezone


def run_checks(
    spec: FlowSpec, run: RunView, stats: dict[str, StepStats], now: datetime
) -> Iterator[tuple[str | None, datetime, Prediction | NoPrediction, bool]]:
    """(step or None for the run, deadline, prediction, done) for each deadline of ``run``."""
    upstream = {s.name: s.upstream for s in spec.steps}
    progress = {name: p for name, p in run.steps.items() if name in upstream}
    logical = run.logical_date or run.created_at
    zone = flow_timezone(spec)
    if spec.deadline is not None:
        due = Deadline.from_dict(spec.deadline).due_at(logical_date=logical, created_at=run.created_at, timezone=zone)
        yield None, due, predict_finish(upstream, progress, stats, now), False
    for step in spec.steps:
        if step.deadline is None:
            continue
        due = Deadline.from_dict(step.deadline).due_at(logical_date=logical, created_at=run.created_at, timezone=zone)
        done = progress.get(step.name, StepProgress("pending")).state in DONE_STATES
        needed = ancestors(upstream, step.name)
        sub = {name: ups for name, ups in upstream.items() if name in needed}
        yield step.name, due, predict_finish(sub, progress, stats, now), done


def ancestors(upstream: dict[str, tuple[str, ...]], name: str) -> set[str]:
    """``name`` and every step it waits on, directly or not."""
    seen, todo = {name}, [name]
    while todo:
        for up in upstream[todo.pop()]:
            if up not in seen:
                seen.add(up)
                todo.append(up)
    return seen


def read_run_signatures(store: SqlStoreBase, wanted: Callable[[str, str], bool]) -> dict[str, tuple[Any, ...]]:
    """Each unfinished run of the (flow, version)s ``wanted``: a signature that changes when
    one of its steps changes state (``steps_left`` and the newest audit event id, read per run
    from ``ix_events_run``: one index probe, however long the run's history)."""
    from sqlalchemy import func, select

    from flowkit.store import tables as t

    r, e = t.runs.c, t.events.c
    newest = select(func.max(e.id)).where(e.run_id == r.id).scalar_subquery()
    # ``wanted`` reads specs through the store: never call it inside a transaction, as on
    # SQLite every transaction holds the write lock (BEGIN IMMEDIATE) and a nested one waits
    # out the busy timeout.
    with store._conn() as conn:
        rows = conn.execute(
            select(r.id, r.flow_name, r.version, r.state, r.steps_left, newest.label("newest")).where(
                r.state.in_(ACTIVE_RUN_STATES)
            )
        ).all()
    return {row.id: (row.state, row.steps_left, row.newest) for row in rows if wanted(row.flow_name, row.version)}


def read_active_runs(
    store: SqlStoreBase,
    now: datetime,
    wanted: Callable[[str, str], bool] | None = None,
    *,
    run_ids: Iterable[str] | None = None,
) -> list[RunView]:
    """Unfinished runs (of the (flow, version)s ``wanted``, or those of ``run_ids``) and their
    steps' progress (two indexed reads)."""
    from sqlalchemy import select

    from flowkit.store import tables as t

    query = select(t.runs).where(t.runs.c.state.in_(ACTIVE_RUN_STATES))
    if run_ids is not None:
        ids = list(run_ids)
        if not ids:
            return []
        query = query.where(t.runs.c.id.in_(ids))
    with store._conn() as conn:  # ``wanted`` is called outside it (see read_run_signatures)
        active = conn.execute(query).all()
    runs = [r for r in active if wanted is None or wanted(r.flow_name, r.version)]
    steps = []
    if runs:
        with store._conn() as conn:
            steps = list(conn.execute(select(t.step_runs).where(t.step_runs.c.run_id.in_([r.id for r in runs]))).all())
    by_run: dict[str, dict[str, StepProgress]] = {}
    for s in steps:
        since = s.started_at if s.state == "running" else s.updated_at
        elapsed = (now - as_utc(since)).total_seconds() if since is not None else 0.0
        by_run.setdefault(s.run_id, {})[s.step] = StepProgress(s.state, max(0.0, elapsed))
    return [
        RunView(
            run_id=r.id,
            flow=r.flow_name,
            version=r.version,
            logical_date=as_utc(r.logical_date) if r.logical_date is not None else None,
            created_at=as_utc(r.created_at),
            steps=by_run.get(r.id, {}),
        )
        for r in runs
    ]


def check_missed_schedules(
    store: SqlStoreBase, actor: str, now: datetime, spec_of: Callable[[str, str], FlowSpec]
) -> list[SlaEvent]:
    """``sla_missed`` (run id NULL) for each scheduled interval of a flow with a ``by=``
    deadline that has no run once that deadline has passed."""
    from sqlalchemy import func, select

    from flowkit.store import sla_ops
    from flowkit.store import tables as t

    with store._conn() as conn:
        flows = conn.execute(
            select(t.flows.c.name, t.flows.c.version, t.flows.c.schedule).where(
                t.flows.c.schedule.is_not(None), t.flows.c.active.is_(True), t.flows.c.paused.is_(False)
            )
        ).all()
    raised: list[SlaEvent] = []
    for flow in flows:
        spec = spec_of(flow.name, flow.version)
        if spec.deadline is None or spec.deadline.get("by") is None:
            continue
        deadline = Deadline.from_dict(spec.deadline)
        since = now - MISSED_SCHEDULE_LOOKBACK
        with store._conn() as conn:
            first = conn.execute(
                select(func.min(t.flow_versions.c.created_at)).where(t.flow_versions.c.flow_name == flow.name)
            ).scalar()
            dates = conn.execute(
                select(t.runs.c.logical_date).where(t.runs.c.flow_name == flow.name, t.runs.c.logical_date >= since)
            ).scalars()
            has_run = {as_utc(d) for d in dates if d is not None}
        zone = flow_timezone(spec)
        for logical in missed_scheduled_runs(
            flow.schedule,
            deadline,
            now,
            has_run=has_run,
            timezone=zone,
            not_before=first,
            schedule_options=spec.schedule_options,
        ):
            due = deadline.due_at(logical_date=logical, created_at=logical, timezone=zone)
            reason = (
                f'flow "{flow.name}": no run for the interval {logical.isoformat()} by its deadline {due.isoformat()}'
            )
            if sla_ops.raise_once(
                store, actor, now, action=SLA_MISSED, flow=flow.name, reason=reason, logical_date=logical
            ):
                raised.append(SlaEvent(SLA_MISSED, reason))
    return raised
