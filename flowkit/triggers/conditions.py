"""The trigger conditions users write, their checks, and their form in a flow's spec.

``FlowDone("orders")``: a run of flow ``orders`` ended in one of ``states`` (default
``("success",)``). ``Dataset("s3://lake/orders")``: a step that declares the URI in
``writes=`` succeeded. ``Flow(trigger_on=[...], trigger_mode="all"|"any", trigger_batch=False)``
combines them: with ``all`` (the default) a run starts once every condition has an event
not yet consumed, with ``any`` on each event. One run per event (or per complete set, with
``all``) unless ``trigger_batch=True``, which folds every pending event into one run.

A ``FlowDone`` naming a flow that is not loaded is not an error: flows load file by file
and may appear later; the loader logs a warning (:func:`unknown_sources`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..dsl_checks import NAME_RE, caller_location
from ..errors import DefinitionError

#: How several conditions combine: every one updated since the last triggered run, or any one.
TRIGGER_MODES = ("all", "any")
#: The run end states a ``FlowDone`` may wait for.
RUN_END_STATES = ("success", "failed", "cancelled")


@dataclass(frozen=True)
class FlowDone:
    """A run of flow ``flow`` ended in one of ``states``.

    >>> Flow("report", trigger_on=[FlowDone("orders", states=("success", "failed"))])
    """

    flow: str
    states: tuple[str, ...] = ("success",)

    def __post_init__(self) -> None:
        if isinstance(self.states, str):  # FlowDone("x", states="failed"): one state
            object.__setattr__(self, "states", (self.states,))
        problem = self._problem()
        if problem:
            path, lineno = caller_location(3)
            raise DefinitionError(f"{self!r}: {problem}", path=path, lineno=lineno)

    def _problem(self) -> str | None:
        if not isinstance(self.flow, str) or not NAME_RE.match(self.flow):
            return f"flow {self.flow!r} is not a flow name; give the name of the flow to wait for"
        states = self.states
        if not isinstance(states, (tuple, list)) or not states:
            return f"states= takes one or more of {', '.join(RUN_END_STATES)}"
        bad = [s for s in states if s not in RUN_END_STATES]
        if bad:
            return f"states= holds {bad[0]!r}, which is not a run end state; use {', '.join(RUN_END_STATES)}"
        object.__setattr__(self, "states", tuple(dict.fromkeys(states)))
        return None

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "flow", "source": self.flow, "states": list(self.states)}


@dataclass(frozen=True)
class Dataset:
    """A step that declares ``uri`` in ``writes=`` succeeded.

    >>> Flow("report", trigger_on=[Dataset("s3://lake/orders")])
    """

    uri: str

    def __post_init__(self) -> None:
        if not isinstance(self.uri, str) or "://" not in self.uri or len(self.uri) > 1000:
            path, lineno = caller_location(3)
            raise DefinitionError(
                f'{self!r}: give a dataset URI like "s3://bucket/key" or "file:///data/orders.csv" '
                "(at most 1000 characters), as the writing step declares it in writes=",
                path=path,
                lineno=lineno,
            )

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "dataset", "source": self.uri, "states": []}


def check_triggers(
    flow: str, trigger_on: Any, mode: Any, batch: Any, *, has_required_params: bool, where: dict[str, Any]
) -> dict[str, Any] | None:
    """The DSL's check of ``trigger_on=``/``trigger_mode=``/``trigger_batch=``, as spec JSON."""
    who = f'flow "{flow}"'
    if trigger_on is None or trigger_on == [] or trigger_on == ():
        if mode is not None or batch is not None:
            raise DefinitionError(
                f"{who}: trigger_mode=/trigger_batch= need trigger_on=; add trigger_on=[FlowDone(...)] "
                "or [Dataset(...)], or remove them",
                **where,
            )
        return None
    items = [trigger_on] if isinstance(trigger_on, (FlowDone, Dataset)) else trigger_on
    if isinstance(items, (str, bytes)) or not isinstance(items, Iterable):
        raise DefinitionError(
            f'{who}: trigger_on={trigger_on!r} must list FlowDone("flow") or Dataset("uri") conditions',
            **where,
        )
    conditions = [_condition(c, who, where) for c in items]
    seen: set[tuple[str, str]] = set()
    for c in conditions:
        key = (c["kind"], c["source"])
        if key in seen:
            raise DefinitionError(f"{who}: trigger_on= names {c['kind']} {c['source']!r} twice; keep one", **where)
        seen.add(key)
        if c["kind"] == "flow" and c["source"] == flow:
            raise DefinitionError(
                f"{who}: trigger_on= holds FlowDone({flow!r}): the flow would start itself after every "
                "run, forever; remove it",
                **where,
            )
    if mode is None:
        mode = "all"
    if mode not in TRIGGER_MODES:
        raise DefinitionError(
            f'{who}: trigger_mode={mode!r} is not a mode; use "all" (every condition has a new event, '
            'the default) or "any" (each event)',
            **where,
        )
    if batch is None:
        batch = False
    if not isinstance(batch, bool):
        raise DefinitionError(
            f"{who}: trigger_batch={batch!r} must be True (one run takes every pending event) or False "
            "(one run per event, the default)",
            **where,
        )
    if has_required_params:
        raise DefinitionError(
            f"{who}: a triggered run gets no params, so with trigger_on= every param needs a default; "
            "give the required params a default",
            **where,
        )
    return {"on": conditions, "mode": mode, "batch": batch}


def _condition(value: Any, who: str, where: dict[str, Any]) -> dict[str, Any]:
    if isinstance(value, (FlowDone, Dataset)):
        return value.to_dict()
    hint = ""
    if isinstance(value, str):
        hint = f" (FlowDone({value!r}) for a flow, Dataset({value!r}) for a dataset URI)"
    raise DefinitionError(
        f'{who}: trigger_on= holds {value!r}, which is not FlowDone("flow") or Dataset("uri"){hint}',
        **where,
    )


def unknown_sources(specs: Iterable[Any], known_flows: Iterable[str]) -> list[str]:
    """Warnings for ``FlowDone`` conditions naming no loaded flow (not errors: it may load later)."""
    known = set(known_flows)
    out = []
    for spec in specs:
        for c in (spec.triggers or {}).get("on", ()):
            if c["kind"] == "flow" and c["source"] not in known:
                out.append(
                    f'flow "{spec.name}": trigger_on FlowDone("{c["source"]}") names no loaded flow; '
                    f'runs of "{c["source"]}" will trigger it once that flow exists'
                )
    return out
