"""``flowkit approve`` and ``flowkit reject``: decide an approval step, and the helper that
lets ``flowkit dev`` decide them. Added to the command group by
:mod:`flowkit.cli.root`."""

from __future__ import annotations

import shlex
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from ..config import Settings, redact
from ..connectivity import broker_error
from .common import friendly_errors, open_store, settings_of

if TYPE_CHECKING:
    from ..store.sql import SqlStore


def _wake_scheduler(settings: Settings, run_id: str, step: str) -> str | None:
    """Tell the scheduler now that the run moved (it grants the steps that became ready);
    returns a one-line warning if the broker could not be reached (its sweep finds them)."""
    if settings.broker_url.startswith("memory"):
        return None
    try:
        from ..dispatch.events import BrokerEvents
        from ..execution.celery_app import make_app

        app = make_app(settings)
        app.conf.broker_connection_timeout = 2
        BrokerEvents(app, settings.events_queue).publish({"type": "approval_decided", "run_id": run_id, "step": step})
    except Exception as exc:  # the decision is safe in SQL
        return (
            f"the decision is recorded, but the scheduler was not woken: "
            f"{broker_error(exc, settings.broker_url)} (its next sweep moves the run on)"
        )
    return None


def _decide(ctx: click.Context, run_id: str, step: str, by: str, reason: str, *, approve: bool) -> None:
    from ..store import approvals

    settings = settings_of(ctx)
    if not by.strip():
        raise click.BadParameter("say who decides, e.g. --by alice", param_hint="--by")
    with friendly_errors():
        store = open_store(settings)
        run_id = store.resolve_run_id(run_id)
        approvals.decide(store, run_id, step, approve=approve, by=by.strip(), reason=reason)
    warning = _wake_scheduler(settings, run_id, step)
    if warning:
        click.echo(f"warning: {warning}", err=True)
    click.echo(f"run {run_id} step {step}: {'approved' if approve else 'rejected'} by {by.strip()}")


_BY = click.option("--by", required=True, help="Who decides (kept in the audit trail).")
_REASON = click.option("--reason", default="", help="Why (kept in the audit trail).")


@click.command()
@click.argument("run_id")
@click.argument("step")
@_BY
@_REASON
@click.pass_context
def approve(ctx: click.Context, run_id: str, step: str, by: str, reason: str) -> None:
    """Approve STEP of RUN_ID (an approval step awaiting a decision): it succeeds and the
    steps after it go on."""
    _decide(ctx, run_id, step, by, reason, approve=True)


@click.command()
@click.argument("run_id")
@click.argument("step")
@_BY
@_REASON
@click.pass_context
def reject(ctx: click.Context, run_id: str, step: str, by: str, reason: str) -> None:
    """Reject STEP of RUN_ID: it fails, the steps after it are upstream_failed, and the run
    fails (undoing the steps that declared compensate=)."""
    _decide(ctx, run_id, step, by, reason, approve=False)


def check_dev_decisions(spec: Any, approve: tuple[str, ...], reject: tuple[str, ...]) -> None:
    """``flowkit dev --approve/--reject`` name approval steps of the flow (or ``all``), each once."""
    names = [s.name for s in spec.steps if s.kind == "approval"]
    for option, given in (("--approve", approve), ("--reject", reject)):
        for name in given:
            if name != "all" and name not in names:
                raise click.BadParameter(
                    f'flow "{spec.name}" has no approval step "{name}"; its approval steps are: '
                    f"{', '.join(names) or 'none'} (or all)",
                    param_hint=option,
                )
    both = set(approve) & set(reject)
    if both:
        raise click.BadParameter(
            f"{sorted(both)[0]} is given to both --approve and --reject; pick one", param_hint="--approve/--reject"
        )


class DevApprovals:
    """What ``flowkit dev`` does with an approval step that awaits a decision: decide it
    when --approve/--reject name it (a step's own name before ``all``), else print the
    commands that do, and wake the scheduler when it is decided from another terminal."""

    def __init__(
        self,
        store: SqlStore,
        settings: Settings,
        run_id: str,
        *,
        approve: tuple[str, ...],
        reject: tuple[str, ...],
        wake: Callable[[], None],
        user: str,
    ) -> None:
        self.store, self.run_id, self.wake, self.user = store, run_id, wake, user
        self.approve, self.reject = set(approve), set(reject)
        self.awaiting: set[str] = set()
        url = settings.database_url
        if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
            import os  # a relative SQLite path: make the command work from any directory

            url = "sqlite:///" + os.path.abspath(url[len("sqlite:///") :])
        # The exact command, unless the URL holds a password (never printed): then the env var.
        self.prefix = "flowkit" if redact(url) != url else f"flowkit --database-url {shlex.quote(url)}"

    def __call__(self, step: str, state: str, echo: Callable[[str], None]) -> None:
        if state != "awaiting_approval":
            if step in self.awaiting:  # decided from another terminal: this scheduler heard nothing
                self.awaiting.discard(step)
                self.wake()
            return
        from ..store import approvals

        decision = self._decision(step)
        if decision is None:
            self.awaiting.add(step)
            for verb in ("approve", "reject"):
                echo(f"    to {verb}: {self.prefix} {verb} {self.run_id} {step} --by {shlex.quote(self.user)}")
            if self.prefix == "flowkit":
                echo("    (with FLOWKIT_DATABASE_URL set to this store's URL)")
            return
        option = "--approve" if decision else "--reject"
        approvals.decide(self.store, self.run_id, step, approve=decision, by=self.user, reason=f"flowkit dev {option}")
        self.wake()

    def _decision(self, step: str) -> bool | None:
        """True: approve, False: reject, None: ask. A step named itself wins over ``all``."""
        for key in (step, "all"):
            if key in self.approve:
                return True
            if key in self.reject:
                return False
        return None
