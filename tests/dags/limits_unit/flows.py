"""Flows that exercise the slot ledger in-process (tests/unit/test_limits.py)."""

from flowkit import Flow


def noop(ctx):
    return {"step": ctx.step}


def pick_a(ctx):
    return "a"


# 8 independent steps in pool "db" (3 slots, created by the test).
pooled = Flow("pooled").step("root", noop)
for i in range(8):
    pooled.step(f"p{i}", noop, after="root", pool="db")

# readers share the warehouse lock, writers take it exclusively; readers are ready first.
locked = Flow("locked").step("root", noop)
for i in range(3):
    locked.step(f"r{i}", noop, after="root", lock=("warehouse", "shared"))
for i in range(3):
    locked.step(f"w{i}", noop, after="root", lock="warehouse")

# a flow of which one run may be active at a time, with a step cap of 2.
capped = Flow("capped", max_active_runs=1, max_active_steps=2).step("root", noop)
for i in range(5):
    capped.step(f"c{i}", noop, after="root")

# a plain fan-out, for the global cap, backpressure and fairness.
wide = Flow("wide").step("root", noop)
for i in range(40):
    wide.step(f"m{i:02d}", noop, after="root")
wide.step("join", noop, after=[f"m{i:02d}" for i in range(40)])

big_slots = Flow("big_slots").step("greedy", noop, pool="db", slots=3).step("small", noop, pool="db")

branchy = (
    Flow("branchy")
    .branch("pick", pick_a)
    .step("a", noop, after="pick")
    .step("b", noop, after="pick")
    .step("after_b", noop, after="b")
    .step("join", noop, after=["a", "after_b"], trigger="none_failed")
)
