"""A sensor's poke on a worker. Not public API: :mod:`flowkit.execution.attempt` calls it
(the builder never imports this module, which reads the store for ``flow=NAME``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..spec import FlowSpec, StepSpec
from ..states import AttemptState
from .pokes import NotYet, run_poke

if TYPE_CHECKING:
    from ..store.sql import SqlStore


def poke_once(step: StepSpec, poke: Callable[[], Any], store: SqlStore, run_id: str) -> Any:
    """Poke once: the value the sensor succeeds with, or :class:`NotYet` raised with the
    reason ``flowkit runs show`` reports. An error of the poke propagates (retries apply)."""
    options = step.sensor or {}
    if options.get("waits_for") == "flow":
        from ..store.sensor_ops import flow_poke

        outcome = flow_poke(store, run_id, str(options.get("target")))
    else:
        outcome = run_poke(poke)
    if not outcome.done:
        raise NotYet(outcome.message or "not yet")
    return outcome.value


def not_yet_outcome(spec: FlowSpec | None, step: str, signal: NotYet) -> tuple[AttemptState, str]:
    """How an attempt that raised :class:`NotYet` ends: "not yet" for a sensor's poke; for any
    other step a failure that says how to wait instead."""
    if spec is not None and spec.step(step).kind == "sensor":
        return AttemptState.NOT_YET, signal.reason
    return AttemptState.FAILED, (
        f"NotYet({signal.reason!r}) raised by a step that is not a sensor; define the step with "
        ".sensor(name, poke=...) to wait for a condition"
    )
