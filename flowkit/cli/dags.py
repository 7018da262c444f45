"""``flowkit dags list|check``: the flows in the dags folder, and every problem in it."""

from __future__ import annotations

from typing import Any

import click

from .common import CliError, echo_json, format_table, friendly_errors, open_store, settings_of


@click.group()
def dags() -> None:
    """Inspect the flows in the dags folder."""


def _report_errors(report: Any) -> None:
    for err in report.errors:
        click.echo(f"error: {err}", err=True)


@dags.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def dags_list(ctx: click.Context, as_json: bool) -> None:
    """List the flows; modules that fail to import are named with file and line."""
    from ..loading.sync import pool_problems, sync_dags

    settings = settings_of(ctx)
    with friendly_errors():
        store = open_store(settings)
        # printed below, once each (not also logged)
        report = sync_dags(store, settings.dags_folder, timeout=settings.dag_import_timeout_seconds, log_problems=False)
        problems = pool_problems(report.flows.values(), store.pool_sizes())
    flows = sorted(report.flows.values(), key=lambda f: f.name)
    paused = {row["name"] for row in store.list_flows() if row["paused"]}
    if as_json:
        echo_json(
            {
                "flows": [
                    {
                        "name": f.name,
                        "version": f.version,
                        "steps": len(f.steps),
                        "schedule": f.schedule,
                        "owner": f.owner,
                        "tags": list(f.tags),
                        "path": f.path,
                        "paused": f.name in paused,
                    }
                    for f in flows
                ],
                "errors": [{"path": e.path, "lineno": e.lineno, "message": e.message} for e in report.errors],
            }
        )
        for problem in problems:  # stderr, as before: the JSON lists load errors only
            click.echo(f"error: {problem}", err=True)
        return
    rows = [
        [
            f.name,
            str(len(f.steps)),
            f.schedule or "-",
            f.owner or "-",
            f.version or "-",
            "paused" if f.name in paused else "-",
            str(f.path),
        ]
        for f in flows
    ]
    click.echo(format_table(["flow", "steps", "schedule", "owner", "version", "paused", "file"], rows))
    _report_errors(report)
    for problem in problems:
        click.echo(f"error: {problem}", err=True)


@dags.command("check")
@click.pass_context
def dags_check(ctx: click.Context) -> None:
    """Import every module afresh and list every problem (exit 1 if there is one)."""
    from ..loading.loader import load_folder

    settings = settings_of(ctx)
    report = load_folder(settings.dags_folder, timeout=settings.dag_import_timeout_seconds)
    if not report.files:
        raise CliError(f"no flow modules found in {settings.dags_folder!r}; set FLOWKIT_DAGS_FOLDER or --dags-folder")
    for r in report.files:
        status = "error" if r.error else "ok"
        names = ", ".join(f.name for f in r.flows) or "-"
        click.echo(f"{status:5}  {r.import_ms:7.0f} ms  {r.path}  {names}")
        if not r.error and r.import_ms > 2000:
            click.echo(
                f"warning: {r.path} takes {r.import_ms:.0f} ms to import; keep I/O and "
                "heavy imports out of module level",
                err=True,
            )
    _report_errors(report)
    from ..loading.sync import settings_problems

    problems = settings_problems(report.flows.values(), settings)
    for problem in problems:
        click.echo(f"error: {problem}", err=True)
    if report.errors or problems:
        ctx.exit(1)
