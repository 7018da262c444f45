"""The fluent builder users write flows with.

>>> flow = (
...     Flow("etl", params={"day": Param(str)})
...     .step("extract", extract)
...     .step("transform", transform, after="extract", retries=2, timeout="30s")
...     .then("load", load)
... )

Imports only the standard library and flowkit's pure modules (errors, spec, graph, and
dsl_checks, which checks every argument):
no Celery, no SQL. Every misuse, down to a misspelt keyword or a missing argument, is a
:class:`DefinitionError` raised where the flow is defined; it names the flow, the step,
and the file:line of the call.
"""

from __future__ import annotations

import inspect
import json
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Unpack

from .dsl_checks import (
    NAME_RE,
    NAME_RULE,
    as_strings,
    caller_location,
    check_callbacks,
    check_limit,
    check_lock,
    checks_arguments,
    display_name,
    optional_str,
    parse_duration,
    suggest,
    with_article,
)
from .errors import CycleError, DefinitionError, DuplicateStepError, InvalidParamError, UnknownStepError
from .graph import find_cycle
from .notify.config import check_notify, notify_callables
from .schedules.options import ScheduleKeywords
from .sensors.wiring import SensorOptions, sensor_step
from .sla.deadline import Deadline, check_deadline
from .spec import (
    CALLBACK_KINDS,
    MAX_SLOTS,
    ON_TIMEOUT,
    PARAM_TYPES,
    TRIGGER_RULES,
    FlowSpec,
    ParamSpec,
    RetryPolicy,
    ShellSpec,
    StepSpec,
    compensation_name,
)
from .triggers.conditions import check_triggers

__all__ = ["Flow", "Param", "SensorOptions", "StepOptions", "UNSET", "parse_duration"]

#: The longest name of a step with ``compensate=``: its compensation step's name (the step's
#: plus ":compensate") must fit the store's 100-character step column.
_MAX_COMPENSATED_NAME = 100 - len(compensation_name(""))
_PY_TYPES: dict[type, str] = {str: "str", int: "int", float: "float", bool: "bool", list: "list", dict: "dict"}
#: The Python types a param default of each declared type may have (bool is not an int).
_PARAM_VALUE_TYPES: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "int": (int,),
    "float": (int, float),
    "bool": (bool,),
    "list": (list,),
    "dict": (dict,),
}


class _Unset:
    """Marks a step option the user did not give, so it inherits the flow default."""

    _instance: _Unset | None = None

    def __new__(cls) -> _Unset:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNSET"

    def __bool__(self) -> bool:
        return False


UNSET: Any = _Unset()
_REQUIRED: Any = object()


class StepOptions(SensorOptions, total=False):
    """The keyword options of :meth:`Flow.step`, :meth:`Flow.then` and :meth:`Flow.branch`.

    An option left out (or given as ``UNSET``) takes the flow's default where the flow has
    one (retries, retry_backoff, retry_max_delay, timeout, queue, pool), else the default
    shown here.

    - ``retries`` (0): further attempts after a failure.
    - ``retry_backoff`` (1 s) and ``retry_max_delay`` (300 s): the wait before retry ``n`` is
      ``backoff * 2**(n-1)`` capped at ``max_delay``; seconds or a string like ``"30s"``.
    - ``timeout`` (None): an attempt running longer fails; seconds or ``"5m"``, ``"1h30m"``.
    - ``queue`` (None: the default queue) and ``priority`` (None, else 0..9, 9 first).
    - ``pool`` (None) and ``slots`` (1, up to 1000): the step holds ``slots`` slots of the
      named pool while it runs. ``slots`` needs a pool (the step's or the flow's).
    - ``lock`` (None): a lock held while the step runs: ``"name"`` alone (exclusive), or
      ``("name", "shared")`` beside other shared holders.
    - ``trigger`` ("all_success"): when the step runs given its upstreams; see
      ``spec.TRIGGER_RULES``.
    - ``reads``/``writes`` (none): dataset URIs (``"s3://bucket/key"``) for lineage; one URI
      or a list.
    - ``compensate`` (None): a function that undoes the step. When the run fails, the
      compensations of the steps that succeeded run in reverse dependency order, each as a
      step ``<name>:compensate`` with this step's retries, timeout, queue, pool and lock. It
      gets a context whose ``compensates`` names this step and whose ``upstream`` holds this
      step's result: ``ctx.result_of(ctx.compensates)``.
    - ``success_when`` (None): ``callable(result)``; a falsy answer fails the attempt
      (retries apply), see :mod:`flowkit.execution.success`.
    - ``on_success``/``on_failure``/``on_retry`` (None): callbacks, run on a worker with a
      :class:`~flowkit.context.CallbackContext` after the step's attempt succeeded, after
      it failed for good, or after an attempt failed and a retry was scheduled.
    - ``deadline`` (None): a :class:`~flowkit.sla.Deadline` for this step, counted from the
      run's creation (see :mod:`flowkit.sla.deadline`).
    """

    # The options a sensor's poke takes too (SensorOptions), and three of a task's own.
    timeout: str | float | None
    compensate: Callable[..., Any] | None
    success_when: Callable[[Any], Any] | None


class Param:
    """A typed run parameter. ``Param(int)`` is required; ``Param(int, default=3)`` is not.

    The default must have the declared type (an int is a fine float; a bool is not an
    int) or be None (optional, with no value); the flow checks it when it is defined.
    ``secret=True`` shows the value as ``***`` wherever flowkit prints or logs it; the step
    still gets the real value. The value is stored with the run: for credentials, prefer
    :func:`flowkit.secret`.

    >>> Flow("report", params={"day": Param(str), "limit": Param(int, default=10),
    ...                        "token": Param(str, secret=True)})
    """

    def __init__(
        self, type: type | str = str, default: Any = _REQUIRED, help: str = "", *, secret: bool = False
    ) -> None:
        type_name = type if isinstance(type, str) else _PY_TYPES.get(type)
        if type_name not in PARAM_TYPES:
            path, lineno = caller_location()
            raise DefinitionError(
                f"param type {type!r} is not supported; use one of {', '.join(PARAM_TYPES)}",
                path=path,
                lineno=lineno,
            )
        if not isinstance(help, str):
            path, lineno = caller_location()
            raise DefinitionError(f"param help={help!r} must be a string", path=path, lineno=lineno)
        self.type = type_name
        self.default = default
        self.help = help
        self.secret = bool(secret)

    @property
    def required(self) -> bool:
        return self.default is _REQUIRED


# -- the builder ----------------------------------------------------------------------------


@dataclass
class _StepDef:
    name: str
    fn: Callable[..., Any] | None  # None for a shell step
    upstream: tuple[str, ...]
    kind: str
    options: dict[str, Any]  # the inherited options this step sets itself
    path: str | None
    lineno: int | None
    trigger: str = "all_success"
    reads: tuple[str, ...] = ()
    writes: tuple[str, ...] = ()
    doc: str = ""
    slots: int = 1
    lock: str | None = None
    lock_mode: str = "exclusive"
    compensate: Callable[..., Any] | None = None
    approval_timeout: float | None = None
    on_timeout: str = "reject"
    shell: ShellSpec | None = None
    success_when: Callable[[Any], Any] | None = None
    callbacks: dict[str, Callable[..., Any]] = field(default_factory=dict)
    over: str | None = None
    max_parallel: int | None = None
    deadline: dict[str, Any] | None = None
    sensor: dict[str, Any] | None = None


#: A map step's instances are named "step[i]" in a 100-character column: leave room for
#: "[" + 10 digits + "]".
MAX_MAP_NAME = 88


def _awaits_a_decision() -> None:
    """Approval steps run no code: `flowkit approve` / `flowkit reject` decide them."""
    raise RuntimeError("an approval step is decided with `flowkit approve`/`flowkit reject`, never run")


class Flow:
    """A named DAG of steps, built fluently; each builder call returns the flow.

    Flow-level ``retries``, ``retry_backoff``, ``retry_max_delay``, ``timeout``, ``queue``
    and ``pool`` are defaults that each step may override. ``tags`` is a list of strings
    (a single string is one tag). ``max_active_runs`` caps the flow's runs at once and
    ``max_active_steps`` the steps of the flow queued or running at once, over all its runs
    (None: no cap). ``on_success``/``on_failure`` are called once when a run ends in that
    state, ``on_retry`` whenever a step of the flow schedules a retry (see
    :mod:`flowkit.execution.callbacks`). ``notify`` lists :class:`flowkit.notify.Webhook` and
    :class:`flowkit.notify.Log` notifiers (see :mod:`flowkit.notify`).
    """

    @checks_arguments(
        hints={
            key: f"{key}= is a step option, not a flow default; set it on the steps that need it"
            for key in StepOptions.__optional_keys__
        }
    )
    def __init__(
        self,
        name: str,
        *,
        schedule: str | None = None,
        owner: str | None = None,
        tags: str | Iterable[str] = (),
        params: Mapping[str, Param | Any] | None = None,
        description: str = "",
        retries: int = 0,
        retry_backoff: str | float = 1.0,
        retry_max_delay: str | float = 300.0,
        timeout: str | float | None = None,
        queue: str | None = None,
        pool: str | None = None,
        max_active_runs: int | None = None,
        max_active_steps: int | None = None,
        on_success: Callable[[Any], Any] | None = None,
        on_failure: Callable[[Any], Any] | None = None,
        on_retry: Callable[[Any], Any] | None = None,
        notify: Any = None,
        deadline: Deadline | None = None,
        trigger_on: Any = None,  # flowkit/triggers: FlowDone(...) and Dataset(...) conditions
        trigger_mode: str | None = None,
        trigger_batch: bool | None = None,
        **schedule_options: Unpack[ScheduleKeywords],  # flowkit/schedules/options.py
    ) -> None:
        self.path, self.lineno = caller_location()
        if not isinstance(name, str) or not NAME_RE.match(name):
            raise DefinitionError(f"flow name {name!r} is not valid; {NAME_RULE}", path=self.path, lineno=self.lineno)
        self.name = name
        where = self._where(None, self.path, self.lineno)
        who = f'flow "{name}"'
        self.schedule = self._check_schedule(schedule)
        self.schedule_options = self._check_schedule_options(schedule_options)
        self.owner = optional_str(owner, "owner", who, where)
        self.description = optional_str(description, "description", who, where) or ""
        self.tags = as_strings(tags, "tags", "a tag", who, where)
        self.params = self._check_params(params)
        self.max_active_runs = check_limit(max_active_runs, "max_active_runs", who, where)
        self.max_active_steps = check_limit(max_active_steps, "max_active_steps", who, where)
        self.notify = check_notify(notify, who, where)
        #: The Python callables of notify=, by their index in its data (run on workers).
        self.notify_fns = notify_callables(notify)
        self.deadline = check_deadline(deadline, who, where)
        self.triggers = check_triggers(
            name,
            trigger_on,
            trigger_mode,
            trigger_batch,
            has_required_params=any(p.required for p in self.params),
            where=where,
        )
        self._defaults: dict[str, Any] = {
            "retries": retries,
            "retry_backoff": retry_backoff,
            "retry_max_delay": retry_max_delay,
            "timeout": timeout,
            "queue": queue,
            "priority": None,
            "pool": pool,
        }
        self._check_options(self._defaults, who, where)
        self._callbacks = check_callbacks(
            {"on_success": on_success, "on_failure": on_failure, "on_retry": on_retry}, who, where
        )
        self._steps: dict[str, _StepDef] = {}
        self._last: str | None = None

    # -- builder ---------------------------------------------------------------
    @checks_arguments()
    def step(
        self,
        name: str,
        fn: Callable[..., Any],
        *,
        after: str | Iterable[str] | None = None,
        **options: Unpack[StepOptions],
    ) -> Flow:
        """Add a step that runs ``fn(ctx)`` once its upstreams (``after``) allow it.

        ``after`` is a step name or a list of them; the options are :class:`StepOptions`.
        """
        return self._add("task", name, fn, after, dict(options))

    @checks_arguments(
        hints={"after": "then() chains after the previous step; use step(..., after=...) to name upstreams"}
    )
    def then(self, name: str, fn: Callable[..., Any], **options: Unpack[StepOptions]) -> Flow:
        """Add a step after the most recently added one (a linear chain)."""
        return self._add("task", name, fn, self._last, dict(options))

    @checks_arguments()
    def branch(
        self,
        name: str,
        fn: Callable[..., Any],
        *,
        after: str | Iterable[str] | None = None,
        **options: Unpack[StepOptions],
    ) -> Flow:
        """Add a step whose return value names the downstream step(s) to follow.

        Direct downstream steps that were not chosen are skipped.
        """
        return self._add("branch", name, fn, after, dict(options))

    @checks_arguments()
    def approval(
        self,
        name: str,
        *,
        after: str | Iterable[str] | None = None,
        timeout: str | float | None = None,
        on_timeout: str = "reject",
        trigger: str = "all_success",
    ) -> Flow:
        """Add a step that waits for a person: `flowkit approve RUN STEP --by NAME` makes it
        succeed (its downstream steps go on), `flowkit reject ...` fails it. It holds no
        worker and no slot while it waits. After ``timeout`` (None: wait for ever) with no
        decision, ``on_timeout`` ("reject" or "approve") decides, as actor "timeout".
        """
        path, lineno = caller_location()
        where = self._where(name if isinstance(name, str) else None, path, lineno)
        who = f'flow "{self.name}" approval "{name}"'
        try:
            seconds = parse_duration(timeout)
        except ValueError:
            raise DefinitionError(
                f"{who}: timeout={timeout!r} is not a duration; use a number of seconds or a string "
                'like "30m", "2h", or None to wait for ever',
                **where,
            ) from None
        if on_timeout not in ON_TIMEOUT:
            raise DefinitionError(
                f"{who}: on_timeout={on_timeout!r} must be one of {', '.join(map(repr, ON_TIMEOUT))}"
                f"{suggest(str(on_timeout), ON_TIMEOUT)}",
                **where,
            )
        self._add("approval", name, _awaits_a_decision, after, {"trigger": trigger})
        self._steps[name].doc = ""
        self._steps[name].options["pool"] = None  # it waits holding nothing (not the flow's pool)
        self._steps[name].approval_timeout = seconds
        self._steps[name].on_timeout = on_timeout
        return self

    @checks_arguments()
    def shell(
        self,
        name: str,
        command: str,
        *,
        after: str | Iterable[str] | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        fail_on: str | Iterable[str] | None = None,
        success_codes: int | Iterable[int] = (0,),
        **options: Unpack[StepOptions],
    ) -> Flow:
        """Add a step that runs ``/bin/sh -c command`` on a worker (see :mod:`flowkit.execution.shell`).

        ``env`` is merged over the worker's environment; the attempt fails on an exit code
        not in ``success_codes`` or on an output line matching a ``fail_on`` regex.
        """
        from .execution.shell import check_definition

        path, lineno = caller_location()
        who = f'flow "{self.name}" step "{name}"'
        shell = check_definition(
            command,
            env,
            cwd,
            fail_on,
            success_codes,
            who=who,
            where=self._where(name if isinstance(name, str) else None, path, lineno),
        )
        return self._add("shell", name, None, after, dict(options), shell=shell)

    @checks_arguments()
    def map(
        self,
        name: str,
        fn: Callable[..., Any],
        *,
        over: str | None = None,
        max_parallel: int | None = None,
        after: str | Iterable[str] | None = None,
        **options: Unpack[StepOptions],
    ) -> Flow:
        """Add a step that runs ``fn(ctx)`` once per element of step ``over``'s list result,
        with ``ctx.item`` (the element) and ``ctx.index``; each instance (``name[i]``) is
        retried and limited on its own. Downstream steps get the list of the instances'
        results, in element order. An empty list skips the step; anything but a list fails it.

        ``over`` is added to the upstreams if ``after`` omits it. ``max_parallel`` caps the
        instances queued or running at once (None: no cap of its own).

        >>> Flow("orders").step("invoice", invoice).map("notify", send_notice, over="invoice")
        """
        path, lineno = caller_location()
        where = self._where(name if isinstance(name, str) else None, path, lineno)
        who = f'flow "{self.name}" step "{name}"'
        if isinstance(name, str) and len(name) > MAX_MAP_NAME:
            raise DefinitionError(
                f"{who}: a map step's name may have at most {MAX_MAP_NAME} characters (its "
                "instances are named name[i]); shorten it",
                **where,
            )
        if over is None:
            raise DefinitionError(
                f'{who}: map() needs over="step", the upstream step whose list result it maps over', **where
            )
        if not isinstance(over, str):
            raise DefinitionError(f"{who}: over={over!r} must be the name of one step", **where)
        if max_parallel is not None and (
            isinstance(max_parallel, bool) or not isinstance(max_parallel, int) or max_parallel < 1
        ):
            raise DefinitionError(
                f"{who}: max_parallel={max_parallel!r} must be a whole number >= 1, or None for no cap", **where
            )
        self._add("map", name, fn, after, dict(options))
        added = self._steps[name]
        if over not in added.upstream:
            added.upstream = (over, *added.upstream)
        added.over, added.max_parallel = over, max_parallel
        return self

    @checks_arguments()
    def sensor(
        self,
        name: str,
        poke: Callable[..., Any] | None = None,
        *,
        file: str | os.PathLike[str] | None = None,
        flow: str | None = None,
        every: str | float = "30s",
        timeout: str | float = "1h",
        backoff: float = 2.0,
        on_timeout: str = "fail",
        after: str | Iterable[str] | None = None,
        **options: Unpack[SensorOptions],
    ) -> Flow:
        """Add a step that waits for a condition: ``poke(ctx)`` (or ``file=PATH`` exists, or a
        run of ``flow=NAME`` for the same logical date succeeded), checked every ``every``,
        each wait ``backoff`` times the last, until ``timeout`` after the first poke; then
        ``on_timeout`` ("fail" or "skip") ends it. Between pokes it holds no worker and no
        slot (see :mod:`flowkit.sensors`). A poke returns truthy (done), falsy or
        ``NotYet("why")`` (not yet); an error uses up ``retries=``, "not yet" never does.

        >>> Flow("daily").sensor("landed", file="/data/in.csv", every="1m", timeout="6h").then("load", load)
        """
        path, lineno = caller_location()
        where = self._where(name if isinstance(name, str) else None, path, lineno)
        who = f'flow "{self.name}" step "{name}"'
        try:
            fn, sensor = sensor_step(
                poke=poke,
                file=file,
                flow=flow,
                every=every,
                timeout=timeout,
                backoff=backoff,
                on_timeout=on_timeout,
                who=who,
            )
        except DefinitionError as exc:
            raise DefinitionError(exc.message, **where) from None
        self._add("sensor", name, fn, after, dict(options))
        self._steps[name].sensor = sensor
        return self

    def _add(
        self,
        kind: str,
        name: str,
        fn: Callable[..., Any] | None,
        after: Any,
        options: dict[str, Any],
        shell: ShellSpec | None = None,
    ) -> Flow:
        path, lineno = caller_location()
        where = self._where(name if isinstance(name, str) else None, path, lineno)
        self._check_new_name(name, where)
        who = f'flow "{self.name}" step "{name}"'
        if shell is None:
            if not callable(fn):
                raise DefinitionError(
                    f"{who}: {fn!r} is not callable; pass the function itself (without calling it)", **where
                )
            self._check_signature(fn, who, where)
        options = {k: v for k, v in options.items() if v is not UNSET}
        success_when = _check_success_when(options.pop("success_when", None), who, where)
        trigger = _check_trigger(options.pop("trigger", "all_success"), who, where)
        reads = _check_uris(options.pop("reads", ()), "reads", who, where)
        writes = _check_uris(options.pop("writes", ()), "writes", who, where)
        upstream = as_strings(after, "after", "a step name", who, where)
        if len(set(upstream)) != len(upstream):
            raise DefinitionError(f"{who}: after= names a step twice: {list(upstream)}", **where)
        slots = options.pop("slots", UNSET)
        lock, lock_mode = check_lock(options.pop("lock", None), who, where)
        compensate = self._check_compensate(options.pop("compensate", None), name, who, where)
        callbacks = check_callbacks({k: options.pop(k, None) for k in CALLBACK_KINDS}, who, where)
        step_deadline = check_deadline(options.pop("deadline", None), who, where)
        self._check_options(options, who, where)
        self._check_slots(slots, options, who, where)
        self._steps[name] = _StepDef(
            name=name,
            fn=fn,
            upstream=upstream,
            kind=kind,
            options=options,
            path=path,
            lineno=lineno,
            trigger=trigger,
            reads=reads,
            writes=writes,
            doc=(inspect.getdoc(fn) or "").split("\n")[0] if fn is not None else "",
            slots=1 if slots is UNSET else slots,
            lock=lock,
            lock_mode=lock_mode,
            compensate=compensate,
            shell=shell,
            success_when=success_when,
            callbacks=callbacks,
            deadline=step_deadline,
        )
        self._last = name
        return self

    def _check_new_name(self, name: Any, where: dict[str, Any]) -> None:
        """A valid step name that this flow does not define yet."""
        if not isinstance(name, str) or not NAME_RE.match(name):
            raise DefinitionError(f'flow "{self.name}": step name {name!r} is not valid; {NAME_RULE}', **where)
        if name in self._steps:
            first = self._steps[name]
            raise DuplicateStepError(
                f'flow "{self.name}" defines step "{name}" twice (first at '
                f"{first.path}:{first.lineno}); give one of them another name",
                **where,
            )

    def _check_compensate(
        self, compensate: Any, name: str, who: str, where: dict[str, Any]
    ) -> Callable[..., Any] | None:
        """The function that undoes the step, if any, and a name short enough for its
        compensation step's."""
        if compensate is None:
            return None
        if not callable(compensate):
            raise DefinitionError(
                f"{who}: compensate={compensate!r} is not callable; pass the function that undoes "
                "the step (without calling it)",
                **where,
            )
        self._check_signature(compensate, who, where)
        if len(name) > _MAX_COMPENSATED_NAME:
            raise DefinitionError(
                f"{who}: a step with compensate= may have a name of at most {_MAX_COMPENSATED_NAME} "
                f'characters (its compensation step is "<name>{compensation_name("")}"); shorten it',
                **where,
            )
        undo: Callable[..., Any] = compensate
        return undo

    def _check_slots(self, slots: Any, options: dict[str, Any], who: str, where: dict[str, Any]) -> None:
        """Slots are a whole number in range, counted in a pool of the step or the flow."""
        if slots is UNSET:
            return
        if isinstance(slots, bool) or not isinstance(slots, int) or not 1 <= slots <= MAX_SLOTS:
            raise DefinitionError(f"{who}: slots={slots!r} must be a whole number from 1 to {MAX_SLOTS}", **where)
        if options.get("pool", self._defaults["pool"]) is None:
            raise DefinitionError(
                f'{who}: slots={slots!r} needs a pool to count them in; add pool="name" to the '
                "step or the flow, or drop slots=",
                **where,
            )

    # -- validation --------------------------------------------------------------
    def _where(self, step: str | None, path: str | None, lineno: int | None) -> dict[str, Any]:
        return {"flow": self.name, "step": step, "path": path, "lineno": lineno}

    def _check_schedule(self, schedule: Any) -> str | None:
        if schedule is None:
            return None
        ok = False
        if isinstance(schedule, str):
            from croniter import croniter  # lazy: only flows with a schedule need it

            ok = croniter.is_valid(schedule)
        if not ok:
            raise DefinitionError(
                f'flow "{self.name}": schedule {schedule!r} is not a cron expression; '
                'use five fields like "*/5 * * * *" (minute hour day month weekday)',
                flow=self.name,
                path=self.path,
                lineno=self.lineno,
            )
        return str(schedule)

    def _check_schedule_options(self, options: ScheduleKeywords) -> dict[str, Any] | None:
        from .schedules.options import checked_options

        where = {"flow": self.name, "path": self.path, "lineno": self.lineno}
        return checked_options(self.name, self.schedule, dict(options), where)

    def _check_params(self, params: Any) -> tuple[ParamSpec, ...]:
        where = self._where(None, self.path, self.lineno)
        if params is None:
            return ()
        if not isinstance(params, Mapping):
            raise DefinitionError(
                f'flow "{self.name}": params= takes a dict of name -> Param(type, default=...), '
                f"not {type(params).__name__} {params!r}",
                **where,
            )
        out = []
        for pname, value in params.items():
            if not isinstance(pname, str) or not pname.isidentifier():
                raise DefinitionError(f'flow "{self.name}": param name {pname!r} must be a Python identifier', **where)
            who = f'flow "{self.name}" param "{pname}"'
            if isinstance(value, Param):
                p = value
            elif isinstance(value, type):
                p = Param(value)
            else:
                type_name = _PY_TYPES.get(type(value))
                if type_name is None:
                    raise DefinitionError(
                        f"{who}: default {value!r} is not JSON-like; wrap it as Param(type, "
                        f"default=...) with a type among {', '.join(PARAM_TYPES)}",
                        **where,
                    )
                p = Param(type_name, default=value)
            default = None if p.required else self._check_default(p, who, where)
            out.append(
                ParamSpec(name=pname, type=p.type, default=default, required=p.required, help=p.help, secret=p.secret)
            )
        return tuple(out)

    @staticmethod
    def _check_default(p: Param, who: str, where: dict[str, Any]) -> Any:
        value: Any = p.default
        if value is None:
            return None
        matches = isinstance(value, _PARAM_VALUE_TYPES[p.type]) and not (
            p.type in ("int", "float") and isinstance(value, bool)
        )
        if not matches:
            raise InvalidParamError(
                f"{who}: default {value!r} is {with_article(type(value).__name__)}, not {with_article(p.type)}; "
                f"give a default of type {p.type} or change Param's type",
                **where,
            )
        try:
            json.dumps(value, allow_nan=False)  # NaN is not JSON; PostgreSQL refuses it
        except (TypeError, ValueError) as exc:
            raise InvalidParamError(
                f"{who}: default {value!r} cannot be stored as JSON ({exc}); use only str, int, "
                "float, bool, None, lists and dicts",
                **where,
            ) from None
        return float(value) if p.type == "float" else value

    def _check_options(self, options: dict[str, Any], who: str, where: dict[str, Any]) -> None:
        retries = options.get("retries", UNSET)
        if retries is not UNSET and (isinstance(retries, bool) or not isinstance(retries, int) or retries < 0):
            raise DefinitionError(f"{who}: retries={retries!r} must be a whole number >= 0", **where)
        for key in ("timeout", "retry_backoff", "retry_max_delay"):
            value = options.get(key, UNSET)
            if value is UNSET or value is None:
                continue
            try:
                parse_duration(value)
            except ValueError:
                raise DefinitionError(
                    f"{who}: {key}={value!r} is not a duration; use a number of seconds or a "
                    'string like "30s", "5m", "1h30m"',
                    **where,
                ) from None
        priority = options.get("priority", UNSET)
        if priority not in (UNSET, None) and (
            isinstance(priority, bool) or not isinstance(priority, int) or not 0 <= priority <= 9
        ):
            raise DefinitionError(
                f"{who}: priority={priority!r} must be a whole number from 0 to 9 (9 runs first)", **where
            )
        for key in ("queue", "pool"):
            value = options.get(key, UNSET)
            if value not in (UNSET, None) and (not isinstance(value, str) or not NAME_RE.match(value)):
                raise DefinitionError(f"{who}: {key}={value!r} is not a valid {key} name; {NAME_RULE}", **where)

    def _check_signature(self, fn: Callable[..., Any], who: str, where: dict[str, Any]) -> None:
        try:
            sig = inspect.signature(fn)
        except (TypeError, ValueError):
            return  # builtins and C callables: nothing to check
        required = [
            p
            for p in sig.parameters.values()
            if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
        if len(required) > 1:
            raise DefinitionError(
                f"{who}: {getattr(fn, '__name__', fn)}() takes {len(required)} required arguments; "
                "a step function takes one (the step context, ctx) or none",
                **where,
            )

    def validate(self) -> Flow:
        """Check what can only be checked once every step exists: upstreams and cycles."""
        names = list(self._steps)
        for s in self._steps.values():
            if s.over is not None and s.over not in self._steps:
                raise UnknownStepError(
                    f'map step "{s.name}" maps over "{s.over}" (over=), which flow "{self.name}" '
                    f"does not define.{suggest(s.over, names) or ' Define it or fix the name in over='}",
                    flow=self.name,
                    step=s.name,
                    path=s.path,
                    lineno=s.lineno,
                )
            for up in s.upstream:
                if up == s.name:
                    raise CycleError(
                        f'flow "{self.name}" step "{s.name}" depends on itself; remove it from after=',
                        cycle=[s.name, s.name],
                        flow=self.name,
                        step=s.name,
                        path=s.path,
                        lineno=s.lineno,
                    )
                if up not in self._steps:
                    raise UnknownStepError(
                        f'step "{s.name}" depends on "{up}", which flow "{self.name}" does not '
                        f"define.{suggest(up, names) or ' Define it or fix the name in after='}",
                        flow=self.name,
                        step=s.name,
                        path=s.path,
                        lineno=s.lineno,
                    )
        cycle = find_cycle({n: s.upstream for n, s in self._steps.items()})
        if cycle:
            first = self._steps[cycle[0]]
            raise CycleError(
                f'flow "{self.name}" has a cycle: {" -> ".join(cycle)}; remove one of these dependencies',
                cycle=cycle,
                flow=self.name,
                step=cycle[0],
                path=first.path,
                lineno=first.lineno,
            )
        if not self._steps:
            raise DefinitionError(
                f'flow "{self.name}" has no steps; add one with .step(name, fn)',
                flow=self.name,
                path=self.path,
                lineno=self.lineno,
            )
        return self

    # -- output --------------------------------------------------------------------
    def spec(self, *, version: str | None = None) -> FlowSpec:
        """The validated, JSON-ready description of this flow."""
        self.validate()
        steps: list[StepSpec] = []
        for s in self._steps.values():
            opt = {**self._defaults, **s.options}
            retry = RetryPolicy(
                retries=int(opt["retries"]),
                backoff_seconds=parse_duration(opt["retry_backoff"]) or 1.0,
                max_delay_seconds=parse_duration(opt["retry_max_delay"]) or 300.0,
            )
            steps.append(
                StepSpec(
                    name=s.name,
                    fn="approval"
                    if s.kind == "approval"
                    else display_name(s.fn)
                    if s.shell is None
                    else f"/bin/sh -c {s.shell.command}"[:200],
                    upstream=s.upstream,
                    kind=s.kind,
                    retry=retry,
                    timeout_seconds=parse_duration(opt["timeout"]),
                    queue=opt["queue"],
                    priority=opt["priority"],
                    trigger=s.trigger,
                    reads=s.reads,
                    writes=s.writes,
                    lineno=s.lineno,
                    doc=s.doc,
                    pool=opt["pool"],
                    slots=s.slots,
                    lock=s.lock,
                    lock_mode=s.lock_mode,
                    compensate=compensation_name(s.name) if s.compensate else None,
                    approval_timeout_seconds=s.approval_timeout,
                    on_timeout=s.on_timeout,
                    shell=s.shell,
                    success_when=display_name(s.success_when) if s.success_when is not None else None,
                    callbacks=tuple(k for k in CALLBACK_KINDS if k in s.callbacks),
                    over=s.over,
                    max_parallel=s.max_parallel,
                    deadline=s.deadline,
                    sensor=s.sensor,
                )
            )
        return FlowSpec(
            name=self.name,
            steps=tuple(steps),
            schedule=self.schedule,
            schedule_options=self.schedule_options,
            owner=self.owner,
            tags=self.tags,
            params=self.params,
            description=self.description,
            path=self.path,
            lineno=self.lineno,
            version=version,
            max_active_runs=self.max_active_runs,
            max_active_steps=self.max_active_steps,
            compensations=self._compensations(steps),
            callbacks=tuple(k for k in CALLBACK_KINDS if k in self._callbacks),
            notify=self.notify,
            deadline=self.deadline,
            triggers=self.triggers,
        )

    def _compensations(self, steps: list[StepSpec]) -> tuple[StepSpec, ...]:
        """One compensation step per step with ``compensate=``. The compensation of A waits
        for the compensations of every step downstream of A (not only the nearest: a step in
        between may have failed while one after it, under all_done, succeeded); ``all_done``
        runs it whether those succeeded or failed."""
        from dataclasses import replace

        downstream: dict[str, list[str]] = {s.name: [] for s in steps}
        for s in steps:
            for up in s.upstream:
                downstream[up].append(s.name)
        out = []
        for s in reversed(steps):
            if s.compensate is None:
                continue
            seen: set[str] = set()
            stack = list(downstream[s.name])
            while stack:
                name = stack.pop()
                if name not in seen:
                    seen.add(name)
                    stack += downstream[name]
            after = tuple(c for c in (t.compensate for t in steps if t.name in seen) if c)
            fn = self._steps[s.name].compensate
            out.append(
                replace(
                    s,
                    name=s.compensate,
                    kind="compensation",
                    upstream=after,
                    trigger="all_done",
                    fn=f"{getattr(fn, '__module__', '?')}:{getattr(fn, '__qualname__', repr(fn))}",
                    doc=(inspect.getdoc(fn) or "").split("\n")[0],
                    reads=(),
                    writes=(),
                    compensates=s.name,
                    compensate=None,
                    callbacks=(),  # the step's callbacks are its own
                    shell=None,
                    success_when=None,
                )
            )  # it runs its function, checked by nothing of the step's
        return tuple(out)

    def callable_for(self, step: str) -> Callable[..., Any]:
        """The user function of ``step`` or of a compensation step (used by workers)."""
        base, _, role = step.partition(":")
        if role and compensation_name(base) == step and self._steps[base].compensate:
            return self._steps[base].compensate  # type: ignore[return-value]
        fn = self._steps[step].fn
        if fn is None:
            raise LookupError(f'step "{step}" of flow "{self.name}" is a shell step: it has no function')
        return fn

    def success_check_for(self, step: str) -> Callable[[Any], Any] | None:
        """The success_when= check of ``step``, if it has one (used by workers)."""
        return self._steps[step].success_when

    def callback_for(self, kind: str, step: str | None = None) -> Callable[..., Any] | None:
        """The ``kind`` callback of ``step`` (of the flow when None), if defined (used by
        workers). A map step's instance (``name[i]``) has its map step's callbacks."""
        if not step:
            return self._callbacks.get(kind)
        from .spec import split_instance

        return self._steps[split_instance(step)[0]].callbacks.get(kind)

    @property
    def step_names(self) -> list[str]:
        return list(self._steps)

    def __repr__(self) -> str:
        return f"<Flow {self.name} steps={len(self._steps)}>"


def _check_success_when(success_when: Any, who: str, where: dict[str, Any]) -> Any:
    if success_when is not None and not callable(success_when):
        raise DefinitionError(
            f"{who}: success_when={success_when!r} is not callable; pass a function that takes the "
            'step\'s result and returns True when it succeeded, e.g. success_when=lambda r: r["rows"] > 0',
            **where,
        )
    return success_when


def _check_trigger(trigger: Any, who: str, where: dict[str, Any]) -> str:
    if not isinstance(trigger, str) or trigger not in TRIGGER_RULES:
        raise DefinitionError(
            f"{who}: trigger {trigger!r} is not a trigger rule."
            f"{suggest(str(trigger), TRIGGER_RULES)} Use one of {', '.join(TRIGGER_RULES)}",
            **where,
        )
    return trigger


def _check_uris(value: Any, label: str, who: str, where: dict[str, Any]) -> tuple[str, ...]:
    """``reads=``/``writes=``: dataset URIs, one or several."""
    uris = as_strings(value, label, "a dataset URI", who, where)
    for uri in uris:
        if "://" not in uri:
            raise DefinitionError(
                f'{who}: {label}= takes dataset URIs like "file:///data/orders.csv" or "s3://bucket/key", not {uri!r}',
                **where,
            )
    return uris
