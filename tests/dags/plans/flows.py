"""A wide flow whose runs make many rows per run (and results), and a tiny one that leaves the
planner's statistics saying "a few rows per run"."""

from __future__ import annotations

from flowkit import Flow


def one() -> int:
    return 1


wide = Flow("wide_plans").step("root", one)
for i in range(400):
    wide.step(f"m{i:03d}", one, after="root")
wide.step("join", one, after=[f"m{i:03d}" for i in range(400)])

tiny = Flow("tiny_plans").step("a", one).step("b", one, after="a")
