"""The one-page HTML report of a run: summary, graph, timeline, steps and attempts.

A map step's instances are listed as far as the view holds them (the first ones and the
first failed ones) and counted beyond; each failed attempt's traceback and each shell
step's output tail sit in a ``<details>`` block, closed until clicked.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime

from .common import (
    RUN_OUTCOME_COLORS,
    RUN_STATE_COLORS,
    STEP_STATE_COLORS,
    RenderError,
    RunView,
    _clip,
    _fmt_time,
    _fmt_time_ms,
    _h,
    _secs,
    fmt_duration,
)
from .graph import _counts_text, _map_counts, approval_text, dot_to, run_dot, svg_for_html
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
tr.instance td:first-child{padding-left:24px;color:#4d5656} tr.more td{color:#566573;font-style:italic}
tr.heading td{font-weight:bold;color:#943126;border-top:2px dashed #943126}
details{margin:4px 0;border:1px solid #e5e7e9;padding:4px 8px} summary{cursor:pointer;font-size:13px}
details pre{max-height:420px}
"""

#: The end of a shell step's output shown in the report (the store keeps a tail already).
OUTPUT_TAIL_CHARS = 8000


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
        f'<h1>{_h(title)} {_state_badge(str(run["state"]), RUN_STATE_COLORS)}'
        + (f" {_state_badge(view.outcome, RUN_OUTCOME_COLORS)}" if view.outcome else "") + "</h1>",
        '<p class="meta">' + " &middot; ".join(f"<b>{_h(k)}</b> {_h(v)}" for k, v in meta) + "</p>",
        f"<pre>params {_h(json.dumps(run.get('params') or {}, sort_keys=True, default=str))}</pre>",
        '<h2 id="graph">Run graph</h2>', f'<div class="figure">{graph}</div>',
        '<h2 id="timeline">Timeline</h2>', f'<div class="figure">{timeline}</div>',
        '<h2 id="steps">Steps</h2>',
        "<table><thead><tr><th>step</th><th>kind</th><th>state</th><th>attempts</th><th>duration</th>"
        "<th>worker</th><th>error</th></tr></thead><tbody>",
    ]
    for s in spec.steps:
        parts.append(_step_row(view, s.name, s.kind))
        counts = _map_counts(view, s.name) if s.kind == "map" else None
        if counts:
            shown = view.instances.get(s.name, [])
            for row in shown:
                parts.append(_step_row(view, str(row["step"]), "instance", css="instance"))
            total = sum(counts.values())
            if total > len(shown):
                parts.append(f'<tr class="more"><td colspan="7">{total - len(shown)} more of {total} instances '
                             f"({_h(_counts_text(counts))}); see <code>flowkit runs show {_h(view.run_id[:8])} "
                             f"--step {_h(s.name)}[i]</code></td></tr>")
    comps = view.compensations()
    if comps:
        parts.append(f'<tr class="heading"><td colspan="7">compensation: {_h(view.outcome or "running")}'
                     "</td></tr>")
        parts.extend(_step_row(view, c.name, c.kind) for c in comps)
    parts.append("</tbody></table>")
    parts.extend(_failures(view))
    if view.datasets:
        parts.append('<h2 id="datasets">Datasets</h2><table><thead><tr><th>at (UTC)</th><th>direction</th>'
                     "<th>dataset</th><th>step</th><th>attempt</th></tr></thead><tbody>")
        for d in view.datasets:
            where = f"{d['step']} ({d['instances']} instances)" if d.get("instances") else d["step"]
            parts.append(f"<tr><td>{_h(_fmt_time_ms(d['at']))}</td><td>{_h(d['direction'])}</td>"
                         f"<td>{_h(d['uri'])}</td><td>{_h(where)}</td><td>{_h(d['attempt'] or '-')}</td></tr>")
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
    if view.instance_events:
        parts.append(f'<p class="meta">{view.instance_events} events of map instances are not listed; see '
                     f"<code>flowkit runs show {_h(view.run_id[:8])} --step NAME[i]</code></p>")
    stamp = f" at {_fmt_time(generated_at)}" if generated_at else ""
    parts.append(f"<footer>generated by flowkit{_h(stamp)}; self-contained, no external resources</footer>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _step_row(view: RunView, name: str, kind: str, css: str = "") -> str:
    atts = view.step_attempts(name)
    last = atts[-1] if atts else {}
    state = view.state(name)
    first = atts[0].get("started_at") if atts else None
    dur = _secs(first, last.get("ended_at")) if atts else None
    note = last.get("error") if state != "success" else None
    row = view.row(name) or {}
    if kind == "approval":
        note = approval_text(view, name) or note
        dur = _secs(row.get("started_at"), row.get("ended_at"))
    elif kind == "map":
        counts = _map_counts(view, name)
        note = _counts_text(counts) if counts else None
        if state == "failed":
            note = "; ".join(n for n in (note, view.last_reason(name)) if n)
        dur = _secs(row.get("started_at"), row.get("ended_at"))
    cls = f' class="{css}"' if css else ""
    return (f'<tr{cls} data-step="{_h(name)}"><td>{_h(name)}</td><td>{_h(kind)}</td>'
            f"<td>{_state_badge(state)}</td><td>{len(atts)}</td><td>{_h(fmt_duration(dur))}</td>"
            f"<td>{_h(last.get('worker') or '-')}</td><td class=\"err\">{_h(note or '')}</td></tr>")


def _failures(view: RunView) -> list[str]:
    """Each failed attempt with its traceback, and each shell step's output tail, closed
    ``<details>`` blocks in the order of the steps table (text already masked)."""
    names = [s.name for s in view.spec.steps]
    for s in view.spec.steps:
        names += [str(r["step"]) for r in view.instances.get(s.name, [])]
    names += [c.name for c in view.compensations()]
    shell = {s.name for s in view.spec.steps if s.kind == "shell"}
    blocks = []
    for name in names:
        base = name.split("[", 1)[0]
        for a in view.step_attempts(name):
            failed = a["state"] == "failed"
            output = a.get("output") if base in shell or failed else None
            if not (failed and (a.get("traceback") or a.get("error"))) and not output:
                continue
            head = f"{name} attempt {a['number']}: {a['state']}"
            if a.get("error"):
                head += f" \u2014 {_clip(str(a['error']), 160)}"
            body = []
            if failed and a.get("traceback"):
                body.append(f"<pre class=\"traceback\">{_h(a['traceback'])}</pre>")
            elif failed and a.get("error"):
                body.append(f"<pre class=\"error\">{_h(a['error'])}</pre>")
            if output:
                tail = str(output)[-OUTPUT_TAIL_CHARS:]
                body.append(f"<p class=\"meta\">output (end)</p><pre class=\"output\">{_h(tail)}</pre>")
            blocks.append(f'<details data-step="{_h(name)}" data-attempt="{a["number"]}">'
                          f"<summary>{_h(head)}</summary>{''.join(body)}</details>")
    if not blocks:
        return []
    return ['<h2 id="attempts">Failed attempts and output</h2>', *blocks]
