"""Pictures of flows and runs: Graphviz DOT source, a timeline SVG and a one-page HTML report.

Everything that builds text here is a pure function of plain data (a :class:`FlowSpec`, the
rows the store returns), so the output is deterministic: nodes in flow order, edges and
lineage nodes sorted, ids derived from names, every label escaped. Only :func:`dot_to`
runs the ``dot`` binary (through the ``graphviz`` package, imported there), and only the
``load_*`` helpers read the store. Importing this module loads neither Celery, SQLAlchemy
nor graphviz.

What is drawn:

* a step's *kind* picks its shape (:data:`KIND_STYLES`: task box, branch diamond, map 3-D
  box, approval octagon, sensor dashed ellipse); a step with a ``pool`` attribute gets a
  dark pool badge; the edge style says the downstream step's trigger rule;
* with a run, the fill colour is the step state (:data:`STEP_STATE_COLORS`), and the node
  says attempts, retries and durations; a map step is one node with counts by state;
* flows larger than ``cluster_threshold`` steps are grouped into clusters (by name prefix,
  else by topological layers) or, with ``collapse=True``, drawn one node per group.
"""

from __future__ import annotations

import html
import json
import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .errors import FlowkitError, NotFoundError
from .secrets import mask_data, mask_params, mask_text, secret_values
from .spec import FlowSpec, StepSpec

__all__ = [
    "ATTEMPT_STATE_COLORS", "KIND_STYLES", "STEP_STATE_COLORS", "TRIGGER_EDGE_STYLES",
    "DatasetLineage", "Lineage", "RenderError", "RunView",
    "dataset_lineage_dot", "dataset_lineage_text", "dot_to", "flow_dot", "group_steps",
    "lineage_dot", "lineage_text", "load_dataset_lineage", "load_lineage", "load_run_view",
    "report_html", "run_dot", "svg_for_html", "timeline_svg",
]


class RenderError(FlowkitError):
    """Graphviz is missing or failed, or there is nothing to draw."""


# -- style tables -----------------------------------------------------------------------------
#: Node style per step kind. "map", "approval" and "sensor" are ready for when the DSL has them.
KIND_STYLES: dict[str, dict[str, str]] = {
    "task": {"shape": "box", "style": "rounded,filled", "fillcolor": "#ffffff", "color": "#34495e"},
    "branch": {"shape": "diamond", "style": "filled", "fillcolor": "#f5eef8", "color": "#8e44ad"},
    "map": {"shape": "box3d", "style": "filled", "fillcolor": "#eaf2f8", "color": "#1f618d"},
    "approval": {"shape": "octagon", "style": "filled", "fillcolor": "#fef5e7", "color": "#b9770e"},
    "sensor": {"shape": "ellipse", "style": "filled,dashed", "fillcolor": "#e8f8f5",
               "color": "#117a65"},
}
_UNKNOWN_KIND = {"shape": "box", "style": "filled,dotted", "fillcolor": "#fdfefe", "color": "#7f8c8d"}
_KIND_HINT = {"task": "box", "branch": "diamond", "map": "stacked box", "approval": "octagon",
              "sensor": "dashed oval"}

#: Fill colour per step state (run view).
STEP_STATE_COLORS: dict[str, str] = {
    "pending": "#ffffff",
    "scheduled": "#e8eaf6",
    "awaiting_approval": "#fad7a0",
    "queued": "#d6eaf8",
    "running": "#85c1e9",
    "up_for_retry": "#f9e79f",
    "success": "#a9dfbf",
    "skipped": "#e5e7e9",
    "failed": "#f1948a",
    "upstream_failed": "#f5cba7",
    "cancelled": "#bfc9ca",
}
#: Fill colour per attempt state (timeline bars).
ATTEMPT_STATE_COLORS: dict[str, str] = {
    "queued": "#d6eaf8",
    "running": "#5dade2",
    "success": "#52be80",
    "failed": "#e74c3c",
    "skipped": "#bdc3c7",
}
RUN_STATE_COLORS: dict[str, str] = {
    "queued": "#d6eaf8", "running": "#85c1e9", "paused": "#f9e79f", "success": "#a9dfbf",
    "failed": "#f1948a", "cancelled": "#bfc9ca",
}
#: Edge style by the downstream step's trigger rule.
TRIGGER_EDGE_STYLES: dict[str, str] = {"all_success": "solid", "none_failed": "dashed",
                                       "all_done": "dotted"}
#: Which state an aggregate node (map step, collapsed group) is coloured by: the first present.
_STATE_PRIORITY = ("failed", "upstream_failed", "cancelled", "up_for_retry", "running", "queued",
                   "awaiting_approval", "scheduled", "pending", "skipped", "success")
_STATE_ORDER = tuple(STEP_STATE_COLORS)
_BRANCH_COLOR = "#8e44ad"
_DIM = "#b3b6b7"
_POOL_BADGE = "#2c3e50"
_FONT = "Helvetica"
DEFAULT_CLUSTER_THRESHOLD = 150
DEFAULT_MAX_GROUP = 60


# -- escaping and formatting ---------------------------------------------------------------
_CTRL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _q(text: str) -> str:
    """A DOT double-quoted string (ids, plain labels)."""
    text = _CTRL.sub("", str(text))
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _h(text: Any) -> str:
    """Text for a Graphviz HTML-like label or for HTML/SVG: escaped, control characters dropped."""
    return html.escape(_CTRL.sub("", str(text)), quote=True)


def _clip(text: str, limit: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        m, s = divmod(int(round(seconds)), 60)
        return f"{m}m{s:02d}s"
    h, rest = divmod(int(round(seconds)), 3600)
    return f"{h}h{rest // 60:02d}m"


def _fmt_limit(seconds: float) -> str:
    """A configured duration as the user would write it: 30s, 5m, 1.5h."""
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds >= size and (seconds / size) * 10 % 1 == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


def _secs(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return max((end - start).total_seconds(), 0.0)


def _fmt_time(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value else "-"


def _fmt_time_ms(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] if value else "-"


def _attrs(attrs: Mapping[str, str]) -> str:
    """``[k=v, ...]`` with keys sorted; values quoted unless they are HTML labels ``<...>``."""
    parts = []
    for key in sorted(attrs):
        value = attrs[key]
        parts.append(f"{key}={value}" if value.startswith("<") and value.endswith(">") else
                     f"{key}={_q(value)}")
    return "[" + ", ".join(parts) + "]"


def _node(node_id: str, indent: str = "  ", **attrs: str) -> str:
    return f"{indent}{_q(node_id)} {_attrs(attrs)};"


def _edge(a: str, b: str, indent: str = "  ", **attrs: str) -> str:
    tail = f" {_attrs(attrs)}" if attrs else ""
    return f"{indent}{_q(a)} -> {_q(b)}{tail};"


def _defaults(kind: str, indent: str = "  ", **attrs: str) -> str:
    return f"{indent}{kind} {_attrs(attrs)};"


def _html_label(rows: Sequence[str]) -> str:
    body = "".join(f"<TR><TD>{r}</TD></TR>" for r in rows)
    return f'<<TABLE BORDER="0" CELLBORDER="0" CELLSPACING="0" CELLPADDING="1">{body}</TABLE>>'


def _small(text: str, color: str = "#4d5656") -> str:
    return f'<FONT POINT-SIZE="9" COLOR="{color}">{_h(text)}</FONT>'


# -- the data a run picture needs ----------------------------------------------------------
@dataclass
class RunView:
    """One run as the renderers see it; build with :func:`load_run_view` or by hand in tests."""

    run: dict[str, Any]
    spec: FlowSpec
    steps: dict[str, dict[str, Any]]
    attempts: dict[str, list[dict[str, Any]]]
    events: list[dict[str, Any]] = field(default_factory=list)
    results: dict[str, Any] = field(default_factory=dict)
    datasets: list[dict[str, Any]] = field(default_factory=list)

    @property
    def run_id(self) -> str:
        return str(self.run["id"])

    def step_attempts(self, name: str) -> list[dict[str, Any]]:
        return self.attempts.get(name, [])

    def state(self, name: str) -> str:
        row = self.steps.get(name)
        return str(row["state"]) if row else "pending"


def load_run_view(store: Any, run_id: str) -> RunView:
    """Read everything a run picture shows from the store (one run, pinned flow version).

    Secret params show as ``***``, and their values are masked in errors, results and the
    audit trail.
    """
    run = store.get_run(run_id)
    spec = store.flow_spec(run["flow_name"], run["version"])
    hidden = secret_values(spec, run["params"])
    run = {**run, "params": mask_params(spec, run["params"])}
    attempts: dict[str, list[dict[str, Any]]] = {}
    for a in store.attempts(run_id):
        attempts.setdefault(a["step"], []).append(
            {**a, "error": mask_text(a.get("error"), hidden), "traceback": mask_text(a.get("traceback"), hidden)})
    for rows in attempts.values():
        rows.sort(key=lambda a: a["number"])
    return RunView(
        run=run, spec=spec, steps={s["step"]: s for s in store.step_runs(run_id)},
        attempts=attempts, events=[{**e, "reason": mask_text(e["reason"], hidden)} for e in store.events(run_id)],
        results=mask_data(store.results(run_id), hidden), datasets=store.dataset_events(run_id=run_id),
    )


# -- grouping for large flows --------------------------------------------------------------
def _layers(spec: FlowSpec) -> dict[str, int]:
    layer: dict[str, int] = {}
    known = set(spec.step_names)
    pending = list(spec.steps)
    while pending:  # specs are acyclic; repeat until every step's upstreams have a layer
        rest = []
        for s in pending:
            ups = [u for u in s.upstream if u in known]
            if all(u in layer for u in ups):
                layer[s.name] = 1 + max((layer[u] for u in ups), default=-1)
            else:
                rest.append(s)
        if len(rest) == len(pending):  # a cycle: put the rest on one more layer
            top = max(layer.values(), default=-1) + 1
            layer.update({s.name: top for s in rest})
            break
        pending = rest
    return layer


def _prefix(name: str) -> str | None:
    parts = re.split(r"[._]", name, maxsplit=1)
    return parts[0] if len(parts) == 2 and parts[0] else None


def group_steps(spec: FlowSpec, *, threshold: int = DEFAULT_CLUSTER_THRESHOLD,
                max_group: int = DEFAULT_MAX_GROUP) -> dict[str, list[str]] | None:
    """Groups of step names for a flow with more than ``threshold`` steps, else None.

    Steps are grouped by the name prefix before the first ``_`` or ``.`` when that splits
    the flow into several groups none of which holds most of it; otherwise by topological
    layers, consecutive layers packed into chunks of at most ``max_group`` steps. Keys are
    the group labels, in flow order; a step in no group is drawn on its own.
    """
    names = spec.step_names
    n = len(names)
    if n <= threshold:
        return None
    by_prefix: dict[str, list[str]] = {}
    for name in names:
        p = _prefix(name)
        if p is not None:
            by_prefix.setdefault(p, []).append(name)
    real = {k: v for k, v in by_prefix.items() if len(v) >= 2}
    grouped = sum(len(v) for v in real.values())
    if (len(real) >= 2 and grouped >= 0.8 * n and max(len(v) for v in real.values()) <= 0.6 * n):
        return real
    layer = _layers(spec)
    by_layer: dict[int, list[str]] = {}
    for name in names:
        by_layer.setdefault(layer[name], []).append(name)
    groups: dict[str, list[str]] = {}
    chunk: list[str] = []
    first = last = 0

    def close() -> None:
        if chunk:
            label = f"layer {first}" if first == last else f"layers {first}-{last}"
            groups[label] = list(chunk)
            chunk.clear()

    for lv in sorted(by_layer):
        members = by_layer[lv]
        if len(members) > max_group:  # one wide layer: split it into parts
            close()
            parts = [members[i:i + max_group] for i in range(0, len(members), max_group)]
            for i, part in enumerate(parts, 1):
                groups[f"layer {lv} part {i}/{len(parts)}"] = part
            continue
        if chunk and len(chunk) + len(members) > max_group:
            close()
        if not chunk:
            first = lv
        chunk.extend(members)
        last = lv
    close()
    return groups


# -- flow and run graphs -------------------------------------------------------------------
def _kind_style(kind: str) -> dict[str, str]:
    return dict(KIND_STYLES.get(kind, _UNKNOWN_KIND))


def _structure_notes(step: StepSpec) -> list[str]:
    notes = []
    if step.kind not in KIND_STYLES:  # known kinds say it with their shape
        notes.append(f"kind {step.kind}")
    if step.retry.retries:
        notes.append(f"retries {step.retry.retries}")
    if step.timeout_seconds:
        notes.append(f"timeout {_fmt_limit(step.timeout_seconds)}")
    if step.queue:
        notes.append(f"queue {step.queue}")
    if step.priority is not None:
        notes.append(f"priority {step.priority}")
    if step.trigger != "all_success":
        notes.append(step.trigger)
    return notes


def _map_counts(view: RunView, name: str) -> Counter[str] | None:
    """States of a map step's instances, from step rows named ``name[i]`` or carrying
    ``map_parent``/``map_index`` (the store has no map instances yet: None until it does)."""
    counts: Counter[str] = Counter()
    for key, row in view.steps.items():
        if key.startswith(f"{name}[") or row.get("map_parent") == name or (
                key == name and row.get("map_index") is not None):
            counts[str(row["state"])] += 1
    return counts or None


def _aggregate_state(counts: Mapping[str, int]) -> str:
    for state in _STATE_PRIORITY:
        if counts.get(state):
            return state
    return "pending"


def _counts_text(counts: Mapping[str, int]) -> str:
    order = {s: i for i, s in enumerate(_STATE_ORDER)}
    return ", ".join(f"{counts[s]} {s}" for s in sorted(counts, key=lambda s: (order.get(s, 99), s))
                     if counts[s])


def _step_run_lines(view: RunView, step: StepSpec) -> tuple[str, list[str]]:
    """The state the node is filled with, and the text lines about the run."""
    if step.kind == "map":
        counts = _map_counts(view, step.name)
        if counts:
            return _aggregate_state(counts), [f"{sum(counts.values())} items", _counts_text(counts)]
    state = view.state(step.name)
    atts = view.step_attempts(step.name)
    line = [state]
    if atts:
        line.append(f"{len(atts)} attempt{'s' if len(atts) != 1 else ''}")
        first = atts[0].get("started_at") or atts[0].get("dispatched_at")
        last_end = atts[-1].get("ended_at")
        span = _secs(first, last_end)
        if span is not None:
            line.append(fmt_duration(span))
    lines = [" \u00b7 ".join(line)]
    if len(atts) > 1:
        parts = [f"#{a['number']} {a['state']} {fmt_duration(_secs(a.get('started_at'), a.get('ended_at')))}"
                 for a in atts[-4:]]
        more = "\u2026, " if len(atts) > 4 else ""
        lines.append(f"retried {len(atts) - 1}x: {more}{', '.join(parts)}")
    return state, lines


def _step_node(step: StepSpec, view: RunView | None, *, compact: bool) -> tuple[str, dict[str, str]]:
    attrs = _kind_style(step.kind)
    rows = [f"<B>{_h(step.name)}</B>"]
    notes = _structure_notes(step)
    if notes and not compact:
        rows.append(_small(" \u00b7 ".join(notes)))
    if view is not None:
        state, lines = _step_run_lines(view, step)
        attrs["fillcolor"] = STEP_STATE_COLORS.get(state, "#ffffff")
        if "filled" not in attrs["style"]:
            attrs["style"] += ",filled"
        for line in lines if not compact else lines[:1]:
            rows.append(_small(line, "#1b2631"))
        if state == "running":
            attrs["penwidth"] = "2.5"
    pool = getattr(step, "pool", None)
    if pool:  # a dark badge row under the name
        badge = f'<FONT POINT-SIZE="9" COLOR="#ffffff"> pool {_h(pool)} </FONT>'
        rows.append(f'<TABLE BORDER="0" CELLPADDING="1" BGCOLOR="{_POOL_BADGE}">'
                    f"<TR><TD>{badge}</TD></TR></TABLE>")
    attrs["label"] = _html_label(rows)
    attrs["tooltip"] = _clip(f"{step.name}: {step.fn}" + (f" - {step.doc}" if step.doc else ""), 300)
    return step.name, attrs


def _branch_choice(view: RunView, name: str) -> set[str] | None:
    if view.state(name) != "success" or name not in view.results:
        return None
    value = view.results[name]
    if isinstance(value, str):
        return {value}
    if isinstance(value, list | tuple):
        return {str(v) for v in value}
    return set()


def _edge_attrs(up: StepSpec, down: StepSpec, view: RunView | None) -> dict[str, str]:
    attrs = {"style": TRIGGER_EDGE_STYLES.get(down.trigger, "solid")}
    if up.kind == "branch":
        attrs.update(color=_BRANCH_COLOR, dir="both", arrowtail="odiamond")
    if view is not None:
        taken = view.state(up.name) == "success"
        if up.kind == "branch":
            chosen = _branch_choice(view, up.name)
            taken = taken and (chosen is None or down.name in chosen)
        if up.kind == "branch" and view.state(up.name) == "success" and not taken:
            attrs["label"] = "not taken"
            attrs["fontcolor"] = _DIM
        if not taken:
            attrs["color"] = _DIM
        elif view.state(down.name) in ("running", "success", "failed", "up_for_retry", "queued"):
            attrs["penwidth"] = "1.6"
    return attrs


def _legend(spec: FlowSpec, view: RunView | None, title: str, note: str = "") -> str:
    cells = []
    if view is None:
        present = {s.kind for s in spec.steps}
        for kind in [k for k in KIND_STYLES if k in present] + sorted(present - set(KIND_STYLES)):
            st = _kind_style(kind)
            cells.append(f'<TD BGCOLOR="{st["fillcolor"]}" BORDER="1" COLOR="{st["color"]}">'
                         f'{_small(f"{kind} ({_KIND_HINT.get(kind, kind)})", "#1b2631")}</TD>')
        if any(getattr(s, "pool", None) for s in spec.steps):
            cells.append(f'<TD BGCOLOR="{_POOL_BADGE}">{_small("pool badge", "#ffffff")}</TD>')
    else:
        counts: Counter[str] = Counter()
        for s in spec.steps:
            counts[_step_run_lines(view, s)[0] if s.kind == "map" else view.state(s.name)] += 1
        for state in _STATE_ORDER:
            if counts.get(state):
                cells.append(f'<TD BGCOLOR="{STEP_STATE_COLORS[state]}" BORDER="1" COLOR="#7f8c8d">'
                             f'{_small(f"{state} {counts[state]}", "#1b2631")}</TD>')
    triggers = sorted({s.trigger for s in spec.steps if s.upstream},
                      key=lambda t: (list(TRIGGER_EDGE_STYLES).index(t) if t in TRIGGER_EDGE_STYLES
                                     else 99, t))
    marks = {"solid": "\u2014\u2014", "dashed": "- - -", "dotted": "\u00b7\u00b7\u00b7\u00b7"}
    for t in triggers:
        mark = marks.get(TRIGGER_EDGE_STYLES.get(t, "solid"), "")
        cells.append(f"<TD>{_small(f'{mark} {t}')}</TD>")
    rows = [f'<TR><TD COLSPAN="{max(len(cells), 1)}" ALIGN="LEFT"><B>{_h(title)}</B></TD></TR>']
    if note:
        rows.append(f'<TR><TD COLSPAN="{max(len(cells), 1)}" ALIGN="LEFT">{_small(note)}</TD></TR>')
    if cells:
        rows.append("<TR>" + "".join(cells) + "</TR>")
    return ('<<TABLE BORDER="0" CELLBORDER="0" CELLSPACING="3" CELLPADDING="2">'
            + "".join(rows) + "</TABLE>>")


def flow_dot(spec: FlowSpec, *, view: RunView | None = None, collapse: bool = False,
             cluster_threshold: int = DEFAULT_CLUSTER_THRESHOLD, max_group: int = DEFAULT_MAX_GROUP,
             datasets: bool = True) -> str:
    """DOT source of a flow's structure, or of one run of it when ``view`` is given."""
    groups = group_steps(spec, threshold=cluster_threshold, max_group=max_group)
    big = groups is not None
    steps = {s.name: s for s in spec.steps}
    index = {s.name: i for i, s in enumerate(spec.steps)}
    if view is None:
        title = f"flow {spec.name} \u00b7 {len(spec.steps)} steps"
    else:
        run = view.run
        title = (f"{spec.name} run {view.run_id[:8]} \u00b7 {run['state']} \u00b7 "
                 f"{fmt_duration(_secs(run.get('started_at'), run.get('ended_at')))}")
    note = ""
    if groups:
        note = (f"{len(groups)} groups of steps, drawn as "
                + ("one node each" if collapse else "clusters"))
    lines = [
        f"digraph {_q(spec.name)} {{",
        _defaults("graph", rankdir="LR", fontname=_FONT, fontsize="11", nodesep="0.25",
                  ranksep="0.45", labelloc="t", labeljust="l", tooltip=title,
                  label=_legend(spec, view, title, note)),
        _defaults("node", fontname=_FONT, fontsize="11", margin="0.08,0.04"),
        _defaults("edge", fontname=_FONT, fontsize="9", arrowsize="0.7", color="#566573"),
    ]
    member: dict[str, str] = {}
    if groups:
        for label, names in groups.items():
            for n in names:
                member[n] = label
    group_ids = {label: f"group:{i}" for i, label in enumerate(groups or {})}

    if groups and collapse:
        for label, names in groups.items():
            rows = [f"<B>{_h(label)}</B>", _small(f"{len(names)} steps")]
            attrs = {"shape": "box3d", "style": "filled", "fillcolor": "#f4f6f7", "color": "#34495e",
                     "margin": "0.14,0.08"}
            if view is not None:
                counts: Counter[str] = Counter(view.state(n) for n in names)
                attrs["fillcolor"] = STEP_STATE_COLORS.get(_aggregate_state(counts), "#ffffff")
                rows.append(_small(_counts_text(counts), "#1b2631"))
            kinds = Counter(steps[n].kind for n in names if steps[n].kind != "task")
            if kinds:
                rows.append(_small(", ".join(f"{kinds[k]} {k}" for k in sorted(kinds))))
            attrs["label"] = _html_label(rows)
            lines.append(_node(group_ids[label], **attrs))
        for s in spec.steps:
            if s.name not in member:
                sid, attrs = _step_node(s, view, compact=False)
                lines.append(_node(sid, **attrs))
        agg: Counter[tuple[str, str]] = Counter()
        for s in spec.steps:
            for u in s.upstream:
                a = group_ids[member[u]] if u in member else u
                b = group_ids[member[s.name]] if s.name in member else s.name
                if a != b:
                    agg[(a, b)] += 1
        order = {**{g: i for i, g in enumerate(group_ids.values())},
                 **{n: len(group_ids) + index[n] for n in steps if n not in member}}
        for (a, b), k in sorted(agg.items(), key=lambda kv: (order[kv[0][1]], order[kv[0][0]])):
            attrs = {"label": f"\u00d7{k}", "penwidth": f"{min(1 + k / 10, 4):.1f}"} if k > 1 else {}
            lines.append(_edge(a, b, **attrs))
        lines.append("}")
        return "\n".join(lines) + "\n"

    if groups:
        for i, (label, names) in enumerate(groups.items()):
            glabel = f"{label} ({len(names)} steps)"
            if view is not None:
                glabel += ": " + _counts_text(Counter(view.state(n) for n in names))
            lines.append(f"  subgraph {_q(f'cluster_{i}')} {{")
            lines.append(_defaults("graph", "    ", label=glabel, style="rounded,filled",
                                   fillcolor="#fbfcfc", color="#aab7b8", fontsize="10"))
            for n in names:
                sid, attrs = _step_node(steps[n], view, compact=True)
                lines.append(_node(sid, "    ", **attrs))
            lines.append("  }")
    for s in spec.steps:
        if s.name in member:
            continue
        sid, attrs = _step_node(s, view, compact=big)
        lines.append(_node(sid, **attrs))
    for s in spec.steps:  # edges in flow order of the downstream step, then of the upstream
        for u in sorted((u for u in s.upstream if u in steps), key=lambda u: index[u]):
            lines.append(_edge(u, s.name, **_edge_attrs(steps[u], s, view)))
    if datasets and not big:
        lines.extend(_dataset_lines(spec, view))
    lines.append("}")
    return "\n".join(lines) + "\n"


def _dataset_lines(spec: FlowSpec, view: RunView | None) -> list[str]:
    """Cylinders for the datasets steps declare; recorded reads/writes drawn solid in a run."""
    uris = sorted({u for s in spec.steps for u in (*s.reads, *s.writes)})
    if not uris:
        return []
    recorded = {(d["uri"], d["step"], d["direction"]) for d in (view.datasets if view else [])}
    out = []
    for uri in uris:
        out.append(_dataset_node(uri))
    for s in spec.steps:
        for uri in sorted(set(s.reads)):
            attrs = {"style": "dashed", "color": "#9a7d0a", "arrowhead": "empty"}
            if view is not None and (uri, s.name, "read") not in recorded:
                attrs["color"] = _DIM
            out.append(_edge("ds:" + uri, s.name, **attrs))
        for uri in sorted(set(s.writes)):
            attrs = {"color": "#9a7d0a", "arrowhead": "normal"}
            if view is not None and (uri, s.name, "write") not in recorded:
                attrs["color"] = _DIM
                attrs["style"] = "dashed"
            out.append(_edge(s.name, "ds:" + uri, **attrs))
    return out


def run_dot(view: RunView, **kwargs: Any) -> str:
    """DOT source of a run: the flow graph coloured by step state, with attempts and durations."""
    return flow_dot(view.spec, view=view, **kwargs)


# -- graphviz --------------------------------------------------------------------------------
def dot_to(source: str, fmt: str) -> bytes:
    """Lay out DOT source with the real ``dot`` binary: ``svg``, ``png`` (or ``dot``: the source)."""
    if fmt == "dot":
        return source.encode()
    import graphviz  # only here: the module must import fast

    try:
        return bytes(graphviz.pipe("dot", fmt, source.encode(), quiet=True))
    except graphviz.ExecutableNotFound as exc:
        raise RenderError("the Graphviz `dot` program is not installed; install graphviz "
                          "(e.g. apt-get install graphviz) or write .dot output") from exc
    except graphviz.CalledProcessError as exc:
        err = (exc.stderr or b"").decode(errors="replace").strip().splitlines()
        raise RenderError(f"dot failed: {err[-1] if err else exc}") from exc


def svg_for_html(svg: bytes | str) -> str:
    """Graphviz SVG made fit to inline in HTML: no XML prolog, doctype, comments or namespaces."""
    text = svg.decode() if isinstance(svg, bytes) else svg
    text = re.sub(r"<\?xml[^>]*\?>", "", text)
    text = re.sub(r"<!DOCTYPE[^>]*>", "", text, flags=re.S)
    text = re.sub(r"<!--.*?-->", "", text, flags=re.S)
    text = re.sub(r'\s+xmlns(:xlink)?="[^"]*"', "", text)
    return text.strip()


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


def _missing_run(run_id: str) -> dict[str, Any]:
    return {"id": run_id, "flow_name": "?", "state": "unknown", "missing": True,
            "created_at": None, "trigger": "", "triggered_by": ""}


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
    return Lineage(run={**run, "params": mask_params(spec, run["params"])}, spec=spec, steps=steps,
                   results=mask_data(store.results(run_id), hidden),
                   ancestors=ancestors, children=children, datasets=mine, related=related,
                   runs=runs, created_reason=mask_text(created[0]["reason"], hidden) or "" if created else "",
                   truncated=truncated)


def _run_label(run: Mapping[str, Any], sep: str = "\n") -> str:
    if run.get("missing"):
        return f"run {str(run['id'])[:8]} (not in the store)"
    return (f"{run['flow_name']} run {str(run['id'])[:8]}{sep}{run['state']} \u00b7 "
            f"{_fmt_time(run.get('created_at'))}")


def _run_node(run: Mapping[str, Any], *, focus: bool = False, indent: str = "  ") -> str:
    attrs = {"shape": "box", "style": "rounded,filled" + (",bold" if focus else ""),
             "fillcolor": RUN_STATE_COLORS.get(str(run.get("state")), "#ffffff"),
             "label": _run_label(run), "color": "#1b2631" if focus else "#566573"}
    if focus:
        attrs["penwidth"] = "2"
    return _node(f"run:{run['id']}", indent, **attrs)


def _result_preview(value: Any, limit: int = 48) -> str:
    try:
        text = json.dumps(value, sort_keys=True, default=str)
    except (TypeError, ValueError):
        text = str(value)
    return _clip(text, limit)


def _trigger_text(run: Mapping[str, Any], reason: str = "") -> str:
    text = f"{run.get('trigger') or 'manual'} trigger"
    if run.get("triggered_by"):
        text += f"\nby {run['triggered_by']}"
    if run.get("logical_date"):
        text += f"\nfor {_fmt_time(run['logical_date'])}"
    if reason:
        text += f"\n{_clip(reason, 60)}"
    return text


def _lineage_head(name: str, label: str) -> list[str]:
    return [
        f"digraph {_q(name)} {{",
        _defaults("graph", rankdir="LR", fontname=_FONT, fontsize="11", labelloc="t", labeljust="l",
                  label=label, nodesep="0.25", ranksep="0.5"),
        _defaults("node", fontname=_FONT, fontsize="10"),
        _defaults("edge", fontname=_FONT, fontsize="9", color="#566573", arrowsize="0.7"),
    ]


def _dataset_edge(run_id: str, step: str, uri: str, direction: str, attempt: Any) -> str:
    sid = f"step:{run_id}/{step}"
    if direction == "write":
        return _edge(sid, f"ds:{uri}", label=f"wrote #{attempt}", color="#9a7d0a")
    return _edge(f"ds:{uri}", sid, label=f"read #{attempt}", style="dashed", color="#9a7d0a")


def lineage_dot(lin: Lineage) -> str:
    """DOT source: trigger chain -> run (its steps, results, datasets) -> triggered runs, and the
    other runs' steps that wrote the datasets it read or read the datasets it wrote."""
    rid = str(lin.run["id"])
    lines = _lineage_head(f"lineage {rid}", f"lineage of {lin.run['flow_name']} run {rid}")
    # where it came from: the oldest known trigger, then each parent run triggering the next
    chain = [lin.run, *lin.ancestors]
    top = chain[-1]
    if not top.get("missing"):
        reason = lin.created_reason if top is lin.run else ""
        lines.append(_node(f"trigger:{top['id']}", shape="note", style="filled", fillcolor="#fdfefe",
                           color="#7f8c8d", label=_trigger_text(top, reason)))
        lines.append(_edge(f"trigger:{top['id']}", f"run:{top['id']}"))
    for r in lin.ancestors:
        lines.append(_run_node(r))
    for child, parent in zip(chain, chain[1:], strict=False):
        lines.append(_edge(f"run:{parent['id']}", f"run:{child['id']}", label="triggered", style="bold"))
    # the run and its step runs, with the results they produced
    step_names = [s["step"] for s in lin.steps]
    involved = {d["step"] for d in lin.datasets} | set(lin.results)
    show = step_names if len(step_names) <= 60 else [n for n in step_names if n in involved]
    shown = set(show)
    states = {s["step"]: s["state"] for s in lin.steps}
    lines.append(f"  subgraph {_q('cluster_run:' + rid)} {{")
    lines.append(_defaults("graph", "    ", label=f"step runs of {rid[:8]}", style="rounded",
                           color="#aab7b8", fontsize="10"))
    lines.append(_run_node(lin.run, focus=True, indent="    "))
    for name in show:
        lines.append(_node(f"step:{rid}/{name}", "    ", shape="box", style="rounded,filled",
                           fillcolor=STEP_STATE_COLORS.get(states[name], "#ffffff"),
                           label=f"{name}\n{states[name]}"))
    if lin.spec is not None:
        for s in lin.spec.steps:
            if s.name not in shown:
                continue
            ups = [u for u in s.upstream if u in shown]
            if not ups:
                lines.append(_edge(f"run:{rid}", f"step:{rid}/{s.name}", "    ", style="dotted",
                                   arrowhead="none"))
            for u in ups:
                lines.append(_edge(f"step:{rid}/{u}", f"step:{rid}/{s.name}", "    "))
    for name in show:
        if name in lin.results:
            lines.append(_node(f"result:{rid}/{name}", "    ", shape="note", style="filled",
                               fillcolor="#fbfcfc", color="#aab7b8", fontsize="8",
                               label=_result_preview(lin.results[name])))
            lines.append(_edge(f"step:{rid}/{name}", f"result:{rid}/{name}", "    ", style="dotted",
                               arrowhead="vee", label="result"))
    lines.append("  }")
    # the runs it triggered
    for c in lin.children:
        lines.append(_run_node(c))
        lines.append(_edge(f"run:{rid}", f"run:{c['id']}", label="triggered", style="bold"))
    # the datasets it read and wrote, and who else did
    for uri in sorted({d["uri"] for d in lin.datasets}):
        lines.append(_dataset_node(uri))
    for key in sorted({(d["uri"], d["step"], d["direction"], d["attempt"]) for d in lin.datasets}):
        uri, step, direction, attempt = key
        lines.append(_dataset_edge(rid, step, uri, direction, attempt))
    lines.extend(_other_runs_lines(lin.related, lin.runs))
    if lin.truncated:
        lines.append(_node("more", shape="plaintext",
                           label=f"{lin.truncated} older dataset events not shown"))
    lines.append("}")
    return "\n".join(lines) + "\n"


def _dataset_node(uri: str) -> str:
    return _node(f"ds:{uri}", shape="cylinder", style="filled", fillcolor="#fef9e7", color="#9a7d0a",
                 fontsize="9", label=uri)


def _other_runs_lines(events: Sequence[Mapping[str, Any]],
                      runs: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """One cluster per run, holding its step nodes; edges to and from the datasets."""
    out: list[str] = []
    by_run: dict[str, set[str]] = {}
    for d in events:
        by_run.setdefault(d["run_id"], set()).add(d["step"])
    for rid in sorted(by_run):
        run = runs.get(rid) or _missing_run(rid)
        out.append(f"  subgraph {_q('cluster_run:' + rid)} {{")
        out.append(_defaults("graph", "    ", label=_run_label(run, " \u00b7 "), style="rounded,filled",
                             fillcolor=RUN_STATE_COLORS.get(str(run.get("state")), "#fdfefe") + "40",
                             color="#aab7b8", fontsize="9"))
        for step in sorted(by_run[rid]):
            out.append(_node(f"step:{rid}/{step}", "    ", shape="box", style="rounded", label=step))
        out.append("  }")
    for key in sorted({(d["run_id"], d["step"], d["uri"], d["direction"], d["attempt"]) for d in events}):
        rid, step, uri, direction, attempt = key
        out.append(_dataset_edge(rid, step, uri, direction, attempt))
    return out


def lineage_text(lin: Lineage) -> str:
    r = lin.run
    created = (f"  created {_fmt_time(r.get('created_at'))} by {r.get('trigger') or 'manual'} trigger "
               f"({r.get('triggered_by') or '-'})")
    out = [f"run {r['id']}  flow {r['flow_name']}  version {r['version']}  state {r['state']}",
           created + (f": {lin.created_reason}" if lin.created_reason else "")]
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
            out.append(f"  {c['id']}  {c['flow_name']}  {c['state']}  {_fmt_time(c.get('created_at'))}")
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
        out.append(f"  {d['direction']:<5} {d['uri']}  by step {d['step']} #{d['attempt']}  "
                   f"{_fmt_time(d['at'])}")
    if lin.related:
        out.append("the same datasets in other runs:")
        for d in lin.related:
            run = lin.runs.get(d["run_id"]) or _missing_run(d["run_id"])
            out.append(f"  {d['direction']:<5} {d['uri']}  by {run['flow_name']} run {d['run_id'][:8]} "
                       f"step {d['step']} #{d['attempt']}  {_fmt_time(d['at'])}")
        if lin.truncated:
            out.append(f"  ... and {lin.truncated} older events")
    return "\n".join(out)


@dataclass
class DatasetLineage:
    uri: str
    events: list[dict[str, Any]]
    runs: dict[str, dict[str, Any]]


def load_dataset_lineage(store: Any, uri: str) -> DatasetLineage:
    events = store.dataset_events(uri=uri)
    if not events:
        raise NotFoundError(f"no step run read or wrote dataset {uri!r}; datasets are recorded "
                            "when a step declaring reads=/writes= succeeds")
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
    lines.append(_dataset_node(lin.uri))
    lines.extend(_other_runs_lines(lin.events, lin.runs))
    lines.append("}")
    return "\n".join(lines) + "\n"


def dataset_lineage_text(lin: DatasetLineage) -> str:
    writers = sum(1 for d in lin.events if d["direction"] == "write")
    out = [f"dataset {lin.uri}: {writers} writes, {len(lin.events) - writers} reads "
           f"in {len(lin.runs)} runs"]
    for d in lin.events:
        run = lin.runs[d["run_id"]]
        out.append(f"  {_fmt_time(d['at'])}  {d['direction']:<5} {run['flow_name']:<16} run {d['run_id']}  "
                   f"step {d['step']} #{d['attempt']}  (run {run['state']})")
    return "\n".join(out)


# -- timeline --------------------------------------------------------------------------------
def _nice_step(span: float, target: int = 8) -> float:
    raw = max(span / target, 1e-3)
    mag = 10.0 ** math.floor(math.log10(raw))
    for m in (1, 2, 5):
        if raw <= m * mag:
            return m * mag
    return 10 * mag


def _tick_label(seconds: float, step: float) -> str:
    if step < 1:
        return f"+{round(seconds * 1000, 3):g}ms"
    if step < 60:
        return f"+{seconds:.0f}s"
    if step < 3600:
        return f"+{seconds / 60:g}m"
    return f"+{seconds / 3600:g}h"


_WAIT_STYLE = 'stroke="#d68910" stroke-width="1.5" stroke-dasharray="3,2"'


def _svg_rect(cls: str, x: float, y: float, w: float, h: float, fill: str, tip: str,
              extra: str = "") -> str:
    return (f'<rect class="{_h(cls)}" x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{h:.1f}" '
            f'fill="{fill}"{extra}><title>{_h(tip)}</title></rect>')


def _svg_wait(x1: float, x2: float, y: float, tip: str) -> str:
    return (f'<line class="retry-wait" x1="{x1:.1f}" y1="{y:.1f}" x2="{x2:.1f}" y2="{y:.1f}" {_WAIT_STYLE}>'
            f"<title>{_h(tip)}</title></line>")


def timeline_svg(view: RunView, *, width: int = 1100, now: datetime | None = None) -> str:
    """A Gantt chart of a run: one row per step, one bar per attempt (queued part pale, run
    part coloured by outcome), failed attempts hatched, waits before retries dashed.

    ``now`` closes the bars of attempts still queued or running (default: the run's end, or
    the latest time known), so the same data always gives the same picture.
    """
    spec, run = view.spec, view.run
    times: list[datetime] = []
    for atts in view.attempts.values():
        for a in atts:
            times.extend(t for t in (a.get("dispatched_at"), a.get("started_at"), a.get("ended_at")) if t)
    times.extend(run[k] for k in ("started_at", "ended_at") if run.get(k))
    end_default = now or run.get("ended_at") or (max(times) if times else None)
    times.extend(row["next_attempt_at"] for row in view.steps.values()
                 if row.get("state") == "up_for_retry" and row.get("next_attempt_at"))
    if end_default:
        times.append(end_default)
    t0 = min(times) if times else None
    t1 = max(times) if times else None
    span = max(_secs(t0, t1) or 0.0, 0.001)
    label_w, right_pad, row_h, top = 210, 40, 22, 62
    chart_w = max(width - label_w - right_pad, 100)
    names = spec.step_names + sorted(set(view.attempts) - set(spec.step_names))
    rows_bottom = top + row_h * len(names)
    height = rows_bottom + 44

    def x(t: datetime | None) -> float:
        return label_w + chart_w * ((_secs(t0, t) or 0.0) / span)

    subtitle = (f"{run['state']} \u00b7 first dispatch {_fmt_time(t0)} \u00b7 "
                f"span {fmt_duration(_secs(t0, t1)) if t0 else '-'}")
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="flowkit-timeline" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" '
        'font-family="Helvetica, Arial, sans-serif" font-size="11">',
        '<defs><pattern id="fk-hatch" width="6" height="6" patternUnits="userSpaceOnUse" '
        'patternTransform="rotate(45)"><rect width="6" height="6" fill="#e74c3c"/>'
        '<line x1="0" y1="0" x2="0" y2="6" stroke="#922b21" stroke-width="2"/></pattern></defs>',
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="#ffffff"/>',
        f'<text x="10" y="18" font-size="13" font-weight="bold">{_h(spec.name)} run {_h(view.run_id)}</text>',
        f'<text x="10" y="34" fill="#4d5656">{_h(subtitle)}</text>',
    ]
    # time axis with a light grid
    tick = _nice_step(span)
    axis_y = top - 6
    out.append(f'<line class="axis" x1="{label_w}" y1="{axis_y}" x2="{label_w + chart_w}" y2="{axis_y}" '
               'stroke="#7f8c8d"/>')
    k = 0
    while k * tick <= span * 1.0001 and k <= 100:
        tx = label_w + chart_w * (k * tick / span)
        out.append(f'<line x1="{tx:.1f}" y1="{axis_y - 4}" x2="{tx:.1f}" y2="{rows_bottom}" '
                   'stroke="#eaeded"/>')
        out.append(f'<text class="tick" x="{tx:.1f}" y="{axis_y - 7}" text-anchor="middle" font-size="9" '
                   f'fill="#566573">{_h(_tick_label(k * tick, tick))}</text>')
        k += 1
    for i, name in enumerate(names):
        y = top + i * row_h
        if i % 2:
            out.append(f'<rect x="0" y="{y}" width="{width}" height="{row_h}" fill="#f8f9f9" '
                       'fill-opacity="0.7"/>')
        state = view.state(name)
        out.append(f'<text x="10" y="{y + 15}">{_h(_clip(name, 28))}</text>')
        out.append(f'<text x="{label_w - 8}" y="{y + 15}" text-anchor="end" font-size="9" '
                   f'fill="#566573">{_h(state)}</text>')
        atts = view.step_attempts(name)
        prev_end: datetime | None = None
        for a in atts:
            number, state_a = a["number"], str(a["state"])
            disp, start, end = a.get("dispatched_at"), a.get("started_at"), a.get("ended_at")
            if prev_end is not None and disp is not None and disp >= prev_end:
                out.append(_svg_wait(x(prev_end), x(disp), y + 11,
                                     f"{name}: waited {fmt_duration(_secs(prev_end, disp))} "
                                     f"before attempt {number}"))
            queued_until = start or end or end_default
            if disp is not None and queued_until is not None and queued_until > disp:
                out.append(_svg_rect("queued", x(disp), y + 6, max(x(queued_until) - x(disp), 1.0), 10,
                                     "#d6eaf8", f"{name} #{number} queued "
                                     f"{fmt_duration(_secs(disp, queued_until))}", ' stroke="#aed6f1"'))
            if start is not None:
                stop = end or end_default or start
                fill = ("url(#fk-hatch)" if state_a == "failed"
                        else ATTEMPT_STATE_COLORS.get(state_a, "#95a5a6"))
                tip = f"{name} attempt {number}: {state_a}, {fmt_duration(_secs(start, stop))}"
                tip += " so far" if end is None else ""
                tip += f" on {a['worker']}" if a.get("worker") else ""
                tip += f" - {_clip(a['error'], 200)}" if a.get("error") else ""
                bw = max(x(stop) - x(start), 2.0)
                out.append(_svg_rect(f"attempt {state_a}", x(start), y + 3, bw, 16, fill, tip,
                                     ' rx="2" stroke="#1b2631" stroke-width="0.5"'))
                if len(atts) > 1 or state_a == "failed":
                    out.append(f'<text x="{x(start) + bw + 3:.1f}" y="{y + 15}" font-size="9" '
                               f'fill="#1b2631">#{number}</text>')
            prev_end = end
        nxt = (view.steps.get(name) or {}).get("next_attempt_at")
        if state == "up_for_retry" and prev_end is not None and nxt is not None:
            out.append(_svg_wait(x(prev_end), x(nxt), y + 11, f"{name}: next attempt at {_fmt_time(nxt)}"))
    # legend
    ly = rows_bottom + 26
    lx = 10
    for label, fill in (("queued", "#d6eaf8"), ("running", ATTEMPT_STATE_COLORS["running"]),
                        ("success", ATTEMPT_STATE_COLORS["success"]), ("failed", "url(#fk-hatch)"),
                        ("skipped", ATTEMPT_STATE_COLORS["skipped"])):
        out.append(f'<rect x="{lx}" y="{ly - 10}" width="14" height="12" fill="{fill}" stroke="#1b2631" '
                   f'stroke-width="0.5"/><text x="{lx + 18}" y="{ly}">{label}</text>')
        lx += 90
    out.append(f'<line x1="{lx}" y1="{ly - 4}" x2="{lx + 24}" y2="{ly - 4}" {_WAIT_STYLE}/>'
               f'<text x="{lx + 30}" y="{ly}">wait before retry</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


# -- HTML report ------------------------------------------------------------------------------
_CSS = """
body{font-family:Helvetica,Arial,sans-serif;margin:24px;color:#1b2631;background:#fff}
h1{font-size:22px;margin:0 0 6px} h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #d5d8dc}
.meta{color:#4d5656;font-size:13px} .meta b{color:#1b2631}
.state{display:inline-block;padding:1px 8px;border-radius:9px;font-size:12px;border:1px solid #aab7b8}
table{border-collapse:collapse;font-size:12px;width:100%}
th,td{border-bottom:1px solid #e5e7e9;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f4f6f7} td.err{font-family:monospace;white-space:pre-wrap;color:#922b21;max-width:520px}
pre{background:#f8f9f9;padding:8px;overflow:auto;font-size:12px}
.figure{overflow:auto;border:1px solid #e5e7e9;padding:6px}
.figure svg{max-width:100%;height:auto}
footer{margin-top:32px;color:#7f8c8d;font-size:11px}
"""


def _state_badge(state: str, colors: Mapping[str, str] = STEP_STATE_COLORS) -> str:
    return f'<span class="state" style="background:{colors.get(state, "#ffffff")}">{_h(state)}</span>'


def report_html(view: RunView, *, graph_svg: str | bytes | None = None, generated_at: datetime | None = None,
                now: datetime | None = None) -> str:
    """One self-contained page: run header, run graph, timeline, step table, audit trail.

    ``graph_svg`` is the run graph as laid out by ``dot`` (made by :func:`dot_to` when not
    given; if Graphviz is missing the DOT source is shown instead).
    """
    run, spec = view.run, view.spec
    if graph_svg is None:
        try:
            graph_svg = dot_to(run_dot(view), "svg")
        except RenderError as exc:
            graph = f"<p>{_h(exc)}</p><pre>{_h(run_dot(view))}</pre>"
        else:
            graph = svg_for_html(graph_svg)
    else:
        graph = svg_for_html(graph_svg)
    timeline = timeline_svg(view, now=now).replace(' xmlns="http://www.w3.org/2000/svg"', "")
    title = f"{spec.name} run {view.run_id}"
    meta = [
        ("flow", spec.name), ("version", run.get("version") or "-"),
        ("trigger", f"{run.get('trigger') or '-'} by {run.get('triggered_by') or '-'}"),
        ("created", _fmt_time(run.get("created_at"))), ("started", _fmt_time(run.get("started_at"))),
        ("ended", _fmt_time(run.get("ended_at"))),
        ("duration", fmt_duration(_secs(run.get("started_at"), run.get("ended_at")))),
    ]
    if run.get("parent_run_id"):
        meta.append(("parent run", str(run["parent_run_id"])))
    if run.get("logical_date"):
        meta.append(("logical date", _fmt_time(run["logical_date"])))
    parts = [
        "<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
        f"<title>{_h(title)}</title>", f"<style>{_CSS}</style>", "</head>", "<body>",
        f'<h1>{_h(title)} {_state_badge(str(run["state"]), RUN_STATE_COLORS)}</h1>',
        '<p class="meta">' + " &middot; ".join(f"<b>{_h(k)}</b> {_h(v)}" for k, v in meta) + "</p>",
        f"<pre>params {_h(json.dumps(run.get('params') or {}, sort_keys=True, default=str))}</pre>",
        '<h2 id="graph">Run graph</h2>', f'<div class="figure">{graph}</div>',
        '<h2 id="timeline">Timeline</h2>', f'<div class="figure">{timeline}</div>',
        '<h2 id="steps">Steps</h2>',
        "<table><thead><tr><th>step</th><th>kind</th><th>state</th><th>attempts</th><th>duration</th>"
        "<th>worker</th><th>error</th></tr></thead><tbody>",
    ]
    for s in spec.steps:
        atts = view.step_attempts(s.name)
        last = atts[-1] if atts else {}
        state = view.state(s.name)
        first = atts[0].get("started_at") if atts else None
        dur = _secs(first, last.get("ended_at")) if atts else None
        err = last.get("error") if state != "success" else None
        parts.append(
            f'<tr data-step="{_h(s.name)}"><td>{_h(s.name)}</td><td>{_h(s.kind)}</td>'
            f"<td>{_state_badge(state)}</td><td>{len(atts)}</td><td>{_h(fmt_duration(dur))}</td>"
            f"<td>{_h(last.get('worker') or '-')}</td><td class=\"err\">{_h(err or '')}</td></tr>")
    parts.append("</tbody></table>")
    if view.datasets:
        parts.append('<h2 id="datasets">Datasets</h2><table><thead><tr><th>at (UTC)</th><th>direction</th>'
                     "<th>dataset</th><th>step</th><th>attempt</th></tr></thead><tbody>")
        for d in view.datasets:
            parts.append(f"<tr><td>{_h(_fmt_time_ms(d['at']))}</td><td>{_h(d['direction'])}</td>"
                         f"<td>{_h(d['uri'])}</td><td>{_h(d['step'])}</td><td>{_h(d['attempt'])}</td></tr>")
        parts.append("</tbody></table>")
    parts.append('<h2 id="audit">Audit trail</h2><table><thead><tr><th>at (UTC)</th><th>actor</th><th>action</th>'
                 "<th>where</th><th>change</th><th>reason</th></tr></thead><tbody>")
    for e in view.events:
        where = (f"{e['step']}#{e['attempt']}" if e.get("attempt") and e.get("step")
                 else (e.get("step") or "run"))
        change = f"{e.get('old_state') or ''} \u2192 {e.get('new_state') or ''}" if (
            e.get("old_state") or e.get("new_state")) else ""
        parts.append(f"<tr><td>{_h(_fmt_time_ms(e['at']))}</td><td>{_h(e['actor'])}</td><td>{_h(e['action'])}</td>"
                     f"<td>{_h(where)}</td><td>{_h(change)}</td><td>{_h(e.get('reason') or '')}</td></tr>")
    parts.append("</tbody></table>")
    stamp = f" at {_fmt_time(generated_at)}" if generated_at else ""
    parts.append(f"<footer>generated by flowkit{_h(stamp)}; self-contained, no external resources</footer>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


