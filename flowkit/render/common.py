"""Shared by the renderers: style tables, escaping and formatting, and the run data a
picture needs (:class:`RunView`).

The names here carry no underscore because the other render modules import them; they are
the package's own helpers, not flowkit's API (:mod:`flowkit.render` re-exports what is).
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ..errors import FlowkitError
from ..secrets import mask_data, mask_params, mask_text, secret_values
from ..spec import FlowSpec, StepSpec, split_instance


class RenderError(FlowkitError):
    """Graphviz is missing or failed, or there is nothing to draw."""


# -- style tables -----------------------------------------------------------------------------
#: Node style per step kind (a sensor, Flow.sensor, is a dashed oval).
KIND_STYLES: dict[str, dict[str, str]] = {
    "task": {"shape": "box", "style": "rounded,filled", "fillcolor": "#ffffff", "color": "#34495e"},
    "branch": {"shape": "diamond", "style": "filled", "fillcolor": "#f5eef8", "color": "#8e44ad"},
    "map": {"shape": "box3d", "style": "filled", "fillcolor": "#eaf2f8", "color": "#1f618d"},
    "shell": {"shape": "component", "style": "filled", "fillcolor": "#f2f3f4", "color": "#1c2833"},
    "approval": {"shape": "octagon", "style": "filled", "fillcolor": "#fef5e7", "color": "#b9770e"},
    "compensation": {"shape": "box", "style": "rounded,filled,dashed", "fillcolor": "#fdedec", "color": "#943126"},
    "sensor": {"shape": "ellipse", "style": "filled,dashed", "fillcolor": "#e8f8f5", "color": "#117a65"},
}
UNKNOWN_KIND = {"shape": "box", "style": "filled,dotted", "fillcolor": "#fdfefe", "color": "#7f8c8d"}
KIND_HINT = {
    "task": "box",
    "branch": "diamond",
    "map": "stacked box",
    "shell": "command box",
    "approval": "octagon",
    "compensation": "dashed, undoes",
    "sensor": "dashed oval",
}

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
    "cancelled": "#85929e",
}
RUN_STATE_COLORS: dict[str, str] = {
    "queued": "#d6eaf8",
    "running": "#85c1e9",
    "paused": "#f9e79f",
    "success": "#a9dfbf",
    "failed": "#f1948a",
    "cancelled": "#bfc9ca",
}
#: Colour of a run's outcome (``runs.outcome``: what its compensation made of a failure).
RUN_OUTCOME_COLORS: dict[str, str] = {
    "compensating": "#f9e79f",
    "compensated": "#d5f5e3",
    "compensation failed": "#e74c3c",
}
#: A map step's instances drawn one by one (timeline lanes, report rows); the rest are counted.
MAP_INSTANCES_SHOWN = 10
#: Failed instances shown besides the first ones (with their errors), however many failed.
MAP_FAILED_SHOWN = 5
#: Edge style by the downstream step's trigger rule.
TRIGGER_EDGE_STYLES: dict[str, str] = {"all_success": "solid", "none_failed": "dashed", "all_done": "dotted"}
#: Which state an aggregate node (map step, collapsed group) is coloured by: the first present.
STATE_PRIORITY = (
    "failed",
    "upstream_failed",
    "cancelled",
    "up_for_retry",
    "running",
    "queued",
    "awaiting_approval",
    "scheduled",
    "pending",
    "skipped",
    "success",
)
STATE_ORDER = tuple(STEP_STATE_COLORS)
BRANCH_COLOR = "#8e44ad"
DIM = "#b3b6b7"
POOL_BADGE = "#2c3e50"
FONT = "Helvetica"
DEFAULT_CLUSTER_THRESHOLD = 150
DEFAULT_MAX_GROUP = 60


# -- escaping and formatting ---------------------------------------------------------------
_CTRL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def dot_quote(text: str) -> str:
    """A DOT double-quoted string (ids, plain labels)."""
    text = _CTRL.sub("", str(text))
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def esc(text: Any) -> str:
    """Text for a Graphviz HTML-like label or for HTML/SVG: escaped, control characters dropped."""
    return html.escape(_CTRL.sub("", str(text)), quote=True)


def clip(text: str, limit: int) -> str:
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


def fmt_limit(seconds: float) -> str:
    """A configured duration as the user would write it: 30s, 5m, 1.5h."""
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds >= size and (seconds / size) * 10 % 1 == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


def seconds_between(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return max((end - start).total_seconds(), 0.0)


def fmt_time(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value else "-"


def fmt_time_ms(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] if value else "-"


def _attrs(attrs: Mapping[str, str]) -> str:
    """``[k=v, ...]`` with keys sorted; values quoted unless they are HTML labels ``<...>``."""
    parts = []
    for key in sorted(attrs):
        value = attrs[key]
        parts.append(f"{key}={value}" if value.startswith("<") and value.endswith(">") else f"{key}={dot_quote(value)}")
    return "[" + ", ".join(parts) + "]"


def dot_node(node_id: str, indent: str = "  ", **attrs: str) -> str:
    return f"{indent}{dot_quote(node_id)} {_attrs(attrs)};"


def dot_edge(a: str, b: str, indent: str = "  ", **attrs: str) -> str:
    tail = f" {_attrs(attrs)}" if attrs else ""
    return f"{indent}{dot_quote(a)} -> {dot_quote(b)}{tail};"


def dot_defaults(kind: str, indent: str = "  ", **attrs: str) -> str:
    return f"{indent}{kind} {_attrs(attrs)};"


def html_label(rows: Sequence[str]) -> str:
    body = "".join(f"<TR><TD>{r}</TD></TR>" for r in rows)
    return f'<<TABLE BORDER="0" CELLBORDER="0" CELLSPACING="0" CELLPADDING="1">{body}</TABLE>>'


def small_text(text: str, color: str = "#4d5656") -> str:
    return f'<FONT POINT-SIZE="9" COLOR="{color}">{esc(text)}</FONT>'


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
    #: Map step -> its instances counted by state (all of them, however many).
    map_counts: dict[str, dict[str, int]] = field(default_factory=dict)
    #: Map step -> the instance rows drawn one by one (the first ones by index, then failed
    #: ones); their attempts are in ``attempts`` under the instance name.
    instances: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    #: Audit events of map instances, counted rather than listed.
    instance_events: int = 0
    #: The trigger chain both ways (flowkit.triggers.chain.trigger_chain); None: not read.
    chain: dict[str, Any] | None = None

    @property
    def run_id(self) -> str:
        return str(self.run["id"])

    @property
    def outcome(self) -> str | None:
        """What compensation made of a failed run ("compensated", ...), else None."""
        value = self.run.get("outcome")
        return str(value) if value else None

    def run_status(self) -> str:
        """The run's state with its outcome: "failed, compensated", "cancelled"."""
        return f"{self.run['state']}, {self.outcome}" if self.outcome else str(self.run["state"])

    def compensations(self) -> list[StepSpec]:
        """The compensation steps this run has rows for (none unless a failure started them)."""
        return [c for c in self.spec.compensations if c.name in self.steps]

    def step_attempts(self, name: str) -> list[dict[str, Any]]:
        return self.attempts.get(name, [])

    def row(self, name: str) -> dict[str, Any] | None:
        """The step_runs row of a step, compensation step or drawn map instance."""
        found = self.steps.get(name)
        if found is None and name.endswith("]"):
            parent = split_instance(name)[0]
            found = next((r for r in self.instances.get(parent, ()) if r["step"] == name), None)
        return found

    def state(self, name: str) -> str:
        row = self.row(name)
        return str(row["state"]) if row else "pending"

    def last_reason(self, name: str) -> str | None:
        """The audit reason of the step's latest state change (why a map step failed)."""
        return next(
            (
                str(e["reason"])
                for e in reversed(self.events)
                if e.get("step") == name and e.get("action") == "step_state" and e.get("reason")
            ),
            None,
        )


def load_run_view(
    store: Any, run_id: str, *, instances_shown: int = MAP_INSTANCES_SHOWN, failed_shown: int = MAP_FAILED_SHOWN
) -> RunView:
    """Read everything a run picture shows from the store (one run, pinned flow version).

    A map step's instances are counted by state; only the first ``instances_shown`` (and
    up to ``failed_shown`` failed ones after them) are read row by row, with their
    attempts, so a map of 10,000 elements costs what a map of 10 does. Secret params show
    as ``***``, and their values are masked in errors, tracebacks, output, results and the
    audit trail.
    """
    run = store.get_run(run_id)
    spec = store.flow_spec(run["flow_name"], run["version"])
    hidden = secret_values(spec, run["params"])
    run = {**run, "params": mask_params(spec, run["params"])}
    rows = store.run_picture(run_id, instances_shown=instances_shown, failed_shown=failed_shown)
    attempts: dict[str, list[dict[str, Any]]] = {}
    for a in rows["attempts"]:
        attempts.setdefault(a["step"], []).append(
            {**a, **{k: mask_text(a.get(k), hidden) for k in ("error", "traceback", "output")}}
        )
    for atts in attempts.values():
        atts.sort(key=lambda a: a["number"])
    return RunView(
        run=run,
        spec=spec,
        steps={s["step"]: s for s in rows["steps"]},
        attempts=attempts,
        events=[{**e, "reason": mask_text(e["reason"], hidden)} for e in rows["events"]],
        results=mask_data(rows["results"], hidden),
        datasets=rows["datasets"],
        map_counts=rows["map_counts"],
        instances=rows["instances"],
        instance_events=rows["instance_events"],
        chain=_trigger_chain(store, run_id),
    )


def _trigger_chain(store: Any, run_id: str) -> dict[str, Any] | None:
    from ..triggers.chain import trigger_chain

    return trigger_chain(store, run_id) if hasattr(store, "trigger_events") else None
