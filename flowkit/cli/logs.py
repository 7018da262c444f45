"""``flowkit logs RUN STEP [--attempt N] [--follow]``: a step attempt's captured output (its
prints, stderr, ``ctx.log`` records, a shell step's output), the latest attempt by default.

``--follow`` polls the store (a running attempt's output is written there about once a
second by its worker) and prints the new lines until the attempt ends.
"""

from __future__ import annotations

import time
from typing import Any

import click

from ..errors import NotFoundError
from ..states import AttemptState
from .common import friendly_errors, open_store, settings_of
from .run_view import one_step

#: How often --follow reads the attempt again.
FOLLOW_POLL_SECONDS = 0.5


@click.command("logs")
@click.argument("run_id", metavar="RUN")
@click.argument("step", metavar="STEP")
@click.option("--attempt", "number", type=click.IntRange(1), default=None, help="Which attempt (default: the latest).")
@click.option("-f", "--follow", is_flag=True, help="Keep printing a running attempt's output until it ends.")
@click.pass_context
def logs(ctx: click.Context, run_id: str, step: str, number: int | None, follow: bool) -> None:
    """Print a step attempt's captured output (the tail: FLOWKIT_LOG_CAP_BYTES)."""
    with friendly_errors():
        store = open_store(settings_of(ctx))
        run_id = store.resolve_run_id(run_id)
        attempt = _attempt(store, run_id, step, number, wait=follow)
        if not follow:
            if attempt["output"]:
                click.echo(attempt["output"])
            return
        _follow(store, run_id, step, attempt)


def _attempt(store: Any, run_id: str, step: str, number: int | None, *, wait: bool) -> dict[str, Any]:
    """The attempt asked for (the latest when ``number`` is None), or a one-line error that
    says what exists. With ``wait``, a step that has no attempt yet is waited for."""
    while True:
        attempts = one_step(store, run_id, step)["attempts"]  # unknown run or step: its own error
        if number is None and attempts:
            return attempts[-1]  # type: ignore[no-any-return]
        found = [a for a in attempts if a["number"] == number]
        if found:
            return found[0]  # type: ignore[no-any-return]
        if not wait or (number is not None and attempts and attempts[-1]["number"] > number):
            made = ", ".join(str(a["number"]) for a in attempts)
            if not attempts:
                raise NotFoundError(
                    f"run {run_id} step {step} has not started yet (no attempt); "
                    "add --follow to wait for it and print its output"
                )
            raise NotFoundError(
                f"run {run_id} step {step} has no attempt {number}; its attempts are {made} "
                "(leave out --attempt for the latest)"
            )
        time.sleep(FOLLOW_POLL_SECONDS)


def _follow(store: Any, run_id: str, step: str, attempt: dict[str, Any]) -> None:
    printed: list[str] = []
    while True:
        lines = (attempt["output"] or "").split("\n") if attempt["output"] else []
        for line in new_lines(printed, lines):
            click.echo(line)
        printed = lines
        if AttemptState(attempt["state"]).terminal:
            click.echo(f"(attempt {attempt['number']} {attempt['state']})", err=True)
            return
        time.sleep(FOLLOW_POLL_SECONDS)
        attempt = _attempt(store, run_id, step, attempt["number"], wait=True)


def new_lines(before: list[str], now: list[str]) -> list[str]:
    """The lines of ``now`` not in ``before``: the tail only grows at its end and loses lines
    at its start (the cap), so find where ``before``'s remaining end lines up with ``now``."""
    for start in range(len(before) + 1):
        kept = before[start:]
        if now[: len(kept)] == kept:
            return now[len(kept) :]
    return now  # pragma: no cover (the empty suffix always matches)
