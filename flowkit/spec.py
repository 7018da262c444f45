"""Frozen, JSON-serialisable descriptions of flows: what crosses process boundaries.

The loader turns a user's ``Flow`` into a :class:`FlowSpec`; the store keeps it as JSON;
the scheduler and the renderer read only specs, never user code.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass, field
from functools import cached_property
from typing import Any

#: Step kinds. ``branch`` steps return the name(s) of the downstream steps to follow.
STEP_KINDS = ("task", "branch")

#: Trigger rules: when a step with terminal upstreams runs.
#: all_success: every upstream succeeded (a skipped upstream skips it, a failed one fails it).
#: none_failed: no upstream failed and at least one succeeded (joins after a branch).
#: all_done: runs once every upstream is terminal, whatever happened (cleanup, notify).
TRIGGER_RULES = ("all_success", "none_failed", "all_done")

PARAM_TYPES = ("str", "int", "float", "bool", "list", "dict")


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


@dataclass(frozen=True)
class FlowSpec:
    name: str
    steps: tuple[StepSpec, ...]
    schedule: str | None = None
    owner: str | None = None
    tags: tuple[str, ...] = ()
    params: tuple[ParamSpec, ...] = ()
    description: str = ""
    path: str | None = None
    lineno: int | None = None
    version: str | None = None  # sha256 prefix of the defining module's source

    # -- lookups (cached: the scheduler asks for every step and upstream per evaluation) --
    @cached_property
    def _by_name(self) -> dict[str, StepSpec]:
        return {s.name: s for s in self.steps}

    def step(self, name: str) -> StepSpec:
        return self._by_name[name]

    @property
    def step_names(self) -> list[str]:
        return list(self._by_name)

    @cached_property
    def order(self) -> tuple[str, ...]:
        """Step names with every step after its upstreams."""
        from .graph import topo_order

        return tuple(topo_order({s.name: s.upstream for s in self.steps}))

    def downstream(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {s.name: [] for s in self.steps}
        for s in self.steps:
            for u in s.upstream:
                out[u].append(s.name)
        return out

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
        steps = tuple(
            StepSpec(
                **{
                    **s,
                    "upstream": tuple(s.get("upstream", ())),
                    "reads": tuple(s.get("reads", ())),
                    "writes": tuple(s.get("writes", ())),
                    "retry": RetryPolicy(**s.get("retry", {})),
                }
            )
            for s in data["steps"]
        )
        params = tuple(ParamSpec(**p) for p in data.get("params", ()))
        return cls(
            **{
                **data,
                "steps": steps,
                "params": params,
                "tags": tuple(data.get("tags", ())),
            }
        )

    @classmethod
    def from_json(cls, text: str) -> FlowSpec:
        return cls.from_dict(json.loads(text))


def _coerce(param: ParamSpec, value: Any, flow: str) -> Any:
    from .errors import InvalidParamError
    from .jsonsafe import find_non_finite

    given = value  # as the user wrote it

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
        "str": (str,), "int": (int,), "float": (int, float), "bool": (bool,),
        "list": (list,), "dict": (dict,),
    }
    ok = isinstance(value, expected[param.type]) and not (
        param.type in ("int", "float") and isinstance(value, bool)
    )
    if not ok:
        raise bad(f"is a {type(value).__name__}")
    where = find_non_finite(value)
    if where is not None:
        raise bad("is not a finite number" if where == "$" else f"holds NaN or Infinity at {where}", as_given=True)
    return float(value) if param.type == "float" else value


def _article(type_name: str) -> str:
    return f"an {type_name}" if type_name == "int" else f"a {type_name}"


def _example(type_name: str) -> str:
    return {"str": "text", "int": "42", "float": "0.5", "bool": "true",
            "list": "'[1,2]'", "dict": "'{\"k\":1}'"}[type_name]


def resolve_params(flow: FlowSpec, given: dict[str, Any]) -> dict[str, Any]:
    """Check and coerce the params a run was triggered with against the flow's declared ones.

    Strings (from the CLI) are parsed to the declared type; defaults fill the rest.
    """
    import difflib

    from .errors import InvalidParamError

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
            out[name] = _coerce(p, given[name], flow.name)
        elif p.required:
            raise InvalidParamError(
                f'flow "{flow.name}" needs param "{name}" ({p.type}); pass -p {name}={_example(p.type)}',
                flow=flow.name,
            )
        else:
            out[name] = p.default
    return out
