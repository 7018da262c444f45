"""Which pending trigger events become which runs (pure: the store applies the plan).

Never collapses a burst unless the flow asks (``trigger_batch=True``): with ``any``, one run
per event; with ``all``, one run per complete set (the oldest pending event of each
condition), the rest waiting for their partners. Events of a condition the flow no longer
declares are returned apart, to be dropped.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Pending:
    """One inbox row not yet consumed."""

    id: int
    kind: str  # flow | dataset
    source: str  # the flow name or the dataset URI
    source_run_id: str
    event_key: str


@dataclass(frozen=True)
class Plan:
    groups: list[list[Pending]]  # each one run, its events oldest first
    stale: list[Pending]  # events of conditions the flow no longer declares


def plan_runs(triggers: dict[str, Any] | None, pending: Iterable[Pending]) -> Plan:
    """The runs to create from ``pending`` (oldest first) under the flow's ``triggers`` spec."""
    conditions = [(c["kind"], c["source"]) for c in (triggers or {}).get("on", ())]
    by_condition: dict[tuple[str, str], list[Pending]] = {key: [] for key in conditions}
    stale: list[Pending] = []
    for p in sorted(pending, key=lambda p: p.id):
        bucket = by_condition.get((p.kind, p.source))
        (stale if bucket is None else bucket).append(p)
    if not conditions:
        return Plan([], stale)
    mode, batch = triggers.get("mode", "all") if triggers else "all", bool((triggers or {}).get("batch"))
    if mode == "any":
        events = sorted((p for b in by_condition.values() for p in b), key=lambda p: p.id)
        groups = ([events] if events else []) if batch else [[p] for p in events]
        return Plan(groups, stale)
    return Plan(_complete_sets(list(by_condition.values()), batch), stale)


def _complete_sets(buckets: Sequence[list[Pending]], batch: bool) -> list[list[Pending]]:
    sets = min((len(b) for b in buckets), default=0)
    if sets == 0:
        return []
    if batch:
        return [sorted((p for b in buckets for p in b), key=lambda p: p.id)]
    return [sorted((b[i] for b in buckets), key=lambda p: p.id) for i in range(sets)]


def describe(p: Pending, source_flow: str | None = None, step: str | None = None) -> str:
    """One event in words, for the run's audit trail."""
    run = f"run {p.source_run_id[:8]}"
    if p.kind == "flow":
        state = p.event_key.rsplit(":", 1)[-1]
        return f'flow "{p.source}" {run} ended {state}'
    by = f"{source_flow} {run}" if source_flow else run
    return f'dataset "{p.source}" written by {by}' + (f" step {step}" if step else "")
