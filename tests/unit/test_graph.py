"""Pure DAG algorithms: cycle paths, topological order and the trigger-rule decision."""

from __future__ import annotations

import pytest

from flowkit.graph import Decision, decide, find_cycle, topo_order
from flowkit.states import StepState

S = StepState
DIAMOND = {"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"]}


def _is_closed_path(edges, cycle):
    """``cycle`` starts and ends on the same node and each node runs after the one before it."""
    assert cycle[0] == cycle[-1]
    assert len(cycle) >= 2
    return all(prev in edges[node] for prev, node in zip(cycle, cycle[1:], strict=False))


# -- find_cycle --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "edges",
    [
        {},
        {"a": []},
        DIAMOND,
        {"x": ["missing"], "y": ["x"]},  # upstreams outside the graph are ignored
        {"a": [], "b": [], "c": ["a", "b"]},
    ],
)
def test_find_cycle_none_on_a_dag(edges):
    assert find_cycle(edges) is None


def test_find_cycle_three_nodes_in_run_order():
    edges = {"a": ["c"], "b": ["a"], "c": ["b"]}
    cycle = find_cycle(edges)
    assert cycle == ["a", "b", "c", "a"]
    assert _is_closed_path(edges, cycle)


def test_find_cycle_self_loop():
    assert find_cycle({"a": ["a"]}) == ["a", "a"]


@pytest.mark.parametrize(
    "edges",
    [
        {"start": [], "x": ["start", "z"], "y": ["x"], "z": ["y"], "end": ["z"]},
        {"a": [], "b": ["a", "d"], "c": ["b"], "d": ["c"], "e": ["d"]},
        {"p": ["q"], "q": ["p"], "r": []},
    ],
)
def test_find_cycle_returns_a_closed_path_of_real_edges(edges):
    cycle = find_cycle(edges)
    assert cycle is not None
    assert _is_closed_path(edges, cycle)
    assert len(set(cycle)) == len(cycle) - 1  # a simple cycle: no node twice except the ends


# -- topo_order --------------------------------------------------------------------------------


def _respects(edges, order):
    pos = {n: i for i, n in enumerate(order)}
    return all(pos[u] < pos[n] for n, ups in edges.items() for u in ups if u in pos)


@pytest.mark.parametrize(
    "edges",
    [
        DIAMOND,
        {"d": ["b", "c"], "c": ["a"], "b": ["a"], "a": []},
        {"load": ["transform"], "transform": ["extract"], "extract": [], "notify": ["load", "extract"]},
    ],
)
def test_topo_order_respects_dependencies(edges):
    order = topo_order(edges)
    assert sorted(order) == sorted(edges)
    assert _respects(edges, order)


def test_topo_order_keeps_insertion_order_for_ties():
    assert topo_order({"z": [], "y": [], "x": ["z"], "w": []}) == ["z", "y", "w", "x"]
    assert topo_order(DIAMOND) == ["a", "b", "c", "d"]


def test_topo_order_ignores_unknown_upstreams():
    assert topo_order({"b": ["ghost"], "a": []}) == ["b", "a"]


def test_topo_order_refuses_a_cycle():
    with pytest.raises(ValueError, match="cycle"):
        topo_order({"a": ["b"], "b": ["a"], "c": []})


# -- decide -------------------------------------------------------------------------------------


@pytest.mark.parametrize("trigger", ["all_success", "none_failed", "all_done"])
def test_no_upstreams_runs(trigger):
    assert decide(trigger, []) is Decision.RUN


@pytest.mark.parametrize("trigger", ["all_success", "none_failed", "all_done"])
@pytest.mark.parametrize(
    "waiting",
    [S.PENDING, S.SCHEDULED, S.QUEUED, S.RUNNING, S.UP_FOR_RETRY, S.AWAITING_APPROVAL],
)
def test_waits_while_an_upstream_is_not_terminal(trigger, waiting):
    assert decide(trigger, [S.SUCCESS, waiting]) is Decision.WAIT
    # even when another upstream already failed: nothing is decided before all are terminal
    assert decide(trigger, [S.FAILED, waiting]) is Decision.WAIT


@pytest.mark.parametrize(
    ("upstreams", "expected"),
    [
        ([S.SUCCESS], Decision.RUN),
        ([S.SUCCESS, S.SUCCESS], Decision.RUN),
        ([S.SUCCESS, S.SKIPPED], Decision.SKIP),
        ([S.SKIPPED], Decision.SKIP),
        ([S.SUCCESS, S.FAILED], Decision.UPSTREAM_FAILED),
        ([S.SUCCESS, S.UPSTREAM_FAILED], Decision.UPSTREAM_FAILED),
        ([S.CANCELLED], Decision.UPSTREAM_FAILED),
        ([S.SKIPPED, S.FAILED], Decision.UPSTREAM_FAILED),
    ],
)
def test_all_success(upstreams, expected):
    assert decide("all_success", upstreams) is expected


@pytest.mark.parametrize(
    ("upstreams", "expected"),
    [
        ([S.SUCCESS], Decision.RUN),
        ([S.SUCCESS, S.SKIPPED], Decision.RUN),
        ([S.SKIPPED, S.SKIPPED], Decision.SKIP),
        ([S.SUCCESS, S.FAILED], Decision.UPSTREAM_FAILED),
        ([S.SKIPPED, S.UPSTREAM_FAILED], Decision.UPSTREAM_FAILED),
        ([S.SUCCESS, S.CANCELLED], Decision.UPSTREAM_FAILED),
    ],
)
def test_none_failed(upstreams, expected):
    assert decide("none_failed", upstreams) is expected


@pytest.mark.parametrize(
    "upstreams",
    [[S.SUCCESS], [S.FAILED], [S.SKIPPED, S.SKIPPED], [S.UPSTREAM_FAILED, S.SUCCESS], [S.CANCELLED]],
)
def test_all_done_runs_once_everything_is_terminal(upstreams):
    assert decide("all_done", upstreams) is Decision.RUN


def test_branch_edge_not_followed_counts_as_skipped():
    # the branch step succeeded but chose another path
    assert decide("all_success", [S.SUCCESS], followed=[False]) is Decision.SKIP
    assert decide("all_success", [S.SUCCESS], followed=[True]) is Decision.RUN
    assert decide("none_failed", [S.SUCCESS], followed=[False]) is Decision.SKIP
    assert decide("all_done", [S.SUCCESS], followed=[False]) is Decision.RUN


def test_join_after_a_branch_runs_with_none_failed():
    # join <- [branch (not followed), chosen path (succeeded)]
    assert decide("none_failed", [S.SUCCESS, S.SUCCESS], followed=[False, True]) is Decision.RUN
    assert decide("all_success", [S.SUCCESS, S.SUCCESS], followed=[False, True]) is Decision.SKIP
    # an unfollowed edge does not hide a failure elsewhere
    assert decide("none_failed", [S.SUCCESS, S.FAILED], followed=[False, True]) is Decision.UPSTREAM_FAILED


def test_followed_only_affects_successful_upstreams():
    assert decide("all_success", [S.FAILED], followed=[False]) is Decision.UPSTREAM_FAILED


def test_unknown_trigger_rule():
    with pytest.raises(ValueError, match="unknown trigger rule 'sometimes'"):
        decide("sometimes", [S.SUCCESS])
