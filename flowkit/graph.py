"""Pure DAG algorithms: topological order, cycle paths, and the trigger-rule decision.

Nothing here does I/O; the scheduler and the DSL both lean on it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from enum import StrEnum

from .states import STEP_BAD, StepState


def find_cycle(edges: Mapping[str, Sequence[str]]) -> list[str] | None:
    """Return one cycle as a path ``[a, b, ..., a]`` in ``edges`` (node -> upstreams), or None.

    The path reads in execution order: each node runs after the one before it.
    """
    white, grey, black = 0, 1, 2
    colour = dict.fromkeys(edges, white)
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        colour[node] = grey
        stack.append(node)
        for up in edges.get(node, ()):
            if up not in colour:
                continue
            if colour[up] == grey:
                cycle = stack[stack.index(up):] + [up]
                # stack runs downstream->upstream; flip so the path reads in run order
                return list(reversed(cycle))
            if colour[up] == white:
                found = visit(up)
                if found:
                    return found
        stack.pop()
        colour[node] = black
        return None

    for node in sorted(edges):
        if colour[node] == white:
            found = visit(node)
            if found:
                return found
    return None


def topo_order(edges: Mapping[str, Sequence[str]]) -> list[str]:
    """Nodes in an order where every node follows its upstreams; ties keep insertion order."""
    indeg = {n: 0 for n in edges}
    down: dict[str, list[str]] = {n: [] for n in edges}
    for n, ups in edges.items():
        for u in ups:
            if u in indeg:
                indeg[n] += 1
                down[u].append(n)
    ready = [n for n in edges if indeg[n] == 0]
    out: list[str] = []
    while ready:
        n = ready.pop(0)
        out.append(n)
        for d in down[n]:
            indeg[d] -= 1
            if indeg[d] == 0:
                ready.append(d)
    if len(out) != len(indeg):
        raise ValueError("graph has a cycle")
    return out


class Decision(StrEnum):
    WAIT = "wait"
    RUN = "run"
    SKIP = "skip"
    UPSTREAM_FAILED = "upstream_failed"


def decide_counts(trigger: str, total: int, succeeded: int, failed: int, skipped: int) -> Decision:
    """What a pending step should do, from counts of its upstreams' outcomes so far.

    ``failed`` counts failed, upstream_failed and cancelled upstreams; ``skipped`` includes a
    branch that did not choose this step. The engine calls this whenever the counts change.
    """
    if total == 0:
        return Decision.RUN
    if succeeded + failed + skipped < total:
        return Decision.WAIT
    if trigger == "all_done":
        return Decision.RUN
    if failed:
        return Decision.UPSTREAM_FAILED
    if trigger == "all_success":
        return Decision.SKIP if skipped else Decision.RUN
    if trigger == "none_failed":
        return Decision.RUN if succeeded else Decision.SKIP
    raise ValueError(f"unknown trigger rule {trigger!r}")


def decide(
    trigger: str,
    upstream_states: Sequence[StepState],
    followed: Sequence[bool] | None = None,
) -> Decision:
    """What a pending step should do given its upstreams' states.

    ``followed[i]`` is False when upstream ``i`` is a branch that chose another path:
    that edge then counts as skipped even though the branch step itself succeeded.
    """
    if any(not s.terminal for s in upstream_states):
        return Decision.WAIT
    if followed is None:
        followed = [True] * len(upstream_states)
    effective = [
        StepState.SKIPPED if (s == StepState.SUCCESS and not f) else s
        for s, f in zip(upstream_states, followed, strict=True)
    ]
    if not effective:
        return Decision.RUN
    if trigger == "all_done":
        return Decision.RUN
    if any(s in STEP_BAD for s in effective):
        return Decision.UPSTREAM_FAILED
    if trigger == "all_success":
        return Decision.SKIP if any(s == StepState.SKIPPED for s in effective) else Decision.RUN
    if trigger == "none_failed":
        return Decision.RUN if any(s == StepState.SUCCESS for s in effective) else Decision.SKIP
    raise ValueError(f"unknown trigger rule {trigger!r}")
