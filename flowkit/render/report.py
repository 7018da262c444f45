"""The one-page HTML report of a run: summary, graph, timeline, steps and attempts."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime

from .common import (
    RUN_STATE_COLORS,
    STEP_STATE_COLORS,
    RenderError,
    RunView,
    _fmt_time,
    _fmt_time_ms,
    _h,
    _secs,
    fmt_duration,
)
from .graph import dot_to, run_dot, svg_for_html
from .timeline import timeline_svg

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
