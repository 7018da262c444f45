"""Every trigger rule against every mix of upstream outcomes, and the two eager rules.

``rules``: three sources end success (ok), failed (bad) and skipped (skip); for each rule
and each non-empty mix of them, a step ``<rule>__<mix>`` waits on that mix. The expected
state of each is written out by hand in tests/trigger_table.py, from the rules' names,
not computed from the engine's own code.

``eager``: one_success and one_failed joins start as soon as one upstream allows it, while
a slow upstream still runs.
"""

from __future__ import annotations

import time

from flowkit import Flow, Skip
from flowkit.spec import TRIGGER_RULES

MIXES = {
    "ok": ["ok"],
    "bad": ["bad"],
    "skip": ["skip"],
    "ok_bad": ["ok", "bad"],
    "ok_skip": ["ok", "skip"],
    "bad_skip": ["bad", "skip"],
}


def succeed() -> str:
    return "done"


def fail() -> None:
    raise RuntimeError("this source fails on purpose")


def skip() -> None:
    raise Skip("this source skips on purpose")


def slow() -> str:
    time.sleep(3)
    return "slow done"


rules = Flow("rules").step("ok", succeed).step("bad", fail).step("skip", skip)
for rule in TRIGGER_RULES:
    for mix, ups in MIXES.items():
        rules.step(f"{rule}__{mix}", succeed, after=ups, trigger=rule)

eager = (
    Flow("eager")
    .step("fast_ok", succeed)
    .step("fast_bad", fail)
    .step("slow", slow)
    .step("first_success", succeed, after=["fast_ok", "slow"], trigger="one_success")
    .step("first_failure", succeed, after=["fast_bad", "slow"], trigger="one_failed")
)
