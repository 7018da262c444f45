"""Rendering commands: render, lineage, timeline, report (see flowkit.render).

Added to the command group by :mod:`flowkit.cli.root`.
Heavy imports (the store, graphviz) happen inside the commands.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from .common import CliError, friendly_errors, open_store, settings_of

if TYPE_CHECKING:
    from ..config import Settings
    from ..spec import FlowSpec
    from ..store.sql import SqlStore

_GRAPH_SUFFIXES = {".svg": "svg", ".png": "png", ".dot": "dot", ".gv": "dot"}


class BadInput(CliError):
    """Wrong arguments, shown as one line with exit code 2 (like click's usage errors)."""

    exit_code = 2


def _graph_format(output: str | None, fmt: str | None) -> str:
    """The format asked for with --format, else the one the -o suffix names, else dot."""
    if fmt:
        return fmt
    if output is None or output == "-":
        return "dot"
    suffix = Path(output).suffix.lower()
    if suffix not in _GRAPH_SUFFIXES:
        raise BadInput(
            f"cannot tell the format of {output!r} from its suffix {suffix or '(none)'}; "
            "name it .svg, .png or .dot, or pass --format svg|png|dot"
        )
    return _GRAPH_SUFFIXES[suffix]


def _check_suffix(output: str, allowed: tuple[str, ...], what: str) -> None:
    if output != "-" and Path(output).suffix.lower() not in allowed:
        raise BadInput(f"{what} is written as {' or '.join(allowed)}; got {output!r}")


def _emit(data: bytes, output: str | None, what: str) -> None:
    """Write to the file (saying so on stderr) or, without -o or with -o -, to stdout."""
    if output is None or output == "-":
        sys.stdout.flush()
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    try:
        Path(output).write_bytes(data)
    except OSError as exc:
        raise CliError(f"cannot write {what} to {output}: {exc.strerror or exc}") from exc
    click.echo(f"wrote {what} to {output}", err=True)


def _flow_spec(settings: Settings, store: SqlStore, name: str) -> FlowSpec:
    """The flow's current spec; the dags folder is synced first when it has modules."""
    from ..loading.loader import dag_files

    if dag_files(settings.dags_folder):
        from ..loading.sync import sync_dags

        sync_dags(store, settings.dags_folder, timeout=settings.dag_import_timeout_seconds)
    return store.flow_spec(name)


def _run_view(store: SqlStore, run_id: str) -> Any:
    from ..render import load_run_view

    return load_run_view(store, store.resolve_run_id(run_id))


_FORMAT = click.Choice(["svg", "png", "dot"])


@click.command("render")
@click.argument("flow")
@click.option("--run", "run_id", metavar="RUN", help="Colour the graph by the states of this run (id or prefix).")
@click.option("-o", "--output", metavar="PATH", help="Write here (.svg, .png or .dot); default: DOT to stdout.")
@click.option("--format", "fmt", type=_FORMAT, help="Output format (default: from the -o suffix).")
@click.option("--collapse", is_flag=True, help="Draw each group of a large flow as one node.")
@click.option(
    "--cluster-threshold",
    default=150,
    show_default=True,
    type=click.IntRange(1),
    help="Group the steps of flows larger than this.",
)
@click.pass_context
def render_cmd(
    ctx: click.Context,
    flow: str,
    run_id: str | None,
    output: str | None,
    fmt: str | None,
    collapse: bool,
    cluster_threshold: int,
) -> None:
    """Draw FLOW's structure, or one run of it coloured by step state (Graphviz)."""
    from .. import render as rd

    fmt = _graph_format(output, fmt)
    settings = settings_of(ctx)
    with friendly_errors():
        store = open_store(settings)
        if run_id:
            view = _run_view(store, run_id)
            if view.spec.name != flow:
                raise CliError(f"run {view.run_id} is a run of flow {view.spec.name!r}, not {flow!r}")
            source = rd.run_dot(view, collapse=collapse, cluster_threshold=cluster_threshold)
        else:
            spec = _flow_spec(settings, store, flow)
            source = rd.flow_dot(spec, collapse=collapse, cluster_threshold=cluster_threshold)
        data = rd.dot_to(source, fmt)
    _emit(data, output, f"{fmt} of {flow}")


@click.command("timeline")
@click.argument("run_id", metavar="RUN")
@click.option("-o", "--output", metavar="PATH", help="Write here (.svg or .png); default: SVG to stdout.")
@click.option("--width", default=1100, show_default=True, type=click.IntRange(400, 20000))
@click.pass_context
def timeline_cmd(ctx: click.Context, run_id: str, output: str | None, width: int) -> None:
    """A Gantt chart (SVG or PNG) of RUN: one bar per attempt, failures and waits before retries shown."""
    from .. import render as rd

    if output:
        _check_suffix(output, (".svg", ".png"), "a timeline")
    png = bool(output) and Path(str(output)).suffix.lower() == ".png"
    with friendly_errors():
        view = _run_view(open_store(settings_of(ctx)), run_id)
        svg = rd.timeline_svg(view, width=width, now=None if view.run.get("ended_at") else datetime.now(UTC))
        data = rd.svg_to_png(svg) if png else svg.encode()
    _emit(data, output, f"{'png' if png else 'svg'} timeline of run {view.run_id}")


@click.command("report")
@click.argument("run_id", metavar="RUN")
@click.option("-o", "--output", metavar="PATH", required=True, help="The .html file to write.")
@click.pass_context
def report_cmd(ctx: click.Context, run_id: str, output: str) -> None:
    """One self-contained HTML page about RUN: graph, timeline, step table and audit trail."""
    from .. import render as rd

    _check_suffix(output, (".html", ".htm"), "a report")
    now = datetime.now(UTC)
    with friendly_errors():
        store = open_store(settings_of(ctx))
        view = _run_view(store, run_id)
        from ..sla.view import run_sla

        sla = run_sla(store, {**view.run, "id": view.run_id}, view.spec, now)
        page = rd.report_html(view, generated_at=now, now=None if view.run.get("ended_at") else now, sla=sla)
    _emit(page.encode(), output, f"report of run {view.run_id}")


#: Shared with the lineage command (flowkit/cli/lineage.py).
emit = _emit
graph_format = _graph_format
