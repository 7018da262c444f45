"""Graphviz DOT of flows and runs (grouping large flows), and the one call that runs ``dot``."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping
from typing import Any

from ..spec import FlowSpec, StepSpec
from .common import (
    BRANCH_COLOR,
    DEFAULT_CLUSTER_THRESHOLD,
    DEFAULT_MAX_GROUP,
    DIM,
    FONT,
    KIND_HINT,
    KIND_STYLES,
    POOL_BADGE,
    RUN_OUTCOME_COLORS,
    STATE_ORDER,
    STATE_PRIORITY,
    STEP_STATE_COLORS,
    TRIGGER_EDGE_STYLES,
    UNKNOWN_KIND,
    RenderError,
    RunView,
    clip,
    dot_defaults,
    dot_edge,
    dot_node,
    dot_quote,
    esc,
    fmt_duration,
    fmt_limit,
    html_label,
    seconds_between,
    small_text,
)
from .lineage import dataset_node


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


def group_steps(
    spec: FlowSpec, *, threshold: int = DEFAULT_CLUSTER_THRESHOLD, max_group: int = DEFAULT_MAX_GROUP
) -> dict[str, list[str]] | None:
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
    if len(real) >= 2 and grouped >= 0.8 * n and max(len(v) for v in real.values()) <= 0.6 * n:
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
            parts = [members[i : i + max_group] for i in range(0, len(members), max_group)]
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
    return dict(KIND_STYLES.get(kind, UNKNOWN_KIND))


def _structure_notes(step: StepSpec) -> list[str]:
    notes = []
    if step.kind not in KIND_STYLES:  # known kinds say it with their shape
        notes.append(f"kind {step.kind}")
    if step.kind == "map":
        notes.append(f"over {step.over}" if step.over else "map")
        if step.max_parallel:
            notes.append(f"max_parallel {step.max_parallel}")
    if step.kind == "approval":
        seconds = step.approval_timeout_seconds
        notes.append(f"timeout {fmt_limit(seconds)} \u2192 {step.on_timeout}" if seconds else "waits for a decision")
    if step.kind == "compensation" and step.compensates:
        notes.append(f"undoes {step.compensates}")
    if step.retry.retries:
        notes.append(f"retries {step.retry.retries}")
    if step.timeout_seconds:
        notes.append(f"timeout {fmt_limit(step.timeout_seconds)}")
    if step.queue:
        notes.append(f"queue {step.queue}")
    if step.priority is not None:
        notes.append(f"priority {step.priority}")
    if step.trigger != "all_success" and step.kind != "compensation":  # all_done, by design
        notes.append(step.trigger)
    return notes


#: Characters of a shell step's command shown in its node (the tooltip holds more).
SHELL_COMMAND_SHOWN = 48


def _command_row(step: StepSpec) -> str | None:
    """A shell step's command, one line in a fixed-width font, clipped and escaped."""
    if step.shell is None:
        return None
    command = esc(clip(step.shell.command, SHELL_COMMAND_SHOWN))
    return f'<FONT FACE="Courier" POINT-SIZE="9" COLOR="#1c2833">$ {command}</FONT>'


def map_counts_of(view: RunView, name: str) -> Counter[str] | None:
    """States of a map step's instances: the store's counts (:attr:`RunView.map_counts`),
    else, for a view built by hand, its step rows named ``name[i]``; None before expansion."""
    if name in view.map_counts:
        return Counter({k: v for k, v in view.map_counts[name].items() if v}) or None
    counts: Counter[str] = Counter()
    for key, row in view.steps.items():
        if key.startswith(f"{name}[") or row.get("map_parent") == name:
            counts[str(row["state"])] += 1
    return counts or None


def aggregate_state(counts: Mapping[str, int]) -> str:
    for state in STATE_PRIORITY:
        if counts.get(state):
            return state
    return "pending"


def counts_text(counts: Mapping[str, int]) -> str:
    order = {s: i for i, s in enumerate(STATE_ORDER)}
    return ", ".join(f"{counts[s]} {s}" for s in sorted(counts, key=lambda s: (order.get(s, 99), s)) if counts[s])


def approval_text(view: RunView, name: str) -> str | None:
    """Who decided an approval step and why ("approved by ann: looks right"), or since when
    it waits; None when it never waited."""
    state = view.state(name)
    decision = view.results.get(name)
    if isinstance(decision, dict) and "approved" in decision:
        verb = "approved" if decision.get("approved") else "rejected"
        reason = str(decision.get("reason") or "")
        return f"{verb} by {decision.get('by') or '?'}" + (f": {clip(reason, 60)}" if reason else "")
    if state == "awaiting_approval":
        row = view.steps.get(name) or {}
        since = row.get("started_at")
        text = f"awaiting a decision since {since:%H:%M:%S}" if since else "awaiting a decision"
        deadline = row.get("next_attempt_at")
        if deadline:
            on_timeout = view.spec.step(name).on_timeout
            text += f"; {on_timeout} at {deadline:%H:%M:%S}"
        return text
    return None


def _step_run_lines(view: RunView, step: StepSpec) -> tuple[str, list[str]]:
    """The state the node is filled with, and the text lines about the run."""
    if step.kind == "map":
        counts = map_counts_of(view, step.name)
        if counts:
            total = sum(counts.values())
            lines = [f"{total} instance{'s' if total != 1 else ''}", counts_text(counts)]
            failed = [r["step"] for r in view.instances.get(step.name, ()) if r.get("state") == "failed"]
            if failed:
                others = counts.get("failed", 0) - 1
                lines.append(f"first failed {failed[0]}" + (f" (+{others} more)" if others > 0 else ""))
            return aggregate_state(counts), lines
    state = view.state(step.name)
    if step.kind == "approval":
        decided = approval_text(view, step.name)
        if decided:
            return state, [state, decided]
    atts = view.step_attempts(step.name)
    line = [state]
    if atts:
        line.append(f"{len(atts)} attempt{'s' if len(atts) != 1 else ''}")
        first = atts[0].get("started_at") or atts[0].get("dispatched_at")
        last_end = atts[-1].get("ended_at")
        span = seconds_between(first, last_end)
        if span is not None:
            line.append(fmt_duration(span))
    lines = [" \u00b7 ".join(line)]
    if len(atts) > 1:
        parts = [
            f"#{a['number']} {a['state']} {fmt_duration(seconds_between(a.get('started_at'), a.get('ended_at')))}"
            for a in atts[-4:]
        ]
        more = "\u2026, " if len(atts) > 4 else ""
        lines.append(f"retried {len(atts) - 1}x: {more}{', '.join(parts)}")
    return state, lines


def _step_node(step: StepSpec, view: RunView | None, *, compact: bool) -> tuple[str, dict[str, str]]:
    attrs = _kind_style(step.kind)
    rows = [f"<B>{esc(step.name)}</B>"]
    notes = _structure_notes(step)
    if notes and not compact:
        rows.append(small_text(" \u00b7 ".join(notes)))
    command = _command_row(step)
    if command and not compact:
        rows.append(command)
    if view is not None:
        state, lines = _step_run_lines(view, step)
        attrs["fillcolor"] = STEP_STATE_COLORS.get(state, "#ffffff")
        if "filled" not in attrs["style"]:
            attrs["style"] += ",filled"
        for line in lines if not compact else lines[:1]:
            rows.append(small_text(line, "#1b2631"))
        if state == "running":
            attrs["penwidth"] = "2.5"
    pool = getattr(step, "pool", None)
    if pool:  # a dark badge row under the name
        badge = f'<FONT POINT-SIZE="9" COLOR="#ffffff"> pool {esc(pool)} </FONT>'
        rows.append(f'<TABLE BORDER="0" CELLPADDING="1" BGCOLOR="{POOL_BADGE}"><TR><TD>{badge}</TD></TR></TABLE>')
    attrs["label"] = html_label(rows)
    what = f"$ {step.shell.command}" if step.shell is not None else step.fn
    attrs["tooltip"] = clip(f"{step.name}: {what}" + (f" - {step.doc}" if step.doc else ""), 300)
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
        attrs.update(color=BRANCH_COLOR, dir="both", arrowtail="odiamond")
    if view is not None:
        taken = view.state(up.name) == "success"
        if up.kind == "branch":
            chosen = _branch_choice(view, up.name)
            taken = taken and (chosen is None or down.name in chosen)
        if up.kind == "branch" and view.state(up.name) == "success" and not taken:
            attrs["label"] = "not taken"
            attrs["fontcolor"] = DIM
        if not taken:
            attrs["color"] = DIM
        elif view.state(down.name) in ("running", "success", "failed", "up_for_retry", "queued"):
            attrs["penwidth"] = "1.6"
    return attrs


def _legend(spec: FlowSpec, view: RunView | None, title: str, note: str = "") -> str:
    cells = []
    if view is None:
        present = {s.kind for s in (*spec.steps, *spec.compensations)}
        for kind in [k for k in KIND_STYLES if k in present] + sorted(present - set(KIND_STYLES)):
            st = _kind_style(kind)
            cells.append(
                f'<TD BGCOLOR="{st["fillcolor"]}" BORDER="1" COLOR="{st["color"]}">'
                f"{small_text(f'{kind} ({KIND_HINT.get(kind, kind)})', '#1b2631')}</TD>"
            )
        if any(getattr(s, "pool", None) for s in spec.steps):
            cells.append(f'<TD BGCOLOR="{POOL_BADGE}">{small_text("pool badge", "#ffffff")}</TD>')
    else:
        counts: Counter[str] = Counter()
        for s in spec.steps:
            counts[_step_run_lines(view, s)[0] if s.kind == "map" else view.state(s.name)] += 1
        for state in STATE_ORDER:
            if counts.get(state):
                cells.append(
                    f'<TD BGCOLOR="{STEP_STATE_COLORS[state]}" BORDER="1" COLOR="#7f8c8d">'
                    f"{small_text(f'{state} {counts[state]}', '#1b2631')}</TD>"
                )
        undo = Counter(view.state(c.name) for c in view.compensations())
        if undo:
            st = KIND_STYLES["compensation"]
            cells.append(
                f'<TD BGCOLOR="{st["fillcolor"]}" BORDER="1" COLOR="{st["color"]}">'
                f"{small_text('compensation: ' + counts_text(undo), '#1b2631')}</TD>"
            )
        if view.outcome:
            color = RUN_OUTCOME_COLORS.get(view.outcome, "#ffffff")
            cells.append(
                f'<TD BGCOLOR="{color}" BORDER="1" COLOR="#7f8c8d">'
                f"{small_text(f'outcome {view.outcome}', '#1b2631')}</TD>"
            )
    triggers = sorted(
        {s.trigger for s in spec.steps if s.upstream},
        key=lambda t: (list(TRIGGER_EDGE_STYLES).index(t) if t in TRIGGER_EDGE_STYLES else 99, t),
    )
    marks = {"solid": "\u2014\u2014", "dashed": "- - -", "dotted": "\u00b7\u00b7\u00b7\u00b7"}
    for t in triggers:
        mark = marks.get(TRIGGER_EDGE_STYLES.get(t, "solid"), "")
        cells.append(f"<TD>{small_text(f'{mark} {t}')}</TD>")
    rows = [f'<TR><TD COLSPAN="{max(len(cells), 1)}" ALIGN="LEFT"><B>{esc(title)}</B></TD></TR>']
    if note:
        rows.append(f'<TR><TD COLSPAN="{max(len(cells), 1)}" ALIGN="LEFT">{small_text(note)}</TD></TR>')
    if cells:
        rows.append("<TR>" + "".join(cells) + "</TR>")
    return '<<TABLE BORDER="0" CELLBORDER="0" CELLSPACING="3" CELLPADDING="2">' + "".join(rows) + "</TABLE>>"


def flow_dot(
    spec: FlowSpec,
    *,
    view: RunView | None = None,
    collapse: bool = False,
    cluster_threshold: int = DEFAULT_CLUSTER_THRESHOLD,
    max_group: int = DEFAULT_MAX_GROUP,
    datasets: bool = True,
) -> str:
    """DOT source of a flow's structure, or of one run of it when ``view`` is given."""
    groups = group_steps(spec, threshold=cluster_threshold, max_group=max_group)
    lines = _graph_head(spec, view, groups, collapse)
    if groups and collapse:
        lines.extend(_collapsed_body(spec, view, groups))
    else:
        lines.extend(_expanded_body(spec, view, groups, datasets))
    lines.append("}")
    return "\n".join(lines) + "\n"


def _graph_head(spec: FlowSpec, view: RunView | None, groups: dict[str, list[str]] | None, collapse: bool) -> list[str]:
    """The ``digraph`` line, the title and legend, and the node and edge defaults."""
    if view is None:
        title = f"flow {spec.name} \u00b7 {len(spec.steps)} steps"
    else:
        run = view.run
        title = (
            f"{spec.name} run {view.run_id[:8]} \u00b7 {view.run_status()} \u00b7 "
            f"{fmt_duration(seconds_between(run.get('started_at'), run.get('ended_at')))}"
        )
    note = ""
    if groups:
        note = f"{len(groups)} groups of steps, drawn as " + ("one node each" if collapse else "clusters")
    return [
        f"digraph {dot_quote(spec.name)} {{",
        dot_defaults(
            "graph",
            rankdir="LR",
            fontname=FONT,
            fontsize="11",
            nodesep="0.25",
            ranksep="0.45",
            labelloc="t",
            labeljust="l",
            tooltip=title,
            label=_legend(spec, view, title, note),
        ),
        dot_defaults("node", fontname=FONT, fontsize="11", margin="0.08,0.04"),
        dot_defaults("edge", fontname=FONT, fontsize="9", arrowsize="0.7", color="#566573"),
    ]


def _collapsed_body(spec: FlowSpec, view: RunView | None, groups: dict[str, list[str]]) -> list[str]:
    """One node per group (its steps counted, by state in a run), the steps in no group,
    and one edge per pair of groups that steps connect, labelled with how many do."""
    steps = {s.name: s for s in spec.steps}
    member = {n: label for label, names in groups.items() for n in names}
    group_ids = {label: f"group:{i}" for i, label in enumerate(groups)}
    lines = [dot_node(group_ids[label], **_group_node(label, names, steps, view)) for label, names in groups.items()]
    for s in spec.steps:
        if s.name not in member:
            sid, attrs = _step_node(s, view, compact=False)
            lines.append(dot_node(sid, **attrs))

    def node_of(name: str) -> str:
        return group_ids[member[name]] if name in member else name

    agg: Counter[tuple[str, str]] = Counter()
    for s in spec.steps:
        for u in s.upstream:
            a, b = node_of(u), node_of(s.name)
            if a != b:
                agg[(a, b)] += 1
    index = {s.name: i for i, s in enumerate(spec.steps)}
    order = {
        **{g: i for i, g in enumerate(group_ids.values())},
        **{n: len(group_ids) + index[n] for n in steps if n not in member},
    }
    for (a, b), k in sorted(agg.items(), key=lambda kv: (order[kv[0][1]], order[kv[0][0]])):
        attrs = {"label": f"\u00d7{k}", "penwidth": f"{min(1 + k / 10, 4):.1f}"} if k > 1 else {}
        lines.append(dot_edge(a, b, **attrs))
    lines.extend(_compensation_lines(spec, view, node_of, compact=True))
    return lines


def _group_node(label: str, names: list[str], steps: Mapping[str, StepSpec], view: RunView | None) -> dict[str, str]:
    """The attributes of a collapsed group's node: its size, its states and its kinds of step."""
    rows = [f"<B>{esc(label)}</B>", small_text(f"{len(names)} steps")]
    attrs = {"shape": "box3d", "style": "filled", "fillcolor": "#f4f6f7", "color": "#34495e", "margin": "0.14,0.08"}
    if view is not None:
        counts: Counter[str] = Counter(view.state(n) for n in names)
        attrs["fillcolor"] = STEP_STATE_COLORS.get(aggregate_state(counts), "#ffffff")
        rows.append(small_text(counts_text(counts), "#1b2631"))
    kinds = Counter(steps[n].kind for n in names if steps[n].kind != "task")
    if kinds:
        rows.append(small_text(", ".join(f"{kinds[k]} {k}" for k in sorted(kinds))))
    attrs["label"] = html_label(rows)
    return attrs


def _expanded_body(
    spec: FlowSpec, view: RunView | None, groups: dict[str, list[str]] | None, datasets: bool
) -> list[str]:
    """Every step as a node (inside its group's cluster when the flow is grouped), the
    edges, the compensation steps and, for a small flow, the datasets."""
    big = groups is not None
    steps = {s.name: s for s in spec.steps}
    index = {s.name: i for i, s in enumerate(spec.steps)}
    lines: list[str] = []
    member: set[str] = set()
    for i, (label, names) in enumerate((groups or {}).items()):
        member.update(names)
        glabel = f"{label} ({len(names)} steps)"
        if view is not None:
            glabel += ": " + counts_text(Counter(view.state(n) for n in names))
        lines.append(f"  subgraph {dot_quote(f'cluster_{i}')} {{")
        lines.append(
            dot_defaults(
                "graph",
                "    ",
                label=glabel,
                style="rounded,filled",
                fillcolor="#fbfcfc",
                color="#aab7b8",
                fontsize="10",
            )
        )
        for n in names:
            sid, attrs = _step_node(steps[n], view, compact=True)
            lines.append(dot_node(sid, "    ", **attrs))
        lines.append("  }")
    for s in spec.steps:
        if s.name in member:
            continue
        sid, attrs = _step_node(s, view, compact=big)
        lines.append(dot_node(sid, **attrs))
    for s in spec.steps:  # edges in flow order of the downstream step, then of the upstream
        for u in sorted((u for u in s.upstream if u in steps), key=lambda u: index[u]):
            lines.append(dot_edge(u, s.name, **_edge_attrs(steps[u], s, view)))
    lines.extend(_compensation_lines(spec, view, lambda n: n, compact=big))
    if datasets and not big:
        lines.extend(_dataset_lines(spec, view))
    return lines


def _compensation_lines(spec: FlowSpec, view: RunView | None, target: Any, *, compact: bool) -> list[str]:
    """The compensation steps in a dashed cluster, each with a dashed "undoes" edge back to
    the step it undoes, and dashed edges in the order they run (the last step's first).

    In a run, only the compensations the run started are drawn (a run that compensated
    nothing shows none). ``target`` maps a step name to its node id (its group's, when
    groups are drawn one node each).
    """
    comps = list(spec.compensations) if view is None else view.compensations()
    if not comps:
        return []
    color = KIND_STYLES["compensation"]["color"]
    label = (
        "on failure: undo the succeeded steps, last first"
        if view is None
        else f"compensation ({view.outcome or 'not started'})"
    )
    out = [
        '  subgraph "cluster_compensation" {',
        dot_defaults("graph", "    ", label=label, style="rounded,dashed", color=color, fontcolor=color, fontsize="10"),
    ]
    for comp in comps:
        sid, attrs = _step_node(comp, view, compact=compact)
        out.append(dot_node(sid, "    ", **attrs))
    out.append("  }")
    drawn = {c.name for c in comps}
    before = {c.name: {u for u in c.upstream if u in drawn} for c in comps}
    for comp in comps:  # an upstream of a compensation runs before it; implied edges left out
        for up in sorted(before[comp.name], key=spec.position.__getitem__):
            if any(up in _reaches(before, other) for other in before[comp.name] - {up}):
                continue
            attrs = {"style": "dashed", "color": color}
            if view is not None and view.state(up) not in ("success", "failed", "skipped"):
                attrs["color"] = DIM
            out.append(dot_edge(up, comp.name, **attrs))
    for comp in comps:  # the node says "undoes X" too: these edges stay light and unlabelled
        if comp.compensates:
            out.append(
                dot_edge(
                    comp.name,
                    target(comp.compensates),
                    style="dotted",
                    color=color,
                    arrowhead="empty",
                    penwidth="0.7",
                    constraint="false",
                    tooltip=f"{comp.name} undoes {comp.compensates}",
                )
            )
    return out


def _reaches(before: Mapping[str, set[str]], name: str) -> set[str]:
    """Every compensation that runs before ``name`` (its upstreams, transitively)."""
    seen: set[str] = set()
    todo = list(before.get(name, ()))
    while todo:
        up = todo.pop()
        if up not in seen:
            seen.add(up)
            todo.extend(before.get(up, ()))
    return seen


def _dataset_lines(spec: FlowSpec, view: RunView | None) -> list[str]:
    """Cylinders for the datasets steps declare; recorded reads/writes drawn solid in a run."""
    uris = sorted({u for s in spec.steps for u in (*s.reads, *s.writes)})
    if not uris:
        return []
    recorded = {(d["uri"], d["step"], d["direction"]) for d in (view.datasets if view else [])}
    out = []
    for uri in uris:
        out.append(dataset_node(uri))
    for s in spec.steps:
        for uri in sorted(set(s.reads)):
            attrs = {"style": "dashed", "color": "#9a7d0a", "arrowhead": "empty"}
            if view is not None and (uri, s.name, "read") not in recorded:
                attrs["color"] = DIM
            out.append(dot_edge("ds:" + uri, s.name, **attrs))
        for uri in sorted(set(s.writes)):
            attrs = {"color": "#9a7d0a", "arrowhead": "normal"}
            if view is not None and (uri, s.name, "write") not in recorded:
                attrs["color"] = DIM
                attrs["style"] = "dashed"
            out.append(dot_edge(s.name, "ds:" + uri, **attrs))
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
        raise RenderError(
            "the Graphviz `dot` program is not installed; install graphviz "
            "(e.g. apt-get install graphviz) or write .dot output"
        ) from exc
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
