"""A run as ``flowkit runs show`` and ``flowkit dev`` print it: its steps, attempts and
audit trail, with secret parameter values masked."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .. import jsonsafe
from ..sensors.report import describe_wait
from . import map_view
from .common import format_duration, format_table, format_time

if TYPE_CHECKING:
    from ..store.sql import SqlStore


def state_label(run: dict[str, Any]) -> str:
    """A run's state, with how its compensation ended ("failed (compensated)")."""
    outcome = run.get("outcome")
    return f"{run['state']} ({outcome})" if outcome else str(run["state"])


def masked_params(store: SqlStore, run: dict[str, Any], specs: dict[tuple[str, str], Any]) -> dict[str, Any]:
    """A run's params with secret ones as ***; all of them if the flow version is unknown."""
    from ..errors import NotFoundError
    from ..secrets import MASK, mask_params

    key = (run["flow_name"], run["version"])
    if key not in specs:
        try:
            specs[key] = store.flow_spec(*key)
        except NotFoundError:
            specs[key] = None
    if specs[key] is None:
        return {k: MASK for k in run["params"] or {}}
    return mask_params(specs[key], run["params"])


def run_details(store: SqlStore, run_id: str, *, with_events: bool = False) -> dict[str, Any]:
    """A run, its steps and (optionally) its audit trail, with secret param values as ***."""
    from ..secrets import mask_data, mask_params, mask_text, secret_values
    from ..sla.view import run_sla
    from ..store.base import utcnow

    run = store.get_run(run_id)
    steps = {s["step"]: s for s in store.step_runs(run_id)}
    attempts = store.attempts(run_id)
    spec = store.flow_spec(run["flow_name"], run["version"])
    results = store.results(run_id)
    hidden = secret_values(spec, run["params"])
    out_steps = []
    # then the compensation steps the run got when it failed (store/saga.py)
    for name in spec.step_names + [c.name for c in spec.compensations if c.name in steps]:
        s = steps[name]
        atts = [a for a in attempts if a["step"] == name]
        last = atts[-1] if atts else {}
        out_steps.append(
            {
                "step": name,
                "state": s["state"],
                "attempts": len(atts),
                "started_at": s["started_at"],
                "ended_at": s["ended_at"],
                "worker": last.get("worker"),
                "error": mask_text(last.get("error"), hidden) if s["state"] != "success" else None,
                "result": mask_data(results.get(name), hidden),
                "attempt_history": [
                    {
                        **{
                            k: a[k]
                            for k in ("number", "state", "worker", "started_at", "ended_at", "deliveries", "task_id")
                        },
                        "error": mask_text(a["error"], hidden),
                    }
                    for a in atts
                ],
            }
        )
    map_view.add_instances(store, run_id, out_steps, lambda text: mask_text(text, hidden))
    _add_sensor_waits(spec, steps, out_steps)
    details = {**run, "params": mask_params(spec, run["params"]), "steps": out_steps}
    details["sla"] = run_sla(store, run, spec, utcnow())  # None: the flow has no deadline
    if with_events:
        # the flow's own events (an operator paused or unpaused it) while the run existed,
        # and the pause it was created under, if any
        flow_events = store.flow_events(run["flow_name"], until=run["ended_at"])
        before = [e for e in flow_events if e["at"] < run["created_at"]][-1:]
        flow_events = [e for e in before if e["action"] == "operator_pause"] + [
            e for e in flow_events if e["at"] >= run["created_at"]
        ]
        events = sorted(store.events(run_id) + flow_events, key=lambda e: (e["at"], e["id"]))
        details["events"] = [{**e, "reason": mask_text(e["reason"], hidden)} for e in events]
    return details


def _add_sensor_waits(spec: Any, rows: dict[str, dict[str, Any]], out_steps: list[dict[str, Any]]) -> None:
    """A sensor step's wait (pokes, last poke and its answer, next poke, timeout), under "sensor"."""
    from ..store.sensor_ops import sensor_view

    for out in out_steps:
        if out["step"] in rows and spec.step(out["step"]).kind == "sensor":
            out["sensor"] = sensor_view(rows[out["step"]])


def one_step(store: SqlStore, run_id: str, name: str) -> dict[str, Any]:
    from ..secrets import mask_data, mask_text, secret_values

    run = store.get_run(run_id)
    spec = store.flow_spec(run["flow_name"], run["version"])
    hidden = secret_values(spec, run["params"])
    details = map_view.step_details(
        store, run_id, spec, name, lambda text: mask_text(text, hidden), lambda data: mask_data(data, hidden)
    )
    if details["kind"] == "sensor":
        _add_sensor_waits(spec, {r["step"]: r for r in store.step_runs(run_id) if r["step"] == name}, [details])
    return details


def format_run(d: dict[str, Any]) -> str:
    head = (
        f"run {d['id']}  flow {d['flow_name']}  version {d['version']}  state {state_label(d)}  "
        f"duration {format_duration(d['started_at'], d['ended_at'])}"
    )
    params = f"params {jsonsafe.dumps(jsonsafe.sanitize(d['params']), sort_keys=True, default=str)}"
    rows = []
    for s in d["steps"]:
        rows.append(
            [
                s["step"],
                s["state"],
                str(s["attempts"]),
                format_duration(s["started_at"], s["ended_at"]),
                s["worker"] or "-",
                (s["error"] or "")[:80],
            ]
        )
        rows += map_view.table_rows(s, format_duration)  # a map step's instances
    from ..sla.view import sla_lines

    lines = [
        head,
        params,
        *sla_lines(d.get("sla")),
        "",
        format_table(["step", "state", "attempts", "duration", "worker", "error"], rows),
    ]
    sensors = [s for s in d["steps"] if s.get("sensor") is not None]
    if sensors:
        lines += ["", "SENSORS"] + [f"{s['step']}: {describe_wait(s['sensor'], format_time)}" for s in sensors]
    failed = [s for s in d["steps"] if s["state"] == "failed" and s["error"]]
    if failed:
        lines += ["", "ERRORS"] + [f"{s['step']}: {s['error']}" for s in failed]
        lines += [line for s in failed for line in map_view.error_lines(s)]
    return "\n".join(lines)


def format_one_step(d: dict[str, Any]) -> str:
    """``flowkit runs show RUN --step NAME``: the step in full, and a sensor's wait."""
    text = map_view.format_step(d, format_duration, format_time)
    if d.get("sensor") is None:
        return text
    head, _, rest = text.partition("\n")
    second, _, rest = rest.partition("\n")
    return "\n".join([head, second, f"sensor {describe_wait(d['sensor'], format_time)}", rest]).rstrip("\n")
