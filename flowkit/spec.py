"""Frozen, JSON-serialisable descriptions of flows: what crosses process boundaries.

The loader turns a user's ``Flow`` into a :class:`FlowSpec`; the store keeps it as JSON;
the scheduler and the renderer read only specs, never user code.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass, field, replace
from functools import cached_property
from typing import Any

from .graph import TRIGGER_RULES as TRIGGER_RULES  # defined beside decide_counts; kept importable here
from .graph import topo_order

#: Step kinds. ``branch`` steps return the name(s) of the downstream steps to follow;
#: ``map`` steps run once per element of their ``over`` upstream's list result;
#: ``shell`` steps run a command (:class:`ShellSpec`) instead of a Python function;
#: ``approval`` steps run no code and wait for ``flowkit approve/reject``; ``compensation``
#: steps (in ``FlowSpec.compensations``) undo a succeeded step when its run fails;
#: ``sensor`` steps poke a condition until it holds (``StepSpec.sensor``, flowkit.sensors).
STEP_KINDS = ("task", "branch", "map", "shell", "approval", "compensation", "sensor")

#: What an approval does when its ``timeout`` passes with no decision.
ON_TIMEOUT = ("reject", "approve")

#: The name of the compensation step of step ``name``. A user step name cannot hold ':'.
COMPENSATION_SUFFIX = ":compensate"


def compensation_name(step: str) -> str:
    return step + COMPENSATION_SUFFIX


PARAM_TYPES = ("str", "int", "float", "bool", "list", "dict")

#: How a step holds its lock: "exclusive" alone, "shared" beside other shared holders.
LOCK_MODES = ("exclusive", "shared")

#: The most pool slots one step may take.
MAX_SLOTS = 1000


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how far apart a failed step is tried again.

    Attempt ``n`` (1-based) that fails waits ``backoff * 2**(n-1)`` seconds, capped at
    ``max_delay``, then scaled by a random factor in ``[1 - jitter, 1]`` so that many
    failing steps do not retry in lockstep.
    """

    retries: int = 0
    backoff_seconds: float = 1.0
    max_delay_seconds: float = 300.0
    jitter: float = 0.25

    @property
    def max_attempts(self) -> int:
        return self.retries + 1

    def delay_after(self, attempt: int, rng: random.Random | None = None) -> float:
        base = min(self.backoff_seconds * (2 ** max(attempt - 1, 0)), self.max_delay_seconds)
        factor = 1.0 - self.jitter * (rng or random.Random()).random()
        return float(base * factor)


@dataclass(frozen=True)
class ParamSpec:
    name: str
    type: str
    default: Any = None
    required: bool = False
    help: str = ""
    #: Shown as *** wherever flowkit prints or logs the value (specs stored before lack it).
    secret: bool = False


@dataclass(frozen=True)
class ShellSpec:
    """What a shell step runs: ``/bin/sh -c command`` (see :mod:`flowkit.execution.shell`)."""

    command: str
    #: (name, value) pairs merged over the worker's environment (a tuple keeps the spec hashable).
    env: tuple[tuple[str, str], ...] = ()
    cwd: str | None = None
    #: Regular expressions; an output line matching one fails the attempt, even on exit 0.
    fail_on: tuple[str, ...] = ()
    success_codes: tuple[int, ...] = (0,)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ShellSpec:
        return cls(
            **{
                **data,
                "env": tuple((str(k), str(v)) for k, v in data.get("env") or ()),
                "fail_on": tuple(data.get("fail_on", ())),
                "success_codes": tuple(data.get("success_codes", (0,))),
            }
        )


@dataclass(frozen=True)
class StepSpec:
    name: str
    fn: str  # "module:qualname" of the callable, for display; workers find it via the flow
    upstream: tuple[str, ...] = ()
    kind: str = "task"
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    timeout_seconds: float | None = None
    queue: str | None = None
    priority: int | None = None
    trigger: str = "all_success"
    lineno: int | None = None
    doc: str = ""
    #: Dataset URIs this step reads and writes; recorded on success for lineage.
    reads: tuple[str, ...] = ()
    writes: tuple[str, ...] = ()
    #: The named pool whose slots this step holds while it runs, and how many (1..1000).
    #: ``slots`` is 1 whenever ``pool`` is None.
    pool: str | None = None
    slots: int = 1
    #: A named lock held while the step runs: "exclusive" (alone) or "shared" (beside other
    #: shared holders, never beside an exclusive one). ``lock_mode`` stays "exclusive" when
    #: ``lock`` is None.
    lock: str | None = None
    lock_mode: str = "exclusive"
    #: Kind "compensation": the step this one undoes. A task's ``compensate`` holds the
    #: name of its compensation step (in ``FlowSpec.compensations``), else None.
    compensates: str | None = None
    compensate: str | None = None
    #: Kind "approval": seconds to wait for a decision (None: for ever), and what happens then.
    approval_timeout_seconds: float | None = None
    on_timeout: str = "reject"
    #: The command of a shell step (kind "shell"); None for every other kind.
    shell: ShellSpec | None = None
    #: "module:qualname" of the step's success_when= check (workers take the callable from
    #: the flow's module); None when the step has none.
    success_when: str | None = None
    #: The callbacks the step defines (names from ``CALLBACK_KINDS``); they run on workers.
    callbacks: tuple[str, ...] = ()
    #: A map step: the upstream whose list result it maps over (one instance per element),
    #: and how many of its instances may be queued or running at once (None: no cap).
    over: str | None = None
    max_parallel: int | None = None
    #: The step's deadline as :meth:`flowkit.sla.Deadline.to_dict` gives it (None: none).
    deadline: dict[str, Any] | None = None
    #: Kind "sensor": its poke schedule and what it waits for, as
    #: :func:`flowkit.sensors.policy.sensor_options` gives it (None for every other kind).
    sensor: dict[str, Any] | None = None


#: Callback kinds, on a flow (run ended; on_retry: any step's retry) and on a step.
CALLBACK_KINDS = ("on_success", "on_failure", "on_retry")


def instance_name(step: str, index: int) -> str:
    """The name of element ``index``'s instance of map step ``step``: ``step[index]``. The
    compensation of a map step has one instance per instance it undoes, named as that
    instance's compensation: ``instance_name("notify:compensate", 3)`` is
    ``"notify[3]:compensate"``."""
    if step.endswith(COMPENSATION_SUFFIX):
        return compensation_name(f"{step[: -len(COMPENSATION_SUFFIX)]}[{index}]")
    return f"{step}[{index}]"


def split_instance(name: str) -> tuple[str, int | None]:
    """``"notify[3]"`` -> ``("notify", 3)``, ``"notify[3]:compensate"`` ->
    ``("notify:compensate", 3)``; a plain step name -> ``(name, None)``. Step names cannot
    contain "[" or ":" (see dsl), so these never clash."""
    if name.endswith(COMPENSATION_SUFFIX):
        undone, position = split_instance(name[: -len(COMPENSATION_SUFFIX)])
        return (compensation_name(undone), position) if position is not None else (name, None)
    if name.endswith("]"):
        base, sep, index = name[:-1].partition("[")
        if sep and index.isdigit():
            return base, int(index)
    return name, None


@dataclass(frozen=True)
class FlowSpec:
    name: str
    steps: tuple[StepSpec, ...]
    schedule: str | None = None
    #: Time zone, DST policy, catch-up, overlap and bounds (flowkit/schedules/options.py).
    schedule_options: dict[str, Any] | None = None
    owner: str | None = None
    tags: tuple[str, ...] = ()
    params: tuple[ParamSpec, ...] = ()
    description: str = ""
    path: str | None = None
    lineno: int | None = None
    version: str | None = None  # sha256 prefix of the defining module's source
    #: At most this many runs of the flow at once (None: no limit of its own).
    max_active_runs: int | None = None
    #: At most this many steps of the flow queued or running at once, over all its runs
    #: (Airflow's max_active_tasks; None: no limit of its own).
    max_active_steps: int | None = None
    #: Compensation steps (kind "compensation"), one per step with ``compensate=``. They are
    #: not in ``steps``: a run gets their rows only when it fails (see store/saga.py).
    compensations: tuple[StepSpec, ...] = ()
    #: The flow-level callbacks it defines (names from ``CALLBACK_KINDS``).
    callbacks: tuple[str, ...] = ()
    #: The flow's notifiers as data (see flowkit.notify.config).
    notify: tuple[dict[str, Any], ...] = ()
    #: The flow's deadline as :meth:`flowkit.sla.Deadline.to_dict` gives it (None: none).
    deadline: dict[str, Any] | None = None
    #: What starts a run besides a schedule or a user (flowkit.triggers): ``{"on": [{"kind":
    #: "flow"|"dataset", "source": ..., "states": [...]}], "mode": "all"|"any", "batch": bool}``.
    triggers: dict[str, Any] | None = None

    @property
    def timezone(self) -> str:
        """The flow's time zone: its schedule's (``Flow(timezone=...)``), UTC without one."""
        return str((self.schedule_options or {}).get("timezone") or "UTC")

    # -- lookups (cached: the scheduler asks for every step and upstream per evaluation) --
    @cached_property
    def _by_name(self) -> dict[str, StepSpec]:
        return {s.name: s for s in (*self.steps, *self.compensations)}

    def step(self, name: str) -> StepSpec:
        """The step or compensation step called ``name``; an instance name of a map step (``"notify[3]"``) gives
        the map step's spec under that name, so limits, queue and retries apply per instance.
        Its upstream omits ``over``: an instance gets its element as ``ctx.item``, not the list.
        An instance's compensation (``"notify[3]:compensate"``) gives the map step's
        compensation under that name, undoing that instance."""
        found = self._by_name.get(name)
        if found is not None:
            return found
        base, index = split_instance(name)
        step = self._by_name.get(base) if index is not None else None
        if step is not None and index is not None and step.kind == "compensation" and step.compensates:
            # an instance's compensation: it undoes that instance (store/saga.py)
            return replace(step, name=name, upstream=(), compensates=instance_name(step.compensates, index))
        if step is None or step.kind != "map":
            raise KeyError(name)
        return replace(step, name=name, upstream=tuple(u for u in step.upstream if u != step.over))

    @property
    def step_names(self) -> list[str]:
        """The flow's own steps (not its compensation steps), in definition order."""
        return [s.name for s in self.steps]

    @cached_property
    def kinds(self) -> frozenset[str]:
        """The step kinds this flow uses (the engine skips what a flow does not need)."""
        return frozenset(s.kind for s in self.steps) | ({"compensation"} if self.compensations else set())

    @cached_property
    def order(self) -> tuple[str, ...]:
        """Step names with every step after its upstreams."""
        return tuple(topo_order({s.name: s.upstream for s in self.steps}))

    @cached_property
    def position(self) -> dict[str, int]:
        """Each step's index in :attr:`order`, then the compensation steps' (ready steps are
        started in that order)."""
        names = (*self.order, *(c.name for c in self.compensations))
        return {name: i for i, name in enumerate(names)}

    @cached_property
    def _downstream(self) -> dict[str, tuple[str, ...]]:
        every = (*self.steps, *self.compensations)
        out: dict[str, list[str]] = {s.name: [] for s in every}
        for s in every:
            for u in s.upstream:
                out[u].append(s.name)
        return {name: tuple(down) for name, down in out.items()}

    def downstream_of(self, name: str) -> tuple[str, ...]:
        """The steps that list ``name`` among their upstreams, in definition order.

        Built once per spec; each call is a dict lookup. Raises KeyError for an unknown step.
        """
        return self._downstream[name]

    def downstream(self) -> dict[str, list[str]]:
        """Every step's downstream steps, as a new dict (prefer :meth:`downstream_of` per step)."""
        return {name: list(down) for name, down in self._downstream.items()}

    def max_timeout_seconds(self) -> float | None:
        timeouts = [s.timeout_seconds for s in self.steps if s.timeout_seconds]
        return max(timeouts) if timeouts else None

    # -- JSON -----------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FlowSpec:
        """The inverse of :meth:`to_dict`. Keys a stored spec lacks (it was written before
        the field existed) take the field's default."""

        def step(s: dict[str, Any]) -> StepSpec:
            return StepSpec(
                **{
                    **s,
                    "upstream": tuple(s.get("upstream", ())),
                    "reads": tuple(s.get("reads", ())),
                    "writes": tuple(s.get("writes", ())),
                    "callbacks": tuple(s.get("callbacks", ())),
                    "retry": RetryPolicy(**s.get("retry", {})),
                    "shell": ShellSpec.from_dict(s["shell"]) if s.get("shell") else None,
                }
            )

        params = tuple(ParamSpec(**p) for p in data.get("params", ()))
        return cls(
            **{
                **data,
                "steps": tuple(step(s) for s in data["steps"]),
                "compensations": tuple(step(s) for s in data.get("compensations", ())),
                "params": params,
                "tags": tuple(data.get("tags", ())),
                "callbacks": tuple(data.get("callbacks", ())),
                "notify": tuple(data.get("notify", ())),
            }
        )

    @classmethod
    def from_json(cls, text: str) -> FlowSpec:
        return cls.from_dict(json.loads(text))


def _coerce(param: ParamSpec, value: Any, flow: str, *, max_depth: int, max_bytes: int) -> Any:
    from .errors import InvalidParamError
    from .jsonsafe import find_non_finite, nesting_depth, text_nesting_depth

    given = value  # as the user wrote it
    # The shape first: parsing or walking a value nested ~1,000 deep raises RecursionError.
    if isinstance(value, str):
        size = len(value.encode("utf-8", errors="replace"))
        depth = text_nesting_depth(value) if param.type in ("list", "dict") and size <= max_bytes else 0
    else:
        depth, size = nesting_depth(value, stop_after=max_depth), None
    _check_shape(flow, f'param "{param.name}"', depth=depth, size=size, max_depth=max_depth, max_bytes=max_bytes)

    def bad(why: str, *, as_given: bool = False) -> InvalidParamError:
        shown = "***" if param.secret else repr(given if as_given else value)
        return InvalidParamError(
            f'flow "{flow}" param "{param.name}": {shown} {why}; pass {_article(param.type)}, '
            f"e.g. -p {param.name}={_example(param.type)}",
            flow=flow,
        )

    if isinstance(value, str) and param.type != "str":
        if param.type == "bool":
            lowered = value.strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise bad("is not a boolean")
        if param.type in ("int", "float"):
            try:
                number = int(value) if param.type == "int" else float(value)
            except ValueError:
                raise bad(f"is not a{'n' if param.type == 'int' else ''} {param.type}") from None
            if find_non_finite(number) is not None:  # JSON has no NaN or Infinity
                raise bad("is not a finite number")
            return number
        try:
            value = json.loads(value)
        except ValueError:
            raise bad("is not JSON") from None
    expected: dict[str, tuple[type, ...]] = {
        "str": (str,),
        "int": (int,),
        "float": (int, float),
        "bool": (bool,),
        "list": (list,),
        "dict": (dict,),
    }
    ok = isinstance(value, expected[param.type]) and not (param.type in ("int", "float") and isinstance(value, bool))
    if not ok:
        raise bad(f"is a {type(value).__name__}")
    where = find_non_finite(value)
    if where is not None:
        raise bad("is not a finite number" if where == "$" else f"holds NaN or Infinity at {where}", as_given=True)
    return float(value) if param.type == "float" else value


def _article(type_name: str) -> str:
    return f"an {type_name}" if type_name == "int" else f"a {type_name}"


def _example(type_name: str) -> str:
    return {"str": "text", "int": "42", "float": "0.5", "bool": "true", "list": "'[1,2]'", "dict": "'{\"k\":1}'"}[
        type_name
    ]


def _check_shape(flow: str, what: str, *, depth: int, size: int | None, max_depth: int, max_bytes: int) -> None:
    from .errors import InvalidParamError
    from .jsonsafe import shape_problem

    problem = shape_problem(depth=depth, size=size, max_depth=max_depth, max_bytes=max_bytes)
    if problem is None:
        return
    if problem.startswith("nested"):
        fix = "(FLOWKIT_MAX_JSON_DEPTH): flatten it, or pass the path or URI of the data instead"
    else:
        fix = (
            "(FLOWKIT_MAX_PARAMS_BYTES): write the data elsewhere (a file, an object store) "
            "and pass its path or URI instead"
        )
    raise InvalidParamError(f'flow "{flow}" {what}: {problem} {fix}', flow=flow)


def resolve_params(
    flow: FlowSpec, given: dict[str, Any], *, max_depth: int | None = None, max_bytes: int | None = None
) -> dict[str, Any]:
    """Check and coerce the params a run was triggered with against the flow's declared ones.

    Strings (from the CLI) are parsed to the declared type; defaults fill the rest. A given
    value nested deeper than ``max_depth`` levels, or params taking more than ``max_bytes``
    of JSON (each, and all together), are refused (defaults: ``jsonsafe.MAX_DEPTH`` and
    ``MAX_PARAMS_BYTES``; 0 turns a bound off).
    """
    import difflib

    from . import jsonsafe
    from .errors import InvalidParamError

    max_depth = jsonsafe.MAX_DEPTH if max_depth is None else max_depth
    max_bytes = jsonsafe.MAX_PARAMS_BYTES if max_bytes is None else max_bytes

    declared = {p.name: p for p in flow.params}
    for key in given:
        if key not in declared:
            close = difflib.get_close_matches(key, list(declared), n=1)
            hint = f' Did you mean "{close[0]}"?' if close else ""
            known = ", ".join(declared) or "none"
            raise InvalidParamError(
                f'flow "{flow.name}" has no param "{key}".{hint} Its params are: {known}',
                flow=flow.name,
            )
    out: dict[str, Any] = {}
    for name, p in declared.items():
        if name in given:
            out[name] = _coerce(p, given[name], flow.name, max_depth=max_depth, max_bytes=max_bytes)
        elif p.required:
            raise InvalidParamError(
                f'flow "{flow.name}" needs param "{name}" ({p.type}); pass -p {name}={_example(p.type)}',
                flow=flow.name,
            )
        else:
            out[name] = p.default
    if given and max_bytes:
        size = len(jsonsafe.dumps(out, default=str).encode())
        _check_shape(flow.name, "params", depth=0, size=size, max_depth=max_depth, max_bytes=max_bytes)
    return out
