"""Pure DAG algorithms: topological order, cycle paths, and the trigger-rule decision.

Nothing here does I/O; the scheduler and the DSL both lean on it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from enum import StrEnum

from .states import STEP_BAD, StepState

#: Trigger rules: when a step runs, given how its upstreams ended. This is the one list of
#: names; :func:`decide_counts` is the one implementation. Each upstream edge counts as
#: succeeded, failed (failed, upstream_failed or cancelled) or skipped (skipped, or a branch
#: that chose another path). A step with no upstreams runs whatever its rule. Only
#: one_success and one_failed decide before every upstream is done; the others wait.
#: "fails" below means the step becomes upstream_failed; "skips" means skipped.
TRIGGER_RULES = (
    # every upstream succeeded. Once all are done: any failed -> fails; else any skipped
    # -> skips (checked in that order, so a failure is never hidden by a skip).
    "all_success",
    # no upstream failed and at least one succeeded (a join after a branch). Any failed ->
    # fails; all skipped -> skips. This is flowkit's rule from before the others existed,
    # kept as it was: it is the same as none_failed_min_one_success (Airflow's none_failed
    # would also run when every upstream was skipped).
    "none_failed",
    # runs once every upstream is done, whatever happened (cleanup, notify). Never fails
    # nor skips.
    "all_done",
    # every upstream failed (an error handler for a whole group). Once all are done: any
    # succeeded or skipped -> skips.
    "all_failed",
    # runs as soon as one upstream succeeded, without waiting for the others. If all are
    # done and none succeeded: all skipped -> skips, otherwise (some failed) -> fails.
    "one_success",
    # runs as soon as one upstream failed, without waiting for the others (alerting).
    # If all are done and none failed -> skips.
    "one_failed",
    # the same as none_failed, under the name Airflow gives this rule.
    "none_failed_min_one_success",
    # runs once all are done and none was skipped, even if some failed. Any skipped ->
    # skips.
    "none_skipped",
    # runs once every upstream is done, whatever happened: the same as all_done. Unlike
    # Airflow's "always" it does wait for its upstreams, so it never runs beside them.
    "always",
)


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
                cycle = stack[stack.index(up) :] + [up]
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


_KNOWN_RULES = frozenset(TRIGGER_RULES)


def decide_counts(trigger: str, total: int, succeeded: int, failed: int, skipped: int) -> Decision:
    """What a pending step should do, given how many of its ``total`` upstream edges ended how.

    ``failed`` counts upstreams that failed, were upstream_failed or cancelled; ``skipped``
    counts skipped upstreams and branches that chose another path; the rest are still
    running. The rules are described next to ``spec.TRIGGER_RULES``. one_success and
    one_failed decide as soon as they can; every other rule (and the negative outcome of
    those two) waits until all upstreams are done. A step with no upstreams runs.

    Raises ValueError for an unknown rule or counts that do not add up.
    """
    if trigger not in _KNOWN_RULES:
        raise ValueError(f"unknown trigger rule {trigger!r}")
    if min(total, succeeded, failed, skipped) < 0 or succeeded + failed + skipped > total:
        raise ValueError(
            f"upstream counts do not add up: total={total} succeeded={succeeded} failed={failed} skipped={skipped}"
        )
    if trigger == "one_success" and succeeded:
        return Decision.RUN
    if trigger == "one_failed" and failed:
        return Decision.RUN
    if succeeded + failed + skipped < total:
        return Decision.WAIT
    if total == 0 or trigger in ("all_done", "always"):
        return Decision.RUN
    if trigger == "all_success":
        return Decision.UPSTREAM_FAILED if failed else Decision.SKIP if skipped else Decision.RUN
    if trigger in ("none_failed", "none_failed_min_one_success"):
        return Decision.UPSTREAM_FAILED if failed else Decision.RUN if succeeded else Decision.SKIP
    if trigger == "all_failed":
        return Decision.RUN if failed == total else Decision.SKIP
    if trigger == "one_success":  # done, and none succeeded
        return Decision.SKIP if skipped == total else Decision.UPSTREAM_FAILED
    if trigger == "one_failed":  # done, and none failed
        return Decision.SKIP
    if trigger == "none_skipped":
        return Decision.SKIP if skipped else Decision.RUN
    raise AssertionError(f"trigger rule {trigger!r} is listed in spec.TRIGGER_RULES but not decided here")


def decide(
    trigger: str,
    upstream_states: Sequence[StepState],
    followed: Sequence[bool] | None = None,
) -> Decision:
    """What a pending step should do given its upstreams' states (counts them for :func:`decide_counts`).

    ``followed[i]`` is False when upstream ``i`` is a branch that chose another path:
    that edge then counts as skipped even though the branch step itself succeeded.
    """
    if followed is None:
        followed = [True] * len(upstream_states)
    succeeded = failed = skipped = 0
    for state, chosen in zip(upstream_states, followed, strict=True):
        if state == StepState.SUCCESS:
            if chosen:
                succeeded += 1
            else:
                skipped += 1
        elif state == StepState.SKIPPED:
            skipped += 1
        elif state in STEP_BAD:
            failed += 1
    return decide_counts(trigger, len(upstream_states), succeeded, failed, skipped)
