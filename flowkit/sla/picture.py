"""What the renders draw for a run with a deadline: when it falls, the critical path so
far (the longest chain of steps by their actual time, the queue wait included) and the slack."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from flowkit.graph import topo_order
from flowkit.sla.deadline import Deadline, as_utc
from flowkit.spec import FlowSpec


@dataclass(frozen=True)
class DeadlinePicture:
    deadline_at: datetime
    critical_path: tuple[str, ...]
    #: Deadline minus the run's end (or ``now`` for an unfinished run): negative is late.
    slack_seconds: float


def deadline_picture(
    spec: FlowSpec, run: Mapping[str, Any], attempts: Mapping[str, Sequence[Mapping[str, Any]]], now: datetime
) -> DeadlinePicture | None:
    """None when the flow has no deadline."""
    if spec.deadline is None:
        return None
    created = as_utc(run["created_at"])
    due = Deadline.from_dict(spec.deadline).due_at(
        logical_date=run.get("logical_date") or created,
        created_at=created,
        timezone=spec.timezone,
    )
    end = as_utc(run["ended_at"]) if run.get("ended_at") else as_utc(now)
    return DeadlinePicture(due, actual_critical_path(spec, attempts, end), (due - end).total_seconds())


def actual_critical_path(
    spec: FlowSpec, attempts: Mapping[str, Sequence[Mapping[str, Any]]], end: datetime
) -> tuple[str, ...]:
    """The chain of steps whose actual time (first dispatch to last end) adds up longest."""
    upstream = {s.name: s.upstream for s in spec.steps}
    spent: dict[str, float] = {}
    for name in upstream:
        atts = attempts.get(name) or ()
        starts = [as_utc(a["dispatched_at"]) for a in atts if a.get("dispatched_at")]
        ends = [as_utc(a["ended_at"]) if a.get("ended_at") else end for a in atts]
        spent[name] = (max(ends) - min(starts)).total_seconds() if starts and ends else 0.0
    total: dict[str, float] = {}
    before: dict[str, str | None] = {}
    for name in topo_order(upstream):
        latest = max(upstream[name], key=lambda u: total[u], default=None)
        total[name] = (total[latest] if latest else 0.0) + spent[name]
        before[name] = latest
    if not total:
        return ()
    path: list[str] = []
    cursor: str | None = max(total, key=lambda n: total[n])
    while cursor is not None:
        path.append(cursor)
        cursor = before[cursor]
    return tuple(reversed([n for n in path if spent[n] > 0]))
