"""The fluent builder users write flows with.

>>> flow = (
...     Flow("etl", params={"day": Param(str)})
...     .step("extract", extract)
...     .step("transform", transform, after="extract", retries=2, timeout="30s")
...     .then("load", load)
... )

Imports only the standard library and flowkit's pure modules (errors, spec, graph, jsonsafe):
no Celery, no SQL. Errors are raised where the flow is defined and name the flow,
the step, and the file:line of the definition.
"""

from __future__ import annotations

import difflib
import inspect
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import CycleError, DefinitionError, DuplicateStepError, UnknownStepError
from .graph import find_cycle
from .jsonsafe import find_non_finite
from .spec import PARAM_TYPES, TRIGGER_RULES, FlowSpec, ParamSpec, RetryPolicy, StepSpec

__all__ = ["Flow", "Param", "UNSET", "parse_duration"]

_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,99}$")
_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PY_TYPES: dict[type, str] = {str: "str", int: "int", float: "float", bool: "bool", list: "list", dict: "dict"}


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


class Param:
    """A typed run parameter. ``Param(int)`` is required; ``Param(int, default=3)`` is not.

    ``secret=True`` shows the value as ``***`` wherever flowkit prints or logs it; the step
    still gets the real value. The value is stored with the run: for credentials, prefer
    :func:`flowkit.secret`.

    >>> Flow("report", params={"day": Param(str), "limit": Param(int, default=10),
    ...                        "token": Param(str, secret=True)})
    """

    def __init__(self, type: type | str = str, default: Any = _REQUIRED, help: str = "", *,
                 secret: bool = False) -> None:
        type_name = type if isinstance(type, str) else _PY_TYPES.get(type)
        if type_name not in PARAM_TYPES:
            raise DefinitionError(
                f"param type {type!r} is not supported; use one of {', '.join(PARAM_TYPES)}"
            )
        if default is not _REQUIRED and find_non_finite(default) is not None:
            raise DefinitionError(f"param default {default!r} holds NaN or Infinity, which JSON cannot store; "
                                  "use None or a finite number")
        self.type = type_name
        self.default = default
        self.help = help
        self.secret = bool(secret)

    @property
    def required(self) -> bool:
        return self.default is _REQUIRED


def parse_duration(value: str | float | int | None) -> float | None:
    """``"30s"``, ``"5m"``, ``"1h30m"``, ``"250ms"`` or a number of seconds -> seconds."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError("a boolean is not a duration")
    if isinstance(value, (int, float)):
        if not value > 0 or value == float("inf"):  # also refuses NaN
            raise ValueError("a duration must be positive")
        return float(value)
    text = str(value).strip().replace(" ", "")
    pos, total = 0, 0.0
    for m in _DURATION_RE.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
        pos = m.end()
    if pos != len(text) or not text or total <= 0:
        raise ValueError(f"{value!r} is not a duration")
    return total


def _caller_location(depth: int = 2) -> tuple[str | None, int | None]:
    """File and line of the user's code that called into the builder."""
    frame = sys._getframe(depth)
    here = __file__
    while frame is not None and frame.f_code.co_filename == here:
        frame = frame.f_back  # type: ignore[assignment]
    if frame is None:
        return None, None
    return frame.f_code.co_filename, frame.f_lineno


def _suggest(name: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(choices), n=1)
    return f' Did you mean "{close[0]}"?' if close else ""


@dataclass
class _StepDef:
    name: str
    fn: Callable[..., Any]
    upstream: tuple[str, ...]
    kind: str
    options: dict[str, Any]
    path: str | None
    lineno: int | None
    trigger: str = "all_success"
    reads: tuple[str, ...] = ()
    writes: tuple[str, ...] = ()
    doc: str = ""


class Flow:
    """A named DAG of steps, built fluently; each builder call returns the flow.

    Flow-level ``retries``, ``retry_backoff``, ``retry_max_delay``, ``timeout`` and
    ``queue`` are defaults that each step may override.
    """

    def __init__(
        self,
        name: str,
        *,
        schedule: str | None = None,
        owner: str | None = None,
        tags: Iterable[str] = (),
        params: Mapping[str, Param | Any] | None = None,
        description: str = "",
        retries: int = 0,
        retry_backoff: str | float = 1.0,
        retry_max_delay: str | float = 300.0,
        timeout: str | float | None = None,
        queue: str | None = None,
    ) -> None:
        self.path, self.lineno = _caller_location()
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise DefinitionError(
                f"flow name {name!r} is not valid; use letters, digits, '_' and '-' "
                "(at most 100, starting with a letter or '_')",
                path=self.path, lineno=self.lineno,
            )
        self.name = name
        self.schedule = self._check_schedule(schedule)
        self.owner = owner
        self.tags = tuple(tags)
        self.description = description or ""
        self.params = self._check_params(params or {})
        self._defaults = {
            "retries": retries,
            "retry_backoff": retry_backoff,
            "retry_max_delay": retry_max_delay,
            "timeout": timeout,
            "queue": queue,
            "priority": None,
        }
        self._check_options(None, self._defaults, self.path, self.lineno)
        self._steps: dict[str, _StepDef] = {}
        self._last: str | None = None

    # -- builder ---------------------------------------------------------------
    def step(
        self,
        name: str,
        fn: Callable[..., Any],
        *,
        after: str | Iterable[str] | None = None,
        retries: int = UNSET,
        retry_backoff: str | float = UNSET,
        retry_max_delay: str | float = UNSET,
        timeout: str | float | None = UNSET,
        queue: str | None = UNSET,
        priority: int | None = UNSET,
        trigger: str = "all_success",
        reads: Iterable[str] = (),
        writes: Iterable[str] = (),
    ) -> Flow:
        """Add a step that runs ``fn(ctx)`` once every step in ``after`` is done.

        ``reads``/``writes`` name datasets (URIs such as ``file:///data/x.csv`` or
        ``s3://bucket/key``) for lineage; they are recorded when the step succeeds.
        """
        return self._add(
            "task", name, fn, after, trigger, reads=reads, writes=writes,
            retries=retries, retry_backoff=retry_backoff, retry_max_delay=retry_max_delay,
            timeout=timeout, queue=queue, priority=priority,
        )

    def then(self, name: str, fn: Callable[..., Any], **options: Any) -> Flow:
        """Add a step after the most recently added one (a linear chain)."""
        if "after" in options:
            path, lineno = _caller_location()
            raise DefinitionError(
                f'flow "{self.name}" step "{name}": then() chains after the previous step; '
                "use step(..., after=...) to name upstreams",
                flow=self.name, step=name, path=path, lineno=lineno,
            )
        return self._add_with("task", name, fn, self._last, options)

    def branch(
        self,
        name: str,
        fn: Callable[..., Any],
        *,
        after: str | Iterable[str] | None = None,
        **options: Any,
    ) -> Flow:
        """Add a step whose return value names the downstream step(s) to follow.

        Direct downstream steps that were not chosen are skipped.
        """
        return self._add_with("branch", name, fn, after, options)

    def _add_with(
        self, kind: str, name: str, fn: Callable[..., Any], after: Any, options: dict[str, Any]
    ) -> Flow:
        trigger = options.pop("trigger", "all_success")
        reads = options.pop("reads", ())
        writes = options.pop("writes", ())
        allowed = {"retries", "retry_backoff", "retry_max_delay", "timeout", "queue", "priority"}
        unknown = set(options) - allowed
        if unknown:
            path, lineno = _caller_location()
            bad = sorted(unknown)[0]
            raise DefinitionError(
                f'flow "{self.name}" step "{name}": unknown option {bad!r}.'
                f"{_suggest(bad, allowed)} Options are: {', '.join(sorted(allowed))}",
                flow=self.name, step=name, path=path, lineno=lineno,
            )
        opts = {k: options.get(k, UNSET) for k in allowed}
        return self._add(kind, name, fn, after, trigger, reads=reads, writes=writes, **opts)

    def _add(
        self,
        kind: str,
        name: str,
        fn: Callable[..., Any],
        after: str | Iterable[str] | None,
        trigger: str,
        *,
        reads: Iterable[str] = (),
        writes: Iterable[str] = (),
        **options: Any,
    ) -> Flow:
        path, lineno = _caller_location()
        where: dict[str, Any] = {"flow": self.name, "step": name, "path": path, "lineno": lineno}
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise DefinitionError(
                f'flow "{self.name}": step name {name!r} is not valid; use letters, digits, '
                "'_' and '-' (at most 100, starting with a letter or '_')",
                **where,
            )
        if name in self._steps:
            first = self._steps[name]
            raise DuplicateStepError(
                f'flow "{self.name}" defines step "{name}" twice (first at '
                f"{first.path}:{first.lineno}); give one of them another name",
                **where,
            )
        if not callable(fn):
            raise DefinitionError(
                f'flow "{self.name}" step "{name}": {fn!r} is not callable; pass the function '
                "itself (without calling it)",
                **where,
            )
        self._check_signature(name, fn, where)
        if trigger not in TRIGGER_RULES:
            raise DefinitionError(
                f'flow "{self.name}" step "{name}": trigger {trigger!r} is not a trigger rule.'
                f"{_suggest(str(trigger), TRIGGER_RULES)} Use one of {', '.join(TRIGGER_RULES)}",
                **where,
            )
        self._check_options(name, options, path, lineno)
        if after is None:
            upstream: tuple[str, ...] = ()
        elif isinstance(after, str):
            upstream = (after,)
        else:
            upstream = tuple(after)
        for up in upstream:
            if not isinstance(up, str):
                raise DefinitionError(
                    f'flow "{self.name}" step "{name}": after= takes step names (strings), '
                    f"not {up!r}",
                    **where,
                )
        if len(set(upstream)) != len(upstream):
            raise DefinitionError(
                f'flow "{self.name}" step "{name}": after= names a step twice: {list(upstream)}',
                **where,
            )
        datasets = {}
        for label, uris in (("reads", reads), ("writes", writes)):
            uris = (uris,) if isinstance(uris, str) else tuple(uris)
            for uri in uris:
                if not isinstance(uri, str) or "://" not in uri:
                    raise DefinitionError(
                        f'flow "{self.name}" step "{name}": {label}= takes dataset URIs like '
                        f'"file:///data/orders.csv" or "s3://bucket/key", not {uri!r}',
                        **where,
                    )
            datasets[label] = uris
        self._steps[name] = _StepDef(
            name=name, fn=fn, upstream=upstream, kind=kind, options=options,
            path=path, lineno=lineno, trigger=trigger,
            reads=datasets["reads"], writes=datasets["writes"],
            doc=(inspect.getdoc(fn) or "").split("\n")[0],
        )
        self._last = name
        return self

    # -- validation --------------------------------------------------------------
    def _check_schedule(self, schedule: str | None) -> str | None:
        if schedule is None:
            return None
        try:
            from croniter import croniter  # lazy: only flows with a schedule need it

            ok = croniter.is_valid(schedule)
        except ImportError:  # pragma: no cover - croniter is a dependency
            ok = True
        if not ok:
            raise DefinitionError(
                f'flow "{self.name}": schedule {schedule!r} is not a cron expression; '
                'use five fields like "*/5 * * * *" (minute hour day month weekday)',
                flow=self.name, path=self.path, lineno=self.lineno,
            )
        return schedule

    def _check_params(self, params: Mapping[str, Any]) -> tuple[ParamSpec, ...]:
        out = []
        for pname, value in params.items():
            if not isinstance(pname, str) or not pname.isidentifier():
                raise DefinitionError(
                    f'flow "{self.name}": param name {pname!r} must be a Python identifier',
                    flow=self.name, path=self.path, lineno=self.lineno,
                )
            if isinstance(value, Param):
                p = value
            elif isinstance(value, type):
                p = Param(value)
            else:
                type_name = _PY_TYPES.get(type(value))
                if type_name is None:
                    raise DefinitionError(
                        f'flow "{self.name}": param "{pname}" default {value!r} is not JSON-like; '
                        f"wrap it as Param(type, default=...) with a type among {', '.join(PARAM_TYPES)}",
                        flow=self.name, path=self.path, lineno=self.lineno,
                    )
                p = Param(type_name, default=value)
            out.append(
                ParamSpec(
                    name=pname, type=p.type, default=None if p.required else p.default,
                    required=p.required, help=p.help, secret=p.secret,
                )
            )
        return tuple(out)

    def _check_options(
        self, step: str | None, options: dict[str, Any], path: str | None, lineno: int | None
    ) -> None:
        who = f'flow "{self.name}" step "{step}"' if step else f'flow "{self.name}"'
        where: dict[str, Any] = {"flow": self.name, "step": step, "path": path, "lineno": lineno}
        retries = options.get("retries", UNSET)
        if retries is not UNSET and (isinstance(retries, bool) or not isinstance(retries, int) or retries < 0):
            raise DefinitionError(
                f"{who}: retries={retries!r} must be a whole number >= 0", **where
            )
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
                f"{who}: priority={priority!r} must be a whole number from 0 to 9 (9 runs first)",
                **where,
            )
        queue = options.get("queue", UNSET)
        if queue not in (UNSET, None) and (not isinstance(queue, str) or not _NAME_RE.match(queue)):
            raise DefinitionError(
                f"{who}: queue={queue!r} is not a valid queue name", **where
            )

    def _check_signature(self, name: str, fn: Callable[..., Any], where: dict[str, Any]) -> None:
        try:
            sig = inspect.signature(fn)
        except (TypeError, ValueError):
            return  # builtins and C callables: nothing to check
        required = [
            p for p in sig.parameters.values()
            if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
        if len(required) > 1:
            raise DefinitionError(
                f'flow "{self.name}" step "{name}": {getattr(fn, "__name__", fn)}() takes '
                f"{len(required)} required arguments; a step function takes one (the step "
                "context, ctx) or none",
                **where,
            )

    def validate(self) -> Flow:
        """Check what can only be checked once every step exists: upstreams and cycles."""
        names = list(self._steps)
        for s in self._steps.values():
            for up in s.upstream:
                if up == s.name:
                    raise CycleError(
                        f'flow "{self.name}" step "{s.name}" depends on itself; remove it from after=',
                        cycle=[s.name, s.name], flow=self.name, step=s.name,
                        path=s.path, lineno=s.lineno,
                    )
                if up not in self._steps:
                    raise UnknownStepError(
                        f'step "{s.name}" depends on "{up}", which flow "{self.name}" does not '
                        f"define.{_suggest(up, names) or ' Define it or fix the name in after='}",
                        flow=self.name, step=s.name, path=s.path, lineno=s.lineno,
                    )
        cycle = find_cycle({n: s.upstream for n, s in self._steps.items()})
        if cycle:
            first = self._steps[cycle[0]]
            raise CycleError(
                f'flow "{self.name}" has a cycle: {" -> ".join(cycle)}; remove one of these '
                "dependencies",
                cycle=cycle, flow=self.name, step=cycle[0], path=first.path, lineno=first.lineno,
            )
        if not self._steps:
            raise DefinitionError(
                f'flow "{self.name}" has no steps; add one with .step(name, fn)',
                flow=self.name, path=self.path, lineno=self.lineno,
            )
        return self

    # -- output --------------------------------------------------------------------
    def spec(self, *, version: str | None = None) -> FlowSpec:
        """The validated, JSON-ready description of this flow."""
        self.validate()
        steps = []
        for s in self._steps.values():
            opt: dict[str, Any] = {
                k: (self._defaults[k] if v is UNSET else v) for k, v in s.options.items()
            }
            retry = RetryPolicy(
                retries=int(opt["retries"]),
                backoff_seconds=parse_duration(opt["retry_backoff"]) or 1.0,
                max_delay_seconds=parse_duration(opt["retry_max_delay"]) or 300.0,
            )
            steps.append(
                StepSpec(
                    name=s.name,
                    fn=f"{getattr(s.fn, '__module__', '?')}:{getattr(s.fn, '__qualname__', repr(s.fn))}",
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
                )
            )
        return FlowSpec(
            name=self.name, steps=tuple(steps), schedule=self.schedule, owner=self.owner,
            tags=self.tags, params=self.params, description=self.description,
            path=self.path, lineno=self.lineno, version=version,
        )

    def callable_for(self, step: str) -> Callable[..., Any]:
        """The user function of ``step`` (used by workers)."""
        return self._steps[step].fn

    @property
    def step_names(self) -> list[str]:
        return list(self._steps)

    def __repr__(self) -> str:
        return f"<Flow {self.name} steps={len(self._steps)}>"

