"""Pure DAG algorithms: cycle paths, topological order and the trigger-rule decision."""

from __future__ import annotations

import pytest

from flowkit.graph import Decision, decide, decide_counts, find_cycle, topo_order
from flowkit.spec import TRIGGER_RULES
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


# -- decide_counts: every rule against every mix of outcomes --------------------------------------

#: Upstream mixes as (succeeded, failed, skipped, still running).
MIXES = {
    "all ok": (2, 0, 0, 0),
    "all failed": (0, 2, 0, 0),
    "all skipped": (0, 0, 2, 0),
    "ok+failed": (1, 1, 0, 0),
    "ok+skipped": (1, 0, 1, 0),
    "failed+skipped": (0, 1, 1, 0),
    "ok+failed+skipped": (1, 1, 1, 0),
    "ok, 1 running": (1, 0, 0, 1),
    "failed, 1 running": (0, 1, 0, 1),
    "skipped, 1 running": (0, 0, 1, 1),
    "all running": (0, 0, 0, 2),
    "no upstreams": (0, 0, 0, 0),
}
R, W, K, F = Decision.RUN, Decision.WAIT, Decision.SKIP, Decision.UPSTREAM_FAILED
# columns follow MIXES, in order
TABLE = {
    "all_success": [R, F, K, F, K, F, F, W, W, W, W, R],
    "none_failed": [R, F, K, F, R, F, F, W, W, W, W, R],
    "none_failed_min_one_success": [R, F, K, F, R, F, F, W, W, W, W, R],
    "all_done": [R, R, R, R, R, R, R, W, W, W, W, R],
    "always": [R, R, R, R, R, R, R, W, W, W, W, R],
    "all_failed": [K, R, K, K, K, K, K, W, W, W, W, R],
    "one_success": [R, F, K, R, R, F, R, R, W, W, W, R],
    "one_failed": [K, R, K, R, K, R, R, W, R, W, W, R],
    "none_skipped": [R, R, K, R, K, K, K, W, W, W, W, R],
}


def test_the_table_covers_every_rule():
    assert sorted(TABLE) == sorted(TRIGGER_RULES)
    assert TRIGGER_RULES[:3] == ("all_success", "none_failed", "all_done")  # the original order


def _table_cases() -> list[tuple[str, str, tuple[int, int, int, int], Decision]]:
    """(rule, mix, counts, expected) for every cell of TABLE."""
    return [
        (rule, mix, counts, expected)
        for rule, row in TABLE.items()
        for (mix, counts), expected in zip(MIXES.items(), row, strict=True)
    ]


def test_decide_counts_table():
    # one test over the whole table (108 cells, microseconds each); a failure names every wrong cell
    wrong = []
    for rule, mix, counts, expected in _table_cases():
        succeeded, failed, skipped, running = counts
        total = succeeded + failed + skipped + running
        got = decide_counts(rule, total, succeeded, failed, skipped)
        if got is not expected:
            wrong.append(f"{rule} after {mix}: expected {expected}, got {got}")
    assert wrong == []


# the same table through decide(), which maps states to counts: every kind of "failed"
# (failed, upstream_failed, cancelled), both kinds of "skipped" (skipped, or a branch that
# chose another path) and several not-yet-terminal states
_FAILED_STATES = [S.FAILED, S.UPSTREAM_FAILED, S.CANCELLED]
_RUNNING_STATES = [S.RUNNING, S.QUEUED, S.UP_FOR_RETRY]


def _upstreams(counts: tuple[int, int, int, int], variant: int) -> tuple[list[S], list[bool]]:
    """Upstream states (and whether each was followed) for a mix of counts, in one of 3 variants."""
    succeeded, failed, skipped, running = counts
    states: list[S] = []
    followed: list[bool] = []
    for _ in range(succeeded):
        states.append(S.SUCCESS)
        followed.append(True)
    for i in range(failed):
        states.append(_FAILED_STATES[(variant + i) % 3])
        followed.append(True)
    for i in range(skipped):
        not_chosen = (variant + i) % 2 == 1
        states.append(S.SUCCESS if not_chosen else S.SKIPPED)
        followed.append(not not_chosen)
    for _ in range(running):
        states.append(_RUNNING_STATES[variant])
        followed.append(True)
    return states, followed


def test_decide_table_from_states():
    # 324 cases (108 cells x 3 variants) in one test; a failure names every wrong case
    wrong = []
    for rule, mix, counts, expected in _table_cases():
        for variant in range(3):
            states, followed = _upstreams(counts, variant)
            got = decide(rule, states, followed)
            if got is not expected:
                wrong.append(
                    f"{rule} after {mix} (variant {variant}: "
                    f"{[(st.value, f) for st, f in zip(states, followed, strict=True)]}): "
                    f"expected {expected}, got {got}"
                )
    assert len(_table_cases()) * 3 == 324
    assert wrong == []


@pytest.mark.parametrize("rule", TRIGGER_RULES)
def test_decisions_are_final(rule):
    """Once a rule decides, upstreams finishing later never change the decision.

    Checked over every way up to 4 upstreams can end, finishing one at a time.
    """
    total = 4
    for s in range(total + 1):
        for f in range(total + 1 - s):
            for k in range(total + 1 - s - f):
                first = decide_counts(rule, total, s, f, k)
                if first is Decision.WAIT:
                    continue
                for ds, df, dk in [(1, 0, 0), (0, 1, 0), (0, 0, 1)]:
                    if s + ds + f + df + k + dk <= total:
                        later = decide_counts(rule, total, s + ds, f + df, k + dk)
                        assert later is first, (rule, (s, f, k), (ds, df, dk))


@pytest.mark.parametrize("rule", TRIGGER_RULES)
def test_every_rule_decides_once_all_are_done(rule):
    total = 3
    for s in range(total + 1):
        for f in range(total + 1 - s):
            assert decide_counts(rule, total, s, f, total - s - f) is not Decision.WAIT


@pytest.mark.parametrize("rule", sorted(set(TRIGGER_RULES) - {"one_success", "one_failed"}))
def test_other_rules_wait_for_the_last_upstream(rule):
    # 99 of 100 upstreams done in every proportion: still waiting
    for s, f, k in [(99, 0, 0), (0, 99, 0), (0, 0, 99), (33, 33, 33)]:
        assert decide_counts(rule, 100, s, f, k) is Decision.WAIT


def test_one_success_fires_early_on_the_first_success():
    assert decide_counts("one_success", 100, 0, 0, 0) is Decision.WAIT
    assert decide_counts("one_success", 100, 0, 50, 49) is Decision.WAIT
    assert decide_counts("one_success", 100, 1, 0, 0) is Decision.RUN
    assert decide_counts("one_success", 100, 1, 98, 0) is Decision.RUN
    assert decide("one_success", [S.RUNNING, S.FAILED, S.SUCCESS]) is Decision.RUN
    # a branch that chose another path is not a success
    assert decide("one_success", [S.SUCCESS, S.RUNNING], followed=[False, True]) is Decision.WAIT


def test_one_failed_fires_early_on_the_first_failure():
    assert decide_counts("one_failed", 100, 99, 0, 0) is Decision.WAIT
    assert decide_counts("one_failed", 100, 0, 1, 0) is Decision.RUN
    for bad in _FAILED_STATES:
        assert decide("one_failed", [S.RUNNING, S.PENDING, bad]) is Decision.RUN


def test_one_success_when_none_succeeded():
    assert decide_counts("one_success", 3, 0, 3, 0) is Decision.UPSTREAM_FAILED
    assert decide_counts("one_success", 3, 0, 0, 3) is Decision.SKIP
    assert decide_counts("one_success", 3, 0, 1, 2) is Decision.UPSTREAM_FAILED  # a failure is not hidden


@pytest.mark.parametrize("rule", TRIGGER_RULES)
def test_no_upstreams_runs_under_every_rule(rule):
    assert decide_counts(rule, 0, 0, 0, 0) is Decision.RUN
    assert decide(rule, []) is Decision.RUN


@pytest.mark.parametrize(
    "counts",
    [(2, 1, 1, 1), (1, -1, 0, 0), (-1, 0, 0, 0), (3, 0, 0, 4), (3, 4, 0, 0)],
)
def test_counts_that_do_not_add_up(counts):
    with pytest.raises(ValueError, match="upstream counts do not add up"):
        decide_counts("all_success", *counts)


def test_unknown_rule_is_refused_even_without_upstreams():
    with pytest.raises(ValueError, match="unknown trigger rule 'sometimes'"):
        decide_counts("sometimes", 0, 0, 0, 0)
    with pytest.raises(ValueError, match="unknown trigger rule 'sometimes'"):
        decide("sometimes", [])


def test_followed_must_match_the_upstreams():
    with pytest.raises(ValueError):
        decide("all_success", [S.SUCCESS, S.SUCCESS], followed=[True])
