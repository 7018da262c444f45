"""The timeline SVG of a run: one lane per step, a bar per attempt, waits drawn dashed.

A map step is one lane with a bar over its span and its instances counted by state, then a
lane for each of the first instances (:data:`~.common.MAP_INSTANCES_SHOWN`) and one line
for the rest, so a map of 10,000 elements stays a page. An approval is a bar of waiting
until its decision, with who decided and why; the compensation steps a failed run started
come last, under their own heading.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from ..sla.picture import DeadlinePicture, deadline_picture
from .common import (
    ATTEMPT_STATE_COLORS,
    KIND_STYLES,
    STEP_STATE_COLORS,
    RenderError,
    RunView,
    clip,
    esc,
    fmt_duration,
    fmt_time,
    seconds_between,
)
from .graph import aggregate_state, approval_text, counts_text, map_counts_of


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


def _svg_rect(cls: str, x: float, y: float, w: float, h: float, fill: str, tip: str, extra: str = "") -> str:
    return (
        f'<rect class="{esc(cls)}" x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{h:.1f}" '
        f'fill="{fill}"{extra}><title>{esc(tip)}</title></rect>'
    )


def _svg_wait(x1: float, x2: float, y: float, tip: str) -> str:
    return (
        f'<line class="retry-wait" x1="{x1:.1f}" y1="{y:.1f}" x2="{x2:.1f}" y2="{y:.1f}" {_WAIT_STYLE}>'
        f"<title>{esc(tip)}</title></line>"
    )


@dataclass(frozen=True)
class _Lane:
    #: "step" (bars per attempt), "map" (the map step's span and counts), "approval",
    #: "more" (instances not drawn, counted) or "heading" (the compensation section).
    kind: str
    name: str
    label: str
    text: str = ""
    #: Drawn under its map step (an instance, or the count of those not drawn).
    indent: bool = False


def _lanes(view: RunView) -> list[_Lane]:
    lanes: list[_Lane] = []
    for step in view.spec.steps:
        if step.kind == "approval":
            lanes.append(_Lane("approval", step.name, step.name))
            continue
        counts = map_counts_of(view, step.name) if step.kind == "map" else None
        if not counts:
            lanes.append(_Lane("step", step.name, step.name))
            continue
        total = sum(counts.values())
        lanes.append(_Lane("map", step.name, step.name, f"{total} instances: {counts_text(counts)}"))
        shown = view.instances.get(step.name)
        if shown is None:  # a view built by hand: its instance rows are in steps
            shown = sorted(
                (r for k, r in view.steps.items() if k.startswith(f"{step.name}[")),
                key=lambda r: int(str(r["step"]).rsplit("[", 1)[1].rstrip("]")),
            )
        for row in shown:
            lanes.append(_Lane("step", str(row["step"]), str(row["step"]), indent=True))
        if total > len(shown):
            lanes.append(
                _Lane(
                    "more",
                    step.name,
                    f"\u2026 {total - len(shown)} more",
                    f"{total - len(shown)} more instances not drawn; "
                    f"see flowkit runs show {view.run_id[:8]} --step {step.name}[i]",
                    indent=True,
                )
            )
    started = {c.name: view.steps[c.name].get("started_at") for c in view.compensations()}
    # in the order they ran (the last step's first); those not started yet after them
    comps = sorted(
        view.compensations(),
        key=lambda c: (started[c.name] is None, str(started[c.name] or ""), view.spec.position[c.name]),
    )
    if comps:
        lanes.append(_Lane("heading", "", f"compensation: {view.outcome or 'running'}"))
        lanes.extend(_Lane("step", c.name, c.name) for c in comps)
    known = {lane.name for lane in lanes}
    lanes.extend(_Lane("step", n, n) for n in sorted(set(view.attempts) - known))
    return lanes


def _approval_lane(view: RunView, name: str, y: float, x: Any, end_default: datetime | None) -> list[str]:
    """The wait from when the approval became ready until its decision (or until now), and
    who decided and why."""
    row = view.steps.get(name) or {}
    start = row.get("started_at")
    if start is None:
        return []
    decided = row.get("ended_at")
    stop = decided or end_default or start
    text = approval_text(view, name) or view.state(name)
    bw = max(x(stop) - x(start), 2.0)
    out = [
        _svg_rect(
            "approval-wait",
            x(start),
            y + 4,
            bw,
            14,
            STEP_STATE_COLORS["awaiting_approval"],
            f"{name}: waited {fmt_duration(seconds_between(start, stop))}"
            + ("" if decided else " so far")
            + f"; {text}",
            ' rx="2" stroke="#b9770e" stroke-dasharray="3,2"',
        )
    ]
    if decided is not None:
        mark = ATTEMPT_STATE_COLORS["success"] if view.state(name) == "success" else ATTEMPT_STATE_COLORS["failed"]
        out.append(f'<rect class="decision" x="{x(decided) - 2:.1f}" y="{y + 2}" width="4" height="18" fill="{mark}"/>')
    out.append(
        f'<text class="decision-text" x="{x(start) + bw + 5:.1f}" y="{y + 15}" font-size="9" '
        f'fill="#1b2631">{esc(clip(text, 90))}</text>'
    )
    return out


@dataclass(frozen=True)
class _Frame:
    """Where things go on the page: the time axis from ``t0`` to ``t1`` over ``chart_w``
    pixels right of the labels, and one row of ``row_h`` per lane below ``top``."""

    t0: datetime | None
    t1: datetime | None
    #: When bars of attempts still queued or running end (``now``, the run's end, or the latest time known).
    end_default: datetime | None
    width: int
    lane_count: int
    label_w: int = 210
    right_pad: int = 40
    row_h: int = 22
    top: int = 62

    @property
    def chart_w(self) -> int:
        return max(self.width - self.label_w - self.right_pad, 100)

    @property
    def span(self) -> float:
        return max(seconds_between(self.t0, self.t1) or 0.0, 0.001)

    @property
    def rows_bottom(self) -> int:
        return self.top + self.row_h * self.lane_count

    @property
    def height(self) -> int:
        return self.rows_bottom + 44

    def x(self, t: datetime | None) -> float:
        return self.label_w + self.chart_w * ((seconds_between(self.t0, t) or 0.0) / self.span)


def _frame(view: RunView, lanes: list[_Lane], width: int, now: datetime | None) -> _Frame:
    """The time axis covers every attempt, the run, a pending retry, and the spans of map
    steps and approvals."""
    run = view.run
    times: list[datetime] = []
    for atts in view.attempts.values():
        for a in atts:
            times.extend(t for t in (a.get("dispatched_at"), a.get("started_at"), a.get("ended_at")) if t)
    times.extend(run[k] for k in ("started_at", "ended_at") if run.get(k))
    end_default = now or run.get("ended_at") or (max(times) if times else None)
    times.extend(
        row["next_attempt_at"]
        for row in view.steps.values()
        if row.get("state") == "up_for_retry" and row.get("next_attempt_at")
    )
    if end_default:
        times.append(end_default)
    for lane in lanes:
        row = view.steps.get(lane.name) or {}
        if lane.kind in ("map", "approval"):
            times.extend(row[k] for k in ("started_at", "ended_at") if row.get(k))
    return _Frame(
        t0=min(times) if times else None,
        t1=max(times) if times else None,
        end_default=end_default,
        width=width,
        lane_count=len(lanes),
    )


def timeline_svg(view: RunView, *, width: int = 1100, now: datetime | None = None) -> str:
    """A Gantt chart of a run: one row per step, one bar per attempt (queued part pale, run
    part coloured by outcome), failed attempts hatched, waits before retries dashed.

    ``now`` closes the bars of attempts still queued or running (default: the run's end, or
    the latest time known), so the same data always gives the same picture.
    """
    lanes = _lanes(view)
    frame = _frame(view, lanes, width, now)
    picture = _deadline(view, frame)
    if picture is not None and frame.t1 is not None and picture.deadline_at > frame.t1:
        frame = replace(frame, t1=picture.deadline_at)  # the deadline line stays on the page
    out = _head(view, frame) + _axis(frame)
    for i, lane in enumerate(lanes):
        out.extend(_lane(view, lane, frame.top + i * frame.row_h, i, frame))
    if picture is not None:
        out.extend(_deadline_marks(lanes, frame, picture))
    out.extend(_legend(frame.rows_bottom + 26))
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _deadline(view: RunView, frame: _Frame) -> DeadlinePicture | None:
    if view.spec.deadline is None or not view.run.get("created_at") or frame.end_default is None:
        return None
    return deadline_picture(view.spec, view.run, view.attempts, frame.end_default)


def _deadline_marks(lanes: list[_Lane], frame: _Frame, picture: DeadlinePicture) -> list[str]:
    """The deadline as a red dashed line with the slack, and the critical path's lanes marked."""
    x = frame.x(picture.deadline_at)
    slack = picture.slack_seconds
    text = f"deadline {fmt_time(picture.deadline_at)} \u00b7 slack {'-' if slack < 0 else ''}{fmt_duration(abs(slack))}"
    out = [
        f'<line class="deadline" x1="{x:.1f}" y1="{frame.top - 4}" x2="{x:.1f}" y2="{frame.rows_bottom}" '
        'stroke="#c0392b" stroke-width="1.5" stroke-dasharray="5,3"/>',
        f'<text class="deadline" x="{x - 4:.1f}" y="{frame.rows_bottom + 12}" text-anchor="end" font-size="10" '
        f'fill="#c0392b">{esc(text)}</text>',
    ]
    for i, lane in enumerate(lanes):
        if lane.kind != "heading" and lane.name in picture.critical_path:
            y = frame.top + i * frame.row_h
            out.append(
                f'<rect class="critical-path" x="2" y="{y + 3}" width="4" height="{frame.row_h - 6}" fill="#e67e22">'
                "<title>on the critical path</title></rect>"
            )
    return out


def _head(view: RunView, frame: _Frame) -> list[str]:
    """The SVG element, the hatch pattern of failed attempts, the title and the subtitle."""
    width, height, t0 = frame.width, frame.height, frame.t0
    subtitle = (
        f"{view.run_status()} \u00b7 first dispatch {fmt_time(t0)} \u00b7 "
        f"span {fmt_duration(seconds_between(t0, frame.t1)) if t0 else '-'}"
    )
    return [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="flowkit-timeline" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" '
        'font-family="Helvetica, Arial, sans-serif" font-size="11">',
        '<defs><pattern id="fk-hatch" width="6" height="6" patternUnits="userSpaceOnUse" '
        'patternTransform="rotate(45)"><rect width="6" height="6" fill="#e74c3c"/>'
        '<line x1="0" y1="0" x2="0" y2="6" stroke="#922b21" stroke-width="2"/></pattern></defs>',
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="#ffffff"/>',
        f'<text x="10" y="18" font-size="13" font-weight="bold">{esc(view.spec.name)} run {esc(view.run_id)}</text>',
        f'<text x="10" y="34" fill="#4d5656">{esc(subtitle)}</text>',
    ]


def _axis(frame: _Frame) -> list[str]:
    """The time axis with a tick label and a light grid line every round step of time."""
    label_w, chart_w, span = frame.label_w, frame.chart_w, frame.span
    tick = _nice_step(span)
    axis_y = frame.top - 6
    out = [f'<line class="axis" x1="{label_w}" y1="{axis_y}" x2="{label_w + chart_w}" y2="{axis_y}" stroke="#7f8c8d"/>']
    k = 0
    while k * tick <= span * 1.0001 and k <= 100:
        tx = label_w + chart_w * (k * tick / span)
        out.append(f'<line x1="{tx:.1f}" y1="{axis_y - 4}" x2="{tx:.1f}" y2="{frame.rows_bottom}" stroke="#eaeded"/>')
        out.append(
            f'<text class="tick" x="{tx:.1f}" y="{axis_y - 7}" text-anchor="middle" font-size="9" '
            f'fill="#566573">{esc(_tick_label(k * tick, tick))}</text>'
        )
        k += 1
    return out


def _lane(view: RunView, lane: _Lane, y: int, i: int, frame: _Frame) -> list[str]:
    """One row: its stripe, its label and state, and what its kind draws."""
    out = []
    if i % 2:
        out.append(
            f'<rect x="0" y="{y}" width="{frame.width}" height="{frame.row_h}" fill="#f8f9f9" fill-opacity="0.7"/>'
        )
    if lane.kind == "heading":
        color = KIND_STYLES["compensation"]["color"]
        out.append(
            f'<line class="compensation-heading" x1="0" y1="{y + 1}" x2="{frame.width}" y2="{y + 1}" '
            f'stroke="{color}" stroke-dasharray="4,3"/>'
        )
        out.append(f'<text x="10" y="{y + 15}" font-weight="bold" fill="{color}">{esc(lane.label)}</text>')
        return out
    label_x = 22 if lane.indent else 10
    if lane.kind == "more":
        out.append(
            f'<text class="more-instances" x="{label_x}" y="{y + 15}" fill="#566573">'
            f"{esc(lane.label)}<title>{esc(lane.text)}</title></text>"
        )
        out.append(f'<text x="{frame.label_w}" y="{y + 15}" font-size="9" fill="#566573">{esc(lane.text)}</text>')
        return out
    name = lane.name
    state = aggregate_state(map_counts_of(view, name) or {}) if lane.kind == "map" else view.state(name)
    out.append(f'<text x="{label_x}" y="{y + 15}">{esc(clip(lane.label, 26 if lane.indent else 28))}</text>')
    out.append(
        f'<text x="{frame.label_w - 8}" y="{y + 15}" text-anchor="end" font-size="9" fill="#566573">{esc(state)}</text>'
    )
    if lane.kind == "map":
        out.extend(_map_lane(view, lane, state, y, frame))
    elif lane.kind == "approval":
        out.extend(_approval_lane(view, name, y, frame.x, frame.end_default))
    else:
        out.extend(_attempt_bars(view, name, state, y, frame))
    return out


def _map_lane(view: RunView, lane: _Lane, state: str, y: int, frame: _Frame) -> list[str]:
    """A map step's span, coloured by its worst state, and its instances counted by state."""
    x, name = frame.x, lane.name
    row = view.row(name) or {}
    out = []
    start, stop = row.get("started_at"), row.get("ended_at") or frame.end_default
    text_x = frame.label_w + 4.0
    if start is not None and stop is not None:
        bw = max(x(stop) - x(start), 2.0)
        out.append(
            _svg_rect(
                "map-span",
                x(start),
                y + 4,
                bw,
                14,
                STEP_STATE_COLORS.get(state, "#ffffff"),
                f"{name}: {lane.text}, {fmt_duration(seconds_between(start, stop))}",
                ' rx="2" stroke="#1f618d" stroke-width="1"',
            )
        )
        if x(start) + bw + 4 < frame.width - 200:  # after the bar when it fits, else over the lane start
            text_x = x(start) + bw + 4
    out.append(
        f'<text class="map-counts" x="{text_x:.1f}" y="{y + 15}" font-size="9" fill="#1b2631">{esc(lane.text)}</text>'
    )
    return out


def _attempt_bars(view: RunView, name: str, state: str, y: int, frame: _Frame) -> list[str]:
    """Each attempt's queued part and run part, the wait before each retry, and the wait
    until a retry that is due."""
    x, end_default = frame.x, frame.end_default
    atts = view.step_attempts(name)
    out = []
    prev_end: datetime | None = None
    for a in atts:
        number = a["number"]
        disp, start, end = a.get("dispatched_at"), a.get("started_at"), a.get("ended_at")
        if prev_end is not None and disp is not None and disp >= prev_end:
            out.append(
                _svg_wait(
                    x(prev_end),
                    x(disp),
                    y + 11,
                    f"{name}: waited {fmt_duration(seconds_between(prev_end, disp))} before attempt {number}",
                )
            )
        queued_until = start or end or end_default
        if disp is not None and queued_until is not None and queued_until > disp:
            out.append(
                _svg_rect(
                    "queued",
                    x(disp),
                    y + 6,
                    max(x(queued_until) - x(disp), 1.0),
                    10,
                    "#d6eaf8",
                    f"{name} #{number} queued {fmt_duration(seconds_between(disp, queued_until))}",
                    ' stroke="#aed6f1"',
                )
            )
        if start is not None:
            out.extend(_run_bar(name, a, y, frame, numbered=len(atts) > 1))
        prev_end = end
    nxt = (view.row(name) or {}).get("next_attempt_at")
    if state == "up_for_retry" and prev_end is not None and nxt is not None:
        out.append(_svg_wait(x(prev_end), x(nxt), y + 11, f"{name}: next attempt at {fmt_time(nxt)}"))
    return out


def _run_bar(name: str, a: dict[str, Any], y: int, frame: _Frame, *, numbered: bool) -> list[str]:
    """The running part of one attempt, coloured by its outcome (hatched when it failed),
    with its number after it when the step has several attempts or this one failed."""
    x = frame.x
    number, state_a = a["number"], str(a["state"])
    start, end = a["started_at"], a.get("ended_at")
    stop = end or frame.end_default or start
    fill = "url(#fk-hatch)" if state_a == "failed" else ATTEMPT_STATE_COLORS.get(state_a, "#95a5a6")
    tip = f"{name} attempt {number}: {state_a}, {fmt_duration(seconds_between(start, stop))}"
    tip += " so far" if end is None else ""
    tip += f" on {a['worker']}" if a.get("worker") else ""
    tip += f" - {clip(a['error'], 200)}" if a.get("error") else ""
    bw = max(x(stop) - x(start), 2.0)
    out = [
        _svg_rect(
            f"attempt {state_a}", x(start), y + 3, bw, 16, fill, tip, ' rx="2" stroke="#1b2631" stroke-width="0.5"'
        )
    ]
    if numbered or state_a == "failed":
        out.append(f'<text x="{x(start) + bw + 3:.1f}" y="{y + 15}" font-size="9" fill="#1b2631">#{number}</text>')
    return out


def _legend(ly: int) -> list[str]:
    out = []
    lx = 10
    for label, fill in (
        ("queued", "#d6eaf8"),
        ("running", ATTEMPT_STATE_COLORS["running"]),
        ("success", ATTEMPT_STATE_COLORS["success"]),
        ("failed", "url(#fk-hatch)"),
        ("skipped", ATTEMPT_STATE_COLORS["skipped"]),
        ("cancelled", ATTEMPT_STATE_COLORS["cancelled"]),
        ("awaiting approval", STEP_STATE_COLORS["awaiting_approval"]),
    ):
        out.append(
            f'<rect x="{lx}" y="{ly - 10}" width="14" height="12" fill="{fill}" stroke="#1b2631" '
            f'stroke-width="0.5"/><text x="{lx + 18}" y="{ly}">{label}</text>'
        )
        lx += 90 if len(label) < 10 else 130
    out.append(
        f'<line x1="{lx}" y1="{ly - 4}" x2="{lx + 24}" y2="{ly - 4}" {_WAIT_STYLE}/>'
        f'<text x="{lx + 30}" y="{ly}">wait before retry</text>'
    )
    return out


#: How long rsvg-convert may take to turn a timeline into PNG.
PNG_TIMEOUT_SECONDS = 60.0


def svg_to_png(svg: str | bytes) -> bytes:
    """A PNG of the timeline SVG, drawn by ``rsvg-convert`` (librsvg, the SVG library of
    Graphviz's own cairo renderer). Graphviz's ``dot`` cannot do it: it lays out graphs, and
    this SVG is drawn by hand. Raises :class:`RenderError` (one line) if it is missing or fails."""
    import shutil
    import subprocess

    data = svg.encode() if isinstance(svg, str) else svg
    binary = shutil.which("rsvg-convert")
    if binary is None:
        raise RenderError(
            "a PNG timeline needs rsvg-convert, which is not installed; install librsvg "
            "(e.g. apt-get install librsvg2-bin) or write the timeline as .svg"
        )
    try:
        proc = subprocess.run(
            [binary, "--format", "png", "--background-color", "white"],
            input=data,
            capture_output=True,
            timeout=PNG_TIMEOUT_SECONDS,
        )
    except subprocess.TimeoutExpired:
        raise RenderError(
            f"rsvg-convert took longer than {PNG_TIMEOUT_SECONDS:g} s; write the timeline as .svg"
        ) from None
    if proc.returncode != 0 or not proc.stdout.startswith(b"\x89PNG"):
        err = proc.stderr.decode(errors="replace").strip().splitlines()
        raise RenderError(
            f"rsvg-convert failed: {err[-1] if err else f'exit code {proc.returncode}'}; write the timeline as .svg"
        )
    return proc.stdout
