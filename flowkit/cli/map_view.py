"""`flowkit runs show` for map steps: instances listed or counted, and one step in full.

A map step of thousands of instances cannot be one line each: up to
:data:`LIST_INSTANCES_UP_TO` are listed, a larger map shows its instances counted by state
and names the first failed ones; ``--step name[3]`` shows one instance in full.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from ..errors import NotFoundError
from ..spec import split_instance

if TYPE_CHECKING:
    from ..spec import FlowSpec
    from ..store.sql import SqlStore

#: A map step with at most this many instances lists each one; a larger one shows counts.
LIST_INSTANCES_UP_TO = 10
#: Failed instances named (with their error) under a large map step.
FAILED_SHOWN = 5


def add_instances(store: SqlStore, run_id: str, steps: list[dict[str, Any]], mask: Any) -> None:
    """Add ``instances`` (counts by state, failed ones, and each one for a small map) to the
    entries of map steps in ``steps``; ``mask`` hides secret values in errors."""
    counts = store.map_counts(run_id)
    for entry in steps:
        if entry["state"] == "failed" and not entry["error"]:
            # Failed without a failed attempt of its own (a map step, a step whose pool went
            # away): the reason is in the audit trail.
            entry["error"] = mask(store.last_reason(run_id, entry["step"]))
        by_state = counts.get(entry["step"])
        if by_state is None:
            continue
        total = sum(by_state.values())
        small = total <= LIST_INSTANCES_UP_TO
        rows = store.map_instances(
            run_id, entry["step"], states=None if small else ["failed"], limit=None if small else FAILED_SHOWN
        )
        listed = []
        for row in rows:
            last = (store.attempts(run_id, step=row["step"]) or [{}])[-1]
            listed.append(
                {
                    "step": row["step"],
                    "state": row["state"],
                    "attempts": row["attempts"],
                    "started_at": row["started_at"],
                    "ended_at": row["ended_at"],
                    "worker": last.get("worker"),
                    "error": mask(last.get("error")) if row["state"] != "success" else None,
                }
            )
        entry["instances"] = {
            "total": total,
            "by_state": dict(sorted(by_state.items())),
            "listed": listed,
            "all_listed": small,
        }


def table_rows(entry: dict[str, Any], duration: Any) -> list[list[str]]:
    """Rows under a map step in the run table: each instance, or one row of counts."""
    inst = entry.get("instances")
    if not inst:
        return []
    if inst["all_listed"]:
        return [
            [
                f"  {i['step']}",
                i["state"],
                str(i["attempts"]),
                duration(i["started_at"], i["ended_at"]),
                i["worker"] or "-",
                (i["error"] or "")[:80],
            ]
            for i in inst["listed"]
        ]
    counts = ", ".join(f"{state} {n}" for state, n in inst["by_state"].items())
    return [
        [
            f"  {entry['step']}[0..{inst['total'] - 1}]",
            f"{inst['total']} instances: {counts}",
            "",
            "",
            "",
            f"see --step {entry['step']}[i]",
        ]
    ]


def error_lines(entry: dict[str, Any]) -> list[str]:
    inst = entry.get("instances")
    if not inst:
        return []
    failed = [i for i in inst["listed"] if i["state"] == "failed" and i["error"]]
    lines = [f"{i['step']}: {i['error']}" for i in failed]
    more = inst["by_state"].get("failed", 0) - len(failed)
    if more > 0 and not inst["all_listed"]:
        lines.append(f"{entry['step']}: {more} more failed instance(s); see --step {entry['step']}[i]")
    return lines


def step_details(store: SqlStore, run_id: str, spec: FlowSpec, name: str, mask: Any, mask_data: Any) -> dict[str, Any]:
    """One step or map instance of a run in full: state, element, result, and every attempt
    with its error, full traceback and output tail (masked)."""
    import difflib

    try:
        kind = spec.step(name).kind
        rows = [r for r in store.step_runs(run_id) if r["step"] == name]
    except KeyError:
        rows = []
    if not rows:
        close = difflib.get_close_matches(name, spec.step_names, n=1)
        hint = f' Did you mean "{close[0]}"?' if close else ""
        raise NotFoundError(
            f'run {run_id} (flow "{spec.name}") has no step "{name}".{hint} Its steps are: '
            f"{', '.join(spec.step_names)} (a map instance is name[i])",
            flow=spec.name,
            step=name,
        )
    row = rows[0]
    keys = (
        "number",
        "state",
        "worker",
        "dispatched_at",
        "started_at",
        "ended_at",
        "deliveries",
        "interruptions",
        "task_id",
    )
    return {
        "run_id": run_id,
        "flow": spec.name,
        "step": name,
        "kind": kind,
        "state": row["state"],
        "started_at": row["started_at"],
        "ended_at": row["ended_at"],
        # the element's index (an instance's compensation has its instance's, not its turn)
        "map_step": row.get("map_parent"),
        "index": split_instance(name)[1] if row.get("map_parent") is not None else None,
        "item": mask_data(json.loads(row["map_item"])) if row.get("map_item") is not None else None,
        "result": mask_data(store.results(run_id, [name]).get(name)),
        "attempts": [
            {**{k: a.get(k) for k in keys}, **{k: mask(a.get(k)) for k in ("error", "traceback", "output")}}
            for a in store.attempts(run_id, step=name)
        ],
    }


def format_step(d: dict[str, Any], duration: Any, fmt_time: Any) -> str:
    n = len(d["attempts"])
    lines = [
        f"run {d['run_id']}  flow {d['flow']}  step {d['step']}  ({d['kind']}, {n} attempt{'s' if n != 1 else ''})",
        f"state {d['state']}  duration {duration(d['started_at'], d['ended_at'])}",
    ]
    if d["map_step"] is not None:
        lines.append(f"instance {d['index']} of map step {d['map_step']}; item {json.dumps(d['item'])}")
    if d["result"] is not None:
        lines.append(f"result {json.dumps(d['result'], default=str)[:500]}")
    for a in d["attempts"]:
        lines += [
            "",
            f"attempt {a['number']}: {a['state']}  worker {a['worker'] or '-'}  "
            f"started {fmt_time(a['started_at'])}  ended {fmt_time(a['ended_at'])}  "
            f"duration {duration(a['started_at'], a['ended_at'])}",
        ]
        if a.get("task_id"):
            lines.append(f"  task {a['task_id']}  (Flower: {d['flow']}.{d['step'].split('[')[0]})")
        if a["error"]:
            lines.append(f"  error: {a['error']}")
        if a["traceback"]:
            lines.append("  traceback:")
            lines += [f"    {line}" for line in a["traceback"].rstrip("\n").split("\n")]
        lines += output_lines(d["run_id"], d["step"], a)
    return "\n".join(lines)


#: Output lines ``runs show --step`` prints per attempt (``flowkit logs`` prints them all).
SHOWN_OUTPUT_LINES = 20


def output_lines(run_id: str, step: str, attempt: dict[str, Any]) -> list[str]:
    """The last lines of an attempt's captured output, and how to see the rest."""
    if not attempt["output"]:
        return []
    kept = attempt["output"].rstrip("\n").split("\n")
    head = ["  output (end):"]
    if len(kept) > SHOWN_OUTPUT_LINES:
        head = [
            f"  output (last {SHOWN_OUTPUT_LINES} lines; all of it: "
            f"flowkit logs {run_id} '{step}' --attempt {attempt['number']}):"
        ]
    return head + [f"    {line}" for line in kept[-SHOWN_OUTPUT_LINES:]]
