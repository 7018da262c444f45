"""The expected state of each trigger rule's step for each mix of upstream outcomes, written
out by hand from the rules' names (see spec.TRIGGER_RULES): success = the step ran,
skipped, upstream_failed. Shared by the unit and the integration test of tests/dags/triggers."""

from __future__ import annotations

RUN, SKIP, FAIL = "success", "skipped", "upstream_failed"

#: rule -> mix of upstream outcomes -> the step's final state.
EXPECTED: dict[str, dict[str, str]] = {
    "all_success": {"ok": RUN, "bad": FAIL, "skip": SKIP, "ok_bad": FAIL, "ok_skip": SKIP, "bad_skip": FAIL},
    "none_failed": {"ok": RUN, "bad": FAIL, "skip": SKIP, "ok_bad": FAIL, "ok_skip": RUN, "bad_skip": FAIL},
    "all_done": {"ok": RUN, "bad": RUN, "skip": RUN, "ok_bad": RUN, "ok_skip": RUN, "bad_skip": RUN},
    "all_failed": {"ok": SKIP, "bad": RUN, "skip": SKIP, "ok_bad": SKIP, "ok_skip": SKIP, "bad_skip": SKIP},
    "one_success": {"ok": RUN, "bad": FAIL, "skip": SKIP, "ok_bad": RUN, "ok_skip": RUN, "bad_skip": FAIL},
    "one_failed": {"ok": SKIP, "bad": RUN, "skip": SKIP, "ok_bad": RUN, "ok_skip": SKIP, "bad_skip": RUN},
    "none_failed_min_one_success": {
        "ok": RUN,
        "bad": FAIL,
        "skip": SKIP,
        "ok_bad": FAIL,
        "ok_skip": RUN,
        "bad_skip": FAIL,
    },
    "none_skipped": {"ok": RUN, "bad": RUN, "skip": SKIP, "ok_bad": RUN, "ok_skip": SKIP, "bad_skip": SKIP},
    "always": {"ok": RUN, "bad": RUN, "skip": RUN, "ok_bad": RUN, "ok_skip": RUN, "bad_skip": RUN},
}


def mismatches(states: dict[str, str]) -> list[str]:
    """Every ``<rule>__<mix>`` step whose state is not the expected one, with both states."""
    out = []
    for rule, mixes in EXPECTED.items():
        for mix, want in mixes.items():
            got = states.get(f"{rule}__{mix}")
            if got != want:
                out.append(f"{rule} after {mix}: expected {want}, got {got}")
    return out
