"""PostgreSQL's one-statement finish beside steps the machine queued earlier, in-process
(InlineHarness over PostgreSQL: the worker's finish takes the pg_fast path)."""

from __future__ import annotations

from pathlib import Path

from flowkit.testing import InlineHarness

DAGS = str(Path(__file__).resolve().parents[1] / "dags" / "operator")


def test_a_join_started_by_its_first_upstream_is_not_queued_twice(pg_url, open_store):
    # Given x (one_success) after a and b: a's success queues x; then b succeeds
    store = open_store(pg_url)
    store.upgrade()
    h = InlineHarness(store, DAGS)
    run_id = h.trigger("early_join")
    # Then b's finish records its success (no second attempt 1 of x) and the run succeeds
    assert h.run_until_done(run_id) == "success"
    assert [(a["step"], a["number"]) for a in store.attempts(run_id)] == [("a", 1), ("b", 1), ("x", 1)]
