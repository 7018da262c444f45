"""The ``flowkit`` command group: its global options, one-line errors, logging setup, and
the commands of every family module added to it. The CLI is the only layer that prints,
exits or installs log handlers.

Each family module (dags, runs, actions, approvals, daemons, dev, ops, render) defines its
commands without knowing this group; this module adds them. Nothing imports it back.
"""

from __future__ import annotations

import logging
from typing import Any

import click

from ..config import Settings
from . import actions, approvals, daemons, dags, dev, lineage, logs, notifications, ops, render, runs
from .backfill import backfill as backfill_group
from .common import friendly_errors


class _Main(click.Group):
    """The root command: whatever a subcommand raises goes through friendly_errors."""

    def invoke(self, ctx: click.Context) -> Any:
        with friendly_errors():
            return super().invoke(ctx)


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


@click.group(cls=_Main, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--database-url", envvar="FLOWKIT_DATABASE_URL", help="SQLAlchemy URL of the store.")
@click.option("--broker-url", envvar="FLOWKIT_BROKER_URL", help="Celery broker URL.")
@click.option("--dags-folder", envvar="FLOWKIT_DAGS_FOLDER", help="Folder of flow modules.")
@click.option(
    "--log-level",
    default="WARNING",
    show_default=True,
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
)
@click.version_option(package_name="flowkit")
@click.pass_context
def main(
    ctx: click.Context, database_url: str | None, broker_url: str | None, dags_folder: str | None, log_level: str
) -> None:
    """flowkit: Python DAGs on Celery, with their history in SQL."""
    _setup_logging(log_level)
    with friendly_errors():
        settings = Settings.from_env(database_url=database_url, broker_url=broker_url, dags_folder=dags_folder)
    ctx.obj = {"settings": settings, "broker_given": bool(broker_url)}


for _command in (
    dags.dags,
    runs.trigger,
    runs.runs,
    actions.flows,
    approvals.approve,
    approvals.reject,
    daemons.scheduler,
    daemons.worker,
    daemons.flower,
    ops.db,
    ops.pools,
    ops.status,
    dev.dev,
    render.render_cmd,
    lineage.lineage_cmd,
    render.timeline_cmd,
    render.report_cmd,
    notifications.notifications,
    backfill_group,
):
    main.add_command(_command)
main.add_command(logs.logs)
for _command in (actions.runs_cancel, actions.runs_retry, actions.runs_mark):
    runs.runs.add_command(_command)
