"""`flowkit trigger` never waits on other modules' imports: a stored flow whose file is
unchanged is triggered from its stored spec, a changed file is imported alone, and an
unknown flow falls back to loading the folder."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from flowkit.cli import main

FAST = """
from flowkit import Flow


def a(ctx):
    return {VALUE}


flow = Flow("{NAME}").step("a", a)
"""

SLOW = """
import time

time.sleep(5)  # a module that is slow to import (a heavy import, I/O at module level)

from flowkit import Flow


def a(ctx):
    return 1


flow = Flow("slow").step("a", a)
"""


@pytest.fixture
def setup(tmp_path: Path):  # type: ignore[no-untyped-def]
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "fast.py").write_text(FAST.replace("{NAME}", "fast").replace("{VALUE}", "1"))
    runner = CliRunner()
    base = ["--database-url", f"sqlite:///{tmp_path / 's.db'}", "--broker-url", "memory://", "--dags-folder", str(dags)]

    def cli(*args: str):  # type: ignore[no-untyped-def]
        started = time.monotonic()
        result = runner.invoke(main, [*base, *args])
        result.took = time.monotonic() - started
        return result

    assert cli("dags", "list").exit_code == 0  # fast is stored
    return dags, cli


def _versions(cli) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {r["flow_name"]: r["version"] for r in json.loads(cli("runs", "list", "--json").stdout)}


def test_trigger_of_a_stored_flow_does_not_wait_for_a_new_slow_module(setup):
    dags, cli = setup
    (dags / "slow.py").write_text(SLOW)  # new: a full load would import it (5 s)
    result = cli("trigger", "fast")
    assert result.exit_code == 0, result.output
    assert result.took < 3, f"trigger took {result.took:.1f} s: it waited on another module's import"


def test_a_changed_file_is_imported_alone_and_its_new_version_is_used(setup):
    dags, cli = setup
    first = cli("trigger", "fast")
    (dags / "slow.py").write_text(SLOW)
    (dags / "fast.py").write_text(FAST.replace("{NAME}", "fast").replace("{VALUE}", "2"))
    second = cli("trigger", "fast")
    assert second.exit_code == 0, second.output
    assert second.took < 3
    runs = json.loads(cli("runs", "list", "--json").stdout)
    by_id = {r["id"]: r["version"] for r in runs}
    assert by_id[first.output.strip()] != by_id[second.output.strip()]
    listed = json.loads(cli("dags", "list", "--json").stdout)  # imports slow.py now
    versions = {f["name"]: f["version"] for f in listed["flows"]}
    assert versions["fast"] == by_id[second.output.strip()]
    assert "slow" in versions


def test_an_unknown_flow_falls_back_to_loading_the_folder(setup):
    dags, cli = setup
    (dags / "other.py").write_text(FAST.replace("{NAME}", "other").replace("{VALUE}", "3"))
    result = cli("trigger", "other")
    assert result.exit_code == 0, result.output
    typo = cli("trigger", "othr")
    assert typo.exit_code == 1
    assert 'no flow named "othr". Did you mean "other"?' in typo.output


def test_a_flow_moved_to_another_file_is_found_there(setup):
    dags, cli = setup
    (dags / "fast.py").unlink()
    (dags / "moved.py").write_text(FAST.replace("{NAME}", "fast").replace("{VALUE}", "4"))
    result = cli("trigger", "fast")
    assert result.exit_code == 0, result.output
    listed = json.loads(cli("dags", "list", "--json").stdout)
    assert [f["path"] for f in listed["flows"] if f["name"] == "fast"] == [str(dags / "moved.py")]


def test_a_name_clash_introduced_by_the_changed_file_is_reported(setup):
    dags, cli = setup
    (dags / "b.py").write_text(FAST.replace("{NAME}", "b").replace("{VALUE}", "5"))
    assert cli("trigger", "b").exit_code == 0
    both = FAST.replace("{NAME}", "b").replace("{VALUE}", "5") + ('\nsecond = Flow("fast").step("a", a)\n')
    (dags / "b.py").write_text(both)  # now also defines "fast", which fast.py defines
    result = cli("trigger", "b")
    assert result.exit_code == 0, result.output
    listed = json.loads(cli("dags", "list", "--json").stdout)
    assert any('flow "fast" is defined twice' in e["message"] for e in listed["errors"])
