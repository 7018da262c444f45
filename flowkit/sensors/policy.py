"""A sensor's options, checked once, and when it pokes next or gives up.

Between pokes a sensor holds no worker and no pool slot: the engine parks the step on a timer
(as a retry waits) and these rules say when that timer fires. The schedule is
``every * backoff**n`` after poke ``n`` (``n`` from 0), capped at
:data:`MAX_POKE_INTERVAL_SECONDS`, and never past the deadline: the timeout counts wall time
from the FIRST poke, so the last poke lands on the deadline and a sensor still not satisfied
then times out on time rather than up to one interval late.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from ..dsl_checks import parse_duration
from ..errors import DefinitionError

#: The longest wait between two pokes, in seconds, whatever the backoff: an hour keeps a
#: sensor with a long timeout checking often enough that it notices its condition the same
#: hour, and keeps ``every * backoff**n`` from overflowing into years.
MAX_POKE_INTERVAL_SECONDS = 3600.0
ON_TIMEOUT_CHOICES = ("fail", "skip")
OnTimeout = Literal["fail", "skip"]


@dataclass(frozen=True)
class SensorPolicy:
    """How often a sensor pokes and how long it waits in all (seconds)."""

    every_seconds: float
    timeout_seconds: float
    backoff: float = 1.0
    on_timeout: OnTimeout = "fail"

    def delay_after_poke(self, pokes_done: int) -> float:
        """Seconds from poke number ``pokes_done`` (1 = the first) to the next one."""
        exponent = max(pokes_done - 1, 0)
        try:
            delay = self.every_seconds * self.backoff**exponent
        except OverflowError:
            return MAX_POKE_INTERVAL_SECONDS
        return min(delay, MAX_POKE_INTERVAL_SECONDS)


@dataclass(frozen=True)
class PokeAgain:
    """The condition is not met yet: poke again at ``due``."""

    due: datetime


@dataclass(frozen=True)
class TimedOut:
    """The timeout has passed since the first poke: the step fails or is skipped."""

    on_timeout: OnTimeout
    waited_seconds: float


def next_poke(policy: SensorPolicy, *, first_poke_at: datetime, pokes_done: int, now: datetime) -> PokeAgain | TimedOut:
    """After a poke that said "not yet": when to poke again, or that the sensor timed out."""
    deadline = first_poke_at + timedelta(seconds=policy.timeout_seconds)
    if now >= deadline:
        return TimedOut(policy.on_timeout, (now - first_poke_at).total_seconds())
    due = now + timedelta(seconds=policy.delay_after_poke(pokes_done))
    return PokeAgain(min(due, deadline))


def sensor_policy(
    *,
    every: str | float = "30s",
    timeout: str | float = "1h",
    backoff: float = 2.0,
    on_timeout: str = "fail",
    who: str = "sensor",
) -> SensorPolicy:
    """Check a sensor's options; each bad one raises a one-line DefinitionError naming ``who``."""
    every_seconds = _duration(who, "every", every)
    timeout_seconds = _duration(who, "timeout", timeout)
    if isinstance(backoff, bool) or not isinstance(backoff, (int, float)) or not 1.0 <= backoff < float("inf"):
        raise DefinitionError(
            f"{who}: backoff={backoff!r} must be a number >= 1 (1 pokes at a steady pace, 2 doubles each wait)"
        )
    if on_timeout not in ON_TIMEOUT_CHOICES:
        raise DefinitionError(f'{who}: on_timeout={on_timeout!r} must be "fail" or "skip"')
    if every_seconds > timeout_seconds:
        raise DefinitionError(
            f"{who}: every={every!r} is longer than timeout={timeout!r}; "
            "poke more often than the timeout or raise the timeout"
        )
    choice: OnTimeout = "fail" if on_timeout == "fail" else "skip"
    return SensorPolicy(every_seconds, timeout_seconds, float(backoff), choice)


def _duration(who: str, key: str, value: str | float) -> float:
    try:
        seconds = parse_duration(value)
    except ValueError:
        seconds = None
    if seconds is None:
        raise DefinitionError(f'{who}: {key}={value!r} is not a duration; give seconds or a string like "30s", "5m"')
    return seconds
