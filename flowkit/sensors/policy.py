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
from typing import Any, Literal

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


#: What a sensor waits for: its own poke, a file, or a run of another flow.
WAITS_FOR = ("poke", "file", "flow")


def check_target(*, poke: object, file: object, flow: object, who: str = "sensor") -> str:
    """Which of ``poke=``/``file=``/``flow=`` a sensor was given (exactly one, checked)."""
    given = [key for key, value in (("poke", poke), ("file", file), ("flow", flow)) if value is not None]
    if len(given) != 1:
        found = f"got {', '.join(f'{k}=' for k in given)}" if given else "got none"
        raise DefinitionError(
            f"{who}: give exactly one of poke=callable, file=PATH or flow=NAME ({found}); "
            'e.g. .sensor("wait", file="/data/in.csv")'
        )
    key = given[0]
    if key == "poke" and not callable(poke):
        raise DefinitionError(f"{who}: poke={poke!r} is not callable; pass the function itself (without calling it)")
    if key == "file" and not (isinstance(file, str) and file) and not hasattr(file, "__fspath__"):
        raise DefinitionError(f"{who}: file={file!r} must be a path (a non-empty string or a pathlib.Path)")
    if key == "flow" and not (isinstance(flow, str) and flow):
        raise DefinitionError(f'{who}: flow={flow!r} must be the name of a flow, e.g. flow="orders"')
    return key


def sensor_options(policy: SensorPolicy, waits_for: str, target: str | None = None) -> dict[str, Any]:
    """A sensor's options as the step spec keeps them (JSON; see :func:`policy_of`)."""
    return {
        "every": policy.every_seconds,
        "timeout": policy.timeout_seconds,
        "backoff": policy.backoff,
        "on_timeout": policy.on_timeout,
        "waits_for": waits_for,
        "target": target,
    }


def policy_of(options: dict[str, Any]) -> SensorPolicy:
    """The policy of a stored sensor (the inverse of :func:`sensor_options`)."""
    on_timeout: OnTimeout = "skip" if options.get("on_timeout") == "skip" else "fail"
    return SensorPolicy(
        float(options["every"]), float(options["timeout"]), float(options.get("backoff", 1.0)), on_timeout
    )
