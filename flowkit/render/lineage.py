"""Lineage of a run (what triggered it, what it triggered, datasets it read and wrote) and of a dataset."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import NotFoundError
from ..secrets import mask_data, mask_params, mask_text, secret_values
from ..spec import FlowSpec
from ..triggers.chain import chain_lines, trigger_chain
from .common import (
    FONT,
    RUN_STATE_COLORS,
    STEP_STATE_COLORS,
    clip,
    dot_defaults,
    dot_edge,
    dot_node,
    dot_quote,
    fmt_time,
)


# -- lineage ---------------------------------------------------------------------------------
@dataclass
class Lineage:
    """A run's place among runs and datasets."""

    run: dict[str, Any]
    spec: FlowSpec | None
    steps: list[dict[str, Any]]
    results: dict[str, Any]
    ancestors: list[dict[str, Any]]  # parent first, then its parent...
    children: list[dict[str, Any]]
    datasets: list[dict[str, Any]]  # this run's dataset events
    related: list[dict[str, Any]]  # other runs' events on the same datasets
    runs: dict[str, dict[str, Any]]  # rows of every other run named above
    created_reason: str = ""
    truncated: int = 0  # related events left out
    #: The trigger chain both ways with its events (flowkit.triggers.chain.trigger_chain).
    chain: dict[str, Any] | None = None


def _missing_run(run_id: str) -> dict[str, Any]:
    return {
        "id": run_id,
        "flow_name": "?",
        "state": "unknown",
        "missing": True,
        "created_at": None,
        "trigger": "",
        "triggered_by": "",
    }


def load_lineage(store: Any, run_id: str, *, max_related: int = 200, max_depth: int = 10) -> Lineage:
    """Gather a run's trigger chain (parents), the runs it triggered, its results and the
    datasets it read and wrote, with the other runs that wrote or read those datasets."""
    run = store.get_run(run_id)
    try:
        spec = store.flow_spec(run["flow_name"], run["version"])
        order = {n: i for i, n in enumerate(spec.step_names)}
    except NotFoundError:
        spec, order = None, {}
    steps = sorted(store.step_runs(run_id), key=lambda s: (order.get(s["step"], 1 << 30), s["step"]))
    ancestors: list[dict[str, Any]] = []
    seen = {run_id}
    parent_id = run.get("parent_run_id")
    while parent_id and parent_id not in seen and len(ancestors) < max_depth:
        seen.add(parent_id)
        try:
            parent = store.get_run(parent_id)
        except NotFoundError:
            ancestors.append(_missing_run(parent_id))
            break
        ancestors.append(parent)
        parent_id = parent.get("parent_run_id")
    children = store.child_runs(run_id)
    mine = store.dataset_events(run_id=run_id)
    related: list[dict[str, Any]] = []
    for uri in sorted({d["uri"] for d in mine}):
        related.extend(d for d in store.dataset_events(uri=uri) if d["run_id"] != run_id)
    related.sort(key=lambda d: (d["at"], d["run_id"], d["step"], d["uri"], d["direction"]))
    truncated = max(len(related) - max_related, 0)
    related = related[-max_related:] if truncated else related
    runs: dict[str, dict[str, Any]] = {}
    for rid in sorted({d["run_id"] for d in related}):
        try:
            runs[rid] = store.get_run(rid)
        except NotFoundError:
            runs[rid] = _missing_run(rid)
    created = [e for e in store.events(run_id) if e["action"] == "run_created"]
    hidden = secret_values(spec, run["params"])
    chain = trigger_chain(store, run_id) if hasattr(store, "trigger_events") else None
    return Lineage(
        run={**run, "params": mask_params(spec, run["params"])},
        spec=spec,
        steps=steps,
        results=mask_data(store.results(run_id), hidden),
        ancestors=ancestors,
        children=children,
        datasets=mine,
        related=related,
        runs=runs,
        created_reason=mask_text(created[0]["reason"], hidden) or "" if created else "",
        truncated=truncated,
        chain=chain,
    )


def _run_label(run: Mapping[str, Any], sep: str = "\n") -> str:
    if run.get("missing"):
        return f"run {str(run['id'])[:8]} (not in the store)"
    return f"{run['flow_name']} run {str(run['id'])[:8]}{sep}{run['state']} \u00b7 {fmt_time(run.get('created_at'))}"


def _run_node(run: Mapping[str, Any], *, focus: bool = False, indent: str = "  ") -> str:
    attrs = {
        "shape": "box",
        "style": "rounded,filled" + (",bold" if focus else ""),
        "fillcolor": RUN_STATE_COLORS.get(str(run.get("state")), "#ffffff"),
        "label": _run_label(run),
        "color": "#1b2631" if focus else "#566573",
    }
    if focus:
        attrs["penwidth"] = "2"
    return dot_node(f"run:{run['id']}", indent, **attrs)


def _result_preview(value: Any, limit: int = 48) -> str:
    try:
        text = json.dumps(value, sort_keys=True, default=str)
    except (TypeError, ValueError):
        text = str(value)
    return clip(text, limit)


def _trigger_text(run: Mapping[str, Any], reason: str = "") -> str:
    text = f"{run.get('trigger') or 'manual'} trigger"
    if run.get("triggered_by"):
        text += f"\nby {run['triggered_by']}"
    if run.get("logical_date"):
        text += f"\nfor {fmt_time(run['logical_date'])}"
    if reason:
        text += f"\n{clip(reason, 60)}"
    return text


def _lineage_head(name: str, label: str) -> list[str]:
    return [
        f"digraph {dot_quote(name)} {{",
        dot_defaults(
            "graph",
            rankdir="LR",
            fontname=FONT,
            fontsize="11",
            labelloc="t",
            labeljust="l",
            label=label,
            nodesep="0.25",
            ranksep="0.5",
        ),
        dot_defaults("node", fontname=FONT, fontsize="10"),
        dot_defaults("edge", fontname=FONT, fontsize="9", color="#566573", arrowsize="0.7"),
    ]


def _dataset_edge(run_id: str, step: str, uri: str, direction: str, attempt: Any) -> str:
    sid = f"step:{run_id}/{step}"
    if direction == "write":
        return dot_edge(sid, f"ds:{uri}", label=f"wrote #{attempt}", color="#9a7d0a")
    return dot_edge(f"ds:{uri}", sid, label=f"read #{attempt}", style="dashed", color="#9a7d0a")


def lineage_dot(lin: Lineage) -> str:
    """DOT source: trigger chain -> run (its steps, results, datasets) -> triggered runs, and the
    other runs' steps that wrote the datasets it read or read the datasets it wrote."""
    rid = str(lin.run["id"])
    lines = _lineage_head(f"lineage {rid}", f"lineage of {lin.run['flow_name']} run {rid}")
    lines.extend(_ancestry_lines(lin))
    lines.extend(_run_cluster_lines(lin))
    # the runs it triggered
    for c in lin.children:
        lines.append(_run_node(c))
        lines.append(dot_edge(f"run:{rid}", f"run:{c['id']}", label="triggered", style="bold"))
    lines.extend(_chain_lines(lin, {str(a["id"]) for a in lin.ancestors} | {str(c["id"]) for c in lin.children}))
    # the datasets it read and wrote, and who else did
    for uri in sorted({d["uri"] for d in lin.datasets}):
        lines.append(dataset_node(uri))
    for key in sorted({(d["uri"], d["step"], d["direction"], d["attempt"]) for d in lin.datasets}):
        uri, step, direction, attempt = key
        lines.append(_dataset_edge(rid, step, uri, direction, attempt))
    lines.extend(_other_runs_lines(lin.related, lin.runs))
    if lin.truncated:
        lines.append(dot_node("more", shape="plaintext", label=f"{lin.truncated} older dataset events not shown"))
    lines.append("}")
    return "\n".join(lines) + "\n"


def _chain_lines(lin: Lineage, drawn: set[str]) -> list[str]:
    """The trigger chain's links not drawn yet (further generations, runs that triggered
    this one with an event besides its recorded parent), each labelled with its events."""
    if not lin.chain:
        return []
    lines: list[str] = []
    nodes = drawn | {str(lin.run["id"])}
    edges: set[tuple[str, str]] = {
        (str(p["id"]), str(c["id"])) for c, p in zip([lin.run, *lin.ancestors], lin.ancestors, strict=False)
    }
    edges |= {(str(lin.run["id"]), str(c["id"])) for c in lin.children}

    def link(parent: str, child: str, events: list[dict[str, Any]]) -> None:
        if (parent, child) in edges:
            return
        edges.add((parent, child))
        label = "triggered" + "".join(f"\n{clip(e['key'], 40)}" for e in events[:3])
        lines.append(dot_edge(f"run:{parent}", f"run:{child}", label=label, style="bold"))

    def node(summary: dict[str, Any]) -> str:
        rid = str(summary["id"])
        if rid not in nodes:
            nodes.add(rid)
            row = {
                "id": rid,
                "flow_name": summary["flow"],
                "state": summary["state"],
                "created_at": summary["created_at"],
            }
            lines.append(_run_node(row | ({"missing": True} if summary["missing"] else {})))
        return rid

    def up(child: str, parents: list[dict[str, Any]]) -> None:
        for n in parents:
            link(node(n["run"]), child, n["events"])
            up(str(n["run"]["id"]), n["triggered_by"])

    def down(parent: str, children: list[dict[str, Any]]) -> None:
        for n in children:
            link(parent, node(n["run"]), n["events"])
            down(str(n["run"]["id"]), n["triggered"])

    up(str(lin.run["id"]), lin.chain["triggered_by"])
    down(str(lin.run["id"]), lin.chain["triggered"])
    return lines


def _ancestry_lines(lin: Lineage) -> list[str]:
    """Where the run came from: the oldest known trigger, then each parent run triggering the next."""
    lines = []
    chain = [lin.run, *lin.ancestors]
    top = chain[-1]
    if not top.get("missing"):
        reason = lin.created_reason if top is lin.run else ""
        lines.append(
            dot_node(
                f"trigger:{top['id']}",
                shape="note",
                style="filled",
                fillcolor="#fdfefe",
                color="#7f8c8d",
                label=_trigger_text(top, reason),
            )
        )
        lines.append(dot_edge(f"trigger:{top['id']}", f"run:{top['id']}"))
    for r in lin.ancestors:
        lines.append(_run_node(r))
    for child, parent in zip(chain, chain[1:], strict=False):
        lines.append(dot_edge(f"run:{parent['id']}", f"run:{child['id']}", label="triggered", style="bold"))
    return lines


def _run_cluster_lines(lin: Lineage) -> list[str]:
    """The run and its step runs in one cluster, with the results they produced; past 60
    steps, only those that produced a result or touched a dataset."""
    rid = str(lin.run["id"])
    step_names = [s["step"] for s in lin.steps]
    involved = {d["step"] for d in lin.datasets} | set(lin.results)
    show = step_names if len(step_names) <= 60 else [n for n in step_names if n in involved]
    shown = set(show)
    states = {s["step"]: s["state"] for s in lin.steps}
    lines = [
        f"  subgraph {dot_quote('cluster_run:' + rid)} {{",
        dot_defaults("graph", "    ", label=f"step runs of {rid[:8]}", style="rounded", color="#aab7b8", fontsize="10"),
        _run_node(lin.run, focus=True, indent="    "),
    ]
    for name in show:
        lines.append(
            dot_node(
                f"step:{rid}/{name}",
                "    ",
                shape="box",
                style="rounded,filled",
                fillcolor=STEP_STATE_COLORS.get(states[name], "#ffffff"),
                label=f"{name}\n{states[name]}",
            )
        )
    for s in lin.spec.steps if lin.spec is not None else ():
        if s.name not in shown:
            continue
        ups = [u for u in s.upstream if u in shown]
        if not ups:
            lines.append(dot_edge(f"run:{rid}", f"step:{rid}/{s.name}", "    ", style="dotted", arrowhead="none"))
        for u in ups:
            lines.append(dot_edge(f"step:{rid}/{u}", f"step:{rid}/{s.name}", "    "))
    for name in show:
        if name in lin.results:
            lines.append(
                dot_node(
                    f"result:{rid}/{name}",
                    "    ",
                    shape="note",
                    style="filled",
                    fillcolor="#fbfcfc",
                    color="#aab7b8",
                    fontsize="8",
                    label=_result_preview(lin.results[name]),
                )
            )
            lines.append(
                dot_edge(
                    f"step:{rid}/{name}",
                    f"result:{rid}/{name}",
                    "    ",
                    style="dotted",
                    arrowhead="vee",
                    label="result",
                )
            )
    lines.append("  }")
    return lines


def dataset_node(uri: str) -> str:
    return dot_node(
        f"ds:{uri}", shape="cylinder", style="filled", fillcolor="#fef9e7", color="#9a7d0a", fontsize="9", label=uri
    )


def _other_runs_lines(events: Sequence[Mapping[str, Any]], runs: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """One cluster per run, holding its step nodes; edges to and from the datasets."""
    out: list[str] = []
    by_run: dict[str, set[str]] = {}
    for d in events:
        by_run.setdefault(d["run_id"], set()).add(d["step"])
    for rid in sorted(by_run):
        run = runs.get(rid) or _missing_run(rid)
        out.append(f"  subgraph {dot_quote('cluster_run:' + rid)} {{")
        out.append(
            dot_defaults(
                "graph",
                "    ",
                label=_run_label(run, " \u00b7 "),
                style="rounded,filled",
                fillcolor=RUN_STATE_COLORS.get(str(run.get("state")), "#fdfefe") + "40",
                color="#aab7b8",
                fontsize="9",
            )
        )
        for step in sorted(by_run[rid]):
            out.append(dot_node(f"step:{rid}/{step}", "    ", shape="box", style="rounded", label=step))
        out.append("  }")
    for key in sorted({(d["run_id"], d["step"], d["uri"], d["direction"], d["attempt"]) for d in events}):
        rid, step, uri, direction, attempt = key
        out.append(_dataset_edge(rid, step, uri, direction, attempt))
    return out


def lineage_text(lin: Lineage) -> str:
    r = lin.run
    created = (
        f"  created {fmt_time(r.get('created_at'))} by {r.get('trigger') or 'manual'} trigger "
        f"({r.get('triggered_by') or '-'})"
    )
    out = [
        f"run {r['id']}  flow {r['flow_name']}  version {r['version']}  state {r['state']}",
        created + (f": {lin.created_reason}" if lin.created_reason else ""),
    ]
    if lin.ancestors:
        out.append("triggered by runs (parent first):")
        for a in lin.ancestors:
            missing = "  (not in the store)" if a.get("missing") else ""
            out.append(f"  {a['id']}  {a['flow_name']}  {a['state']}{missing}")
    else:
        out.append("triggered by runs: none")
    if lin.children:
        out.append("triggered runs:")
        for c in lin.children:
            out.append(f"  {c['id']}  {c['flow_name']}  {c['state']}  {fmt_time(c.get('created_at'))}")
    else:
        out.append("triggered runs: none")
    out.append("step results:")
    states = {s["step"]: s["state"] for s in lin.steps}
    rows = [s["step"] for s in lin.steps if s["step"] in lin.results]
    for name in rows:
        out.append(f"  {name:<24} {states[name]:<16} {_result_preview(lin.results[name], 70)}")
    if not rows:
        out.append("  none")
    out.append("datasets:")
    if not lin.datasets:
        out.append("  none recorded (steps declare them with reads=/writes=)")
    for d in lin.datasets:
        out.append(f"  {d['direction']:<5} {d['uri']}  by step {d['step']} #{d['attempt']}  {fmt_time(d['at'])}")
    if lin.related:
        out.append("the same datasets in other runs:")
        for d in lin.related:
            run = lin.runs.get(d["run_id"]) or _missing_run(d["run_id"])
            out.append(
                f"  {d['direction']:<5} {d['uri']}  by {run['flow_name']} run {d['run_id'][:8]} "
                f"step {d['step']} #{d['attempt']}  {fmt_time(d['at'])}"
            )
        if lin.truncated:
            out.append(f"  ... and {lin.truncated} older events")
    if lin.chain is not None:
        out.extend(chain_lines(lin.chain, fmt_time))
    return "\n".join(out)


@dataclass
class DatasetLineage:
    uri: str
    events: list[dict[str, Any]]
    runs: dict[str, dict[str, Any]]


def load_dataset_lineage(store: Any, uri: str) -> DatasetLineage:
    events = store.dataset_events(uri=uri)
    if not events:
        raise NotFoundError(
            f"no step run read or wrote dataset {uri!r}; datasets are recorded "
            "when a step declaring reads=/writes= succeeds"
        )
    runs: dict[str, dict[str, Any]] = {}
    for rid in sorted({d["run_id"] for d in events}):
        try:
            runs[rid] = store.get_run(rid)
        except NotFoundError:
            runs[rid] = _missing_run(rid)
    return DatasetLineage(uri=uri, events=events, runs=runs)


def dataset_lineage_dot(lin: DatasetLineage) -> str:
    """DOT source: the dataset, with the step runs that wrote it (left) and read it (right)."""
    lines = _lineage_head(f"dataset {lin.uri}", f"lineage of dataset {lin.uri}")
    lines.append(dataset_node(lin.uri))
    lines.extend(_other_runs_lines(lin.events, lin.runs))
    lines.append("}")
    return "\n".join(lines) + "\n"


def dataset_lineage_text(lin: DatasetLineage) -> str:
    writers = sum(1 for d in lin.events if d["direction"] == "write")
    out = [f"dataset {lin.uri}: {writers} writes, {len(lin.events) - writers} reads in {len(lin.runs)} runs"]
    for d in lin.events:
        run = lin.runs[d["run_id"]]
        out.append(
            f"  {fmt_time(d['at'])}  {d['direction']:<5} {run['flow_name']:<16} run {d['run_id']}  "
            f"step {d['step']} #{d['attempt']}  (run {run['state']})"
        )
    return "\n".join(out)
