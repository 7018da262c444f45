"""A run's deadlines as the CLI and the report show them: when each falls, the predicted
finish, the slack (deadline minus predicted finish; for an ended run, minus its end) and the
critical path, or "no prediction" with the steps short of history, and the SLA actions
raised. One function for ``flowkit runs show``, ``flowkit status`` and the HTML report, so
they say the same thing; the prediction is the scheduler's own (:mod:`.watch`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from flowkit.sla.deadline import Deadline, as_utc
from flowkit.sla.picture import actual_critical_path
from flowkit.sla.predict import NoPrediction, Prediction
from flowkit.sla.watch import has_deadline, read_active_runs, run_checks

if TYPE_CHECKING:
    from flowkit.spec import FlowSpec
    from flowkit.store.sql import SqlStore


def run_sla(store: SqlStore, run: Mapping[str, Any], spec: FlowSpec, now: datetime) -> dict[str, Any] | None:
    """The run's deadline and its steps' deadlines (None if the flow has none): a dict with
    ``deadline`` (the run's, or None) and ``steps`` (one entry per step deadline)."""
    if not has_deadline(spec):
        return None
    from flowkit.store import sla_ops

    marks = sla_ops.raised_marks(store, [run["id"]])
    if run.get("ended_at") is None:
        entries = _predicted(store, run, spec, now)
    else:
        entries = _ended(store, run, spec)
    for entry in entries:
        entry["raised"] = sorted(action for _, step, action in marks if step == entry["step"])
    return {
        "deadline": next((e for e in entries if e["step"] is None), None),
        "steps": [e for e in entries if e["step"] is not None],
    }


def _predicted(store: SqlStore, run: Mapping[str, Any], spec: FlowSpec, now: datetime) -> list[dict[str, Any]]:
    from flowkit.store import sla_ops

    views = read_active_runs(store, now, run_ids=[run["id"]])
    if not views:  # ended between the two reads
        return []
    stats = sla_ops.step_stats(store, spec.name)
    entries = []
    for step, deadline_at, prediction, done in run_checks(spec, views[0], stats, now):
        entries.append(entry(step, deadline_at, prediction, now, done=done))
    return entries


def entry(
    step: str | None, deadline_at: datetime, prediction: Prediction | NoPrediction, now: datetime, *, done: bool
) -> dict[str, Any]:
    """One deadline of an unfinished run as data (what ``--json`` prints)."""
    out: dict[str, Any] = {"step": step, "deadline_at": deadline_at, "done": done}
    if isinstance(prediction, NoPrediction):
        return {**out, "prediction": "no prediction", "reason": prediction.reason, "slack_seconds": None}
    slack = prediction.slack_seconds(deadline_at)
    return {
        **out,
        "prediction": "late" if slack < 0 else "on time",
        "predicted_finish": prediction.finish_at,
        "slack_seconds": round(slack, 1),
        "critical_path": list(prediction.critical_path),
        "critical_path_seconds": [round(s, 1) for s in prediction.step_seconds],
        "past_deadline": now >= deadline_at,
    }


def _ended(store: SqlStore, run: Mapping[str, Any], spec: FlowSpec) -> list[dict[str, Any]]:
    """An ended run: the slack it finished with (its end against the deadline) and the
    critical path it actually took."""
    attempts: dict[str, list[dict[str, Any]]] = {}
    for a in store.attempts(run["id"]):
        attempts.setdefault(a["step"], []).append(a)
    end = as_utc(run["ended_at"])
    steps_ended = {s["step"]: s.get("ended_at") for s in store.step_runs(run["id"])}
    entries = []
    for step, deadline in _deadlines(spec):
        due = deadline.due_at(
            logical_date=run.get("logical_date") or run["created_at"],
            created_at=run["created_at"],
            timezone=spec.timezone,
        )
        finished = end if step is None else as_utc(steps_ended.get(step) or end)
        entries.append(
            {
                "step": step,
                "deadline_at": due,
                "done": True,
                "prediction": "ended",
                "finished_at": finished,
                "slack_seconds": round((due - finished).total_seconds(), 1),
                "critical_path": list(actual_critical_path(spec, attempts, end)) if step is None else [],
            }
        )
    return entries


def _deadlines(spec: FlowSpec) -> list[tuple[str | None, Deadline]]:
    out: list[tuple[str | None, Deadline]] = []
    if spec.deadline is not None:
        out.append((None, Deadline.from_dict(spec.deadline)))
    out += [(s.name, Deadline.from_dict(s.deadline)) for s in spec.steps if s.deadline is not None]
    return out


def slack_text(seconds: float | None) -> str:
    """``12m 5s`` ahead, ``-3m`` late; ``-`` when unknown."""
    if seconds is None:
        return "-"
    sign = "-" if seconds < 0 else ""
    left = int(abs(seconds))
    hours, rest = divmod(left, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{hours}h"] if hours else []
    parts += [f"{minutes}m"] if minutes else []
    parts += [f"{secs}s"] if secs or not parts else []
    return sign + " ".join(parts)


def sla_lines(sla: Mapping[str, Any] | None) -> list[str]:
    """The deadline lines of ``flowkit runs show`` (empty without a deadline)."""
    if not sla:
        return []
    lines = []
    for e in ([sla["deadline"]] if sla["deadline"] else []) + list(sla["steps"]):
        lines.append(describe(e))
    return lines


def describe(e: Mapping[str, Any]) -> str:
    """One deadline in one line."""
    who = f'step "{e["step"]}" deadline' if e["step"] else "deadline"
    due = f"{who} {as_utc(e['deadline_at']).isoformat(timespec='seconds')}"
    raised = f"  [{', '.join(e['raised'])}]" if e.get("raised") else ""
    if e["prediction"] == "no prediction":
        return f"{due}: {e['reason']}{raised}"
    if e["prediction"] == "ended":
        path = _path(e.get("critical_path") or ())
        finished = as_utc(e["finished_at"]).isoformat(timespec="seconds")
        return f"{due}: finished {finished}, slack {slack_text(e['slack_seconds'])}{path}{raised}"
    if e.get("done"):
        return f"{due}: done{raised}"
    finish = as_utc(e["predicted_finish"]).isoformat(timespec="seconds")
    path = _path(e["critical_path"])
    return f"{due}: predicted finish {finish}, slack {slack_text(e['slack_seconds'])}{path}{raised}"


def _path(names: Sequence[str]) -> str:
    return f", critical path {' -> '.join(names)}" if names else ""


def active_deadlines(store: SqlStore, now: datetime) -> list[dict[str, Any]]:
    """Every unfinished run whose flow has a run deadline, the tightest slack first (no
    prediction last): what ``flowkit status`` lists."""
    from flowkit.store import sla_ops

    specs: dict[tuple[str, str], FlowSpec] = {}

    def spec_of(flow: str, version: str) -> FlowSpec:
        if (flow, version) not in specs:
            specs[(flow, version)] = store.flow_spec(flow, version)
        return specs[(flow, version)]

    runs = read_active_runs(store, now, lambda f, v: spec_of(f, v).deadline is not None)
    marks = sla_ops.raised_marks(store, (r.run_id for r in runs))
    stats: dict[str, Any] = {}
    rows = []
    for run in runs:
        spec = spec_of(run.flow, run.version)
        flow_stats = stats.setdefault(run.flow, sla_ops.step_stats(store, run.flow))
        for step, deadline_at, prediction, done in run_checks(spec, run, flow_stats, now):
            if step is None:
                row = {"run_id": run.run_id, "flow": run.flow, **entry(None, deadline_at, prediction, now, done=done)}
                row["raised"] = sorted(a for rid, s, a in marks if rid == run.run_id and s is None)
                rows.append(row)
    return sorted(rows, key=lambda r: (r["slack_seconds"] is None, r["slack_seconds"] or 0.0))


def status_lines(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """The deadline section of ``flowkit status``."""
    if not rows:
        return []
    at_risk = sum(1 for r in rows if "sla_at_risk" in r["raised"] or r["prediction"] == "late")
    lines = [f"\ndeadlines: {len(rows)} active run(s) with a deadline, {at_risk} at risk or late"]
    for r in rows:
        lines.append(f"  run {r['run_id']} ({r['flow']}): {describe(r)}")
    return lines
