"""`flowkit trigger FLOW --parent RUN`: the new run records its parent (runs.parent_run_id)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
SAGA_DAGS = str(ROOT / "tests" / "dags" / "saga")


def test_trigger_with_parent_records_it_and_an_unknown_parent_is_one_line(sqlite_store):
    from click.testing import CliRunner

    from flowkit.cli import main

    def cli(*args: str) -> Any:
        base = ["--database-url", sqlite_store.url, "--broker-url", "memory://", "--dags-folder", SAGA_DAGS]
        return CliRunner().invoke(main, [*base, *args])

    first = cli("trigger", "saga_ok")
    assert first.exit_code == 0, first.output
    parent = first.output.strip()
    child = cli("trigger", "saga_ok", "--parent", parent[:8])
    assert child.exit_code == 0, child.output
    assert sqlite_store.get_run(child.output.strip())["parent_run_id"] == parent
    missing = cli("trigger", "saga_ok", "--parent", "nope")
    assert missing.exit_code == 1 and len(missing.output.strip().splitlines()) == 1
    assert "nope" in missing.output
