"""The starter flow (dags/starter.py), the one a newcomer copies: run in-process through
InlineHarness, as `flowkit dev starter` runs it with servers left out."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from flowkit.store.sql import SqlStore
from flowkit.testing import InlineHarness

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def harness(sqlite_store: SqlStore, tmp_path: Path) -> InlineHarness:
    folder = tmp_path / "dags"  # the starter alone: one loader subprocess, not four
    folder.mkdir()
    shutil.copy(ROOT / "dags" / "starter.py", folder / "starter.py")
    return InlineHarness(sqlite_store, str(folder))


def test_the_starter_runs_its_steps_in_order_and_passes_results_on(harness: InlineHarness) -> None:
    # Given the starter flow with its default param
    spec = harness.store.flow_spec("starter")
    assert spec.step_names == ["greet", "shout", "count", "report"]
    assert {s.name: s.retry.retries for s in spec.steps}["shout"] == 2
    # When a run is worked to the end
    run_id = harness.trigger("starter")
    assert harness.run_until_done(run_id) == "success"
    # Then each step got its upstreams' results
    results = harness.store.results(run_id)
    assert results["greet"] == "hello, world"
    assert results["report"] == {"message": "HELLO, WORLD!", "letters": 12}


def test_the_param_reaches_the_steps(harness: InlineHarness) -> None:
    run_id = harness.trigger("starter", {"name": "Ada"})
    assert harness.run_until_done(run_id) == "success"
    assert harness.store.results(run_id)["report"] == {"message": "HELLO, ADA!", "letters": 10}
