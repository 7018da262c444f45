"""Sensors: steps that wait for a condition by poking it, in reschedule mode.

This package holds the pure rules: options and their checks, the poke schedule and timeout
(:mod:`.policy`), what a poke's answer means and the ready-made pokes (:mod:`.pokes`), and
the sensor step the builder records (:mod:`.wiring`, behind ``Flow.sensor``). The engine
applies them: a worker pokes (:mod:`.worker`, called by flowkit.execution.attempt) and the
store's machine parks a poke that said "not yet" on the retry timer or ends the wait on
timeout (flowkit.store.sensor_ops), on every backend.
"""

from __future__ import annotations

from .pokes import NotYet, PokeOutcome, file_exists_poke, interpret_poke, run_poke, upstream_flow_outcome
from .policy import (
    MAX_POKE_INTERVAL_SECONDS,
    ON_TIMEOUT_CHOICES,
    PokeAgain,
    SensorPolicy,
    TimedOut,
    next_poke,
    sensor_policy,
)

__all__ = [
    "MAX_POKE_INTERVAL_SECONDS",
    "ON_TIMEOUT_CHOICES",
    "NotYet",
    "PokeAgain",
    "PokeOutcome",
    "SensorPolicy",
    "TimedOut",
    "file_exists_poke",
    "interpret_poke",
    "next_poke",
    "run_poke",
    "sensor_policy",
    "upstream_flow_outcome",
]
