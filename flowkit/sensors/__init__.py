"""Sensors: steps that wait for a condition by poking it, in reschedule mode.

Not wired into the builder or the store yet: this package holds the pure rules (options and
their checks, the poke schedule and timeout, what a poke's answer means, the ready-made
pokes) that the engine will call. See :mod:`flowkit.sensors.policy` and
:mod:`flowkit.sensors.pokes`.
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
