"""What a poke's answer means, and the ready-made pokes (a file exists, a flow's run succeeded).

A poke returns truthy (done; a value other than ``True`` becomes the step's result), falsy
(not yet), or returns or raises :class:`NotYet` with a reason that ``flowkit runs show``
reports. Any other exception is an error and goes through the step's ``retries=``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from ..errors import StepSignal
from ..states import RunState


class NotYet(StepSignal):
    """Returned or raised by a poke: the condition is not met; ``reason`` says why."""

    def __init__(self, reason: str = "not yet") -> None:
        self.reason = reason
        super().__init__(reason)


@dataclass(frozen=True)
class PokeOutcome:
    """One poke's verdict: ``done`` with its ``value``, or not yet with a ``message``."""

    done: bool
    value: Any = None
    message: str | None = None


def interpret_poke(answer: Any) -> PokeOutcome:
    """A poke's return value as an outcome (``True`` itself carries no result; a
    :class:`PokeOutcome`, as the ready-made pokes return, is taken as it is)."""
    if isinstance(answer, PokeOutcome):
        return answer
    if isinstance(answer, NotYet):
        return PokeOutcome(False, message=answer.reason)
    if not answer:
        return PokeOutcome(False, message="the poke returned a false value")
    return PokeOutcome(True, value=None if answer is True else answer)


def run_poke(poke: Callable[[], Any]) -> PokeOutcome:
    """Call ``poke`` once; NotYet (raised) is an answer, any other exception propagates."""
    try:
        answer = poke()
    except NotYet as not_yet:
        return PokeOutcome(False, message=not_yet.reason)
    return interpret_poke(answer)


def file_exists_poke(path: str | os.PathLike[str]) -> Callable[[], PokeOutcome]:
    """The poke of ``file=PATH``: done (with the path) once the path exists."""
    target = os.fspath(path)

    def poke() -> PokeOutcome:
        if os.path.exists(target):
            return PokeOutcome(True, value=target)
        return PokeOutcome(False, message=f"{target} does not exist yet")

    return poke


def upstream_flow_outcome(flow: str, logical_date: str, run_states: Iterable[RunState]) -> PokeOutcome:
    """The verdict of ``flow=NAME``, given the states of that flow's runs for the same
    logical date (read from the store by the caller): done once any of them succeeded."""
    states = list(run_states)
    if RunState.SUCCESS in states:
        return PokeOutcome(True, value={"flow": flow, "logical_date": logical_date})
    if not states:
        return PokeOutcome(False, message=f'no run of flow "{flow}" for {logical_date} yet')
    listed = ", ".join(sorted({str(state) for state in states}))
    return PokeOutcome(False, message=f'flow "{flow}" for {logical_date}: no run succeeded yet ({listed})')
