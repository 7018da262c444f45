"""A sensor step as the builder records it: the callable a worker pokes with and the options
the spec keeps. Pure (the builder imports it): no store, no Celery."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any, TypedDict, cast

from ..sla.deadline import Deadline
from .pokes import NotYet, file_exists_poke
from .policy import check_target, sensor_options, sensor_policy


class SensorOptions(TypedDict, total=False):
    """The keyword options of :meth:`Flow.sensor` besides its own (every, timeout, backoff,
    on_timeout): the :class:`StepOptions` that mean something for a poke. ``retries`` counts
    pokes that raised an error, never pokes that said "not yet"."""

    retries: int
    retry_backoff: str | float
    retry_max_delay: str | float
    queue: str | None
    priority: int | None
    pool: str | None
    slots: int
    lock: str | tuple[str, str] | None
    trigger: str
    reads: str | Iterable[str]
    writes: str | Iterable[str]
    on_success: Callable[[Any], Any] | None
    on_failure: Callable[[Any], Any] | None
    on_retry: Callable[[Any], Any] | None
    deadline: Deadline | None


def sensor_step(
    *,
    poke: Callable[..., Any] | None,
    file: str | os.PathLike[str] | None,
    flow: str | None,
    every: str | float,
    timeout: str | float,
    backoff: float,
    on_timeout: str,
    who: str,
) -> tuple[Callable[..., Any], dict[str, Any]]:
    """Check a sensor's options; returns its poke and its ``StepSpec.sensor`` options. Each bad
    option raises a one-line DefinitionError naming ``who``."""
    waits_for = check_target(poke=poke, file=file, flow=flow, who=who)
    policy = sensor_policy(every=every, timeout=timeout, backoff=backoff, on_timeout=on_timeout, who=who)
    if waits_for == "file":
        target = os.fspath(cast("str | os.PathLike[str]", file))
        return _named(file_exists_poke(target), f"file_exists({target!r})"), sensor_options(policy, "file", target)
    if waits_for == "flow":
        name = str(flow)
        return _named(_store_answers(name), f"flow_succeeded({name!r})"), sensor_options(policy, "flow", name)
    return cast("Callable[..., Any]", poke), sensor_options(policy, "poke")


def _named(fn: Callable[..., Any], qualname: str) -> Callable[..., Any]:
    """``fn`` under a name that says what it checks (the spec shows it as the step's function)."""
    fn.__module__ = "flowkit.sensors"
    fn.__qualname__ = qualname
    return fn


def _store_answers(flow: str) -> Callable[[], Any]:
    """The poke of ``flow=NAME``: the worker answers it from the store (it reads the runs of
    that flow for the run's logical date), so this function is never the one called."""

    def poke() -> Any:
        raise NotYet(f'the worker checks flow "{flow}" in the store')

    return poke
