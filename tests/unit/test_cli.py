"""The CLI through click's CliRunner: output, JSON, exit codes and one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from flowkit.cli import main

ROOT = Path(__file__).resolve().parents[2]
MIXED = ROOT / "tests" / "dags" / "mixed"
ENGINE = ROOT / "tests" / "dags" / "engine"


@pytest.fixture
def cli(tmp_path):  # type: ignore[no-untyped-def]
    runner = CliRunner()
    db = f"sqlite:///{tmp_path / 'cli.db'}"

    def invoke(*args: str, dags: Path = ROOT / "dags"):  # type: ignore[no-untyped-def]
        return runner.invoke(main, ["--database-url", db, "--dags-folder", str(dags), *args])

    return invoke


def test_dags_list_shows_good_flows_and_names_the_broken_file_and_line(cli):
    result = cli("dags", "list", dags=MIXED)
    assert result.exit_code == 0, result.output
    assert "good_flow.py" in result.output
    broken = MIXED / "broken_import.py"
    line = next(i for i, text in enumerate(broken.read_text().splitlines(), 1) if "flowkit_no_such_module_xyz" in text)
    assert f"error: {broken}:{line}: " in result.output
    as_json = json.loads(cli("dags", "list", "--json", dags=MIXED).stdout)
    assert {e["path"] for e in as_json["errors"]} >= {str(broken)}
    assert as_json["flows"]


def test_dags_check_lists_every_problem_and_exits_1(cli):
    result = cli("dags", "check", dags=MIXED)
    assert result.exit_code == 1
    errors = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 4  # broken import, syntax error, cycle, sys.exit
    assert any("has a cycle" in e for e in errors)
    assert any("sys.exit" in e for e in errors)
    assert " ms  " in result.output  # import time per file


def test_dags_check_passes_on_the_examples(cli):
    result = cli("dags", "check")
    assert result.exit_code == 0, result.output
    assert {"orders", "telematics", "ml_training"} <= set(result.output.split())


def test_trigger_validates_params_before_creating_a_run(cli):
    bad = cli("trigger", "orders", "-p", "quantity=lots")
    assert bad.exit_code == 1
    assert bad.output.strip().splitlines() == [
        "error: flow \"orders\" param \"quantity\": 'lots' is not an int; pass an int, e.g. -p quantity=42"]
    unknown = cli("trigger", "ordres")
    assert unknown.exit_code == 1
    assert 'no flow named "ordres". Did you mean "orders"?' in unknown.output
    malformed = cli("trigger", "orders", "-p", "quantity")
    assert malformed.exit_code == 2
    assert "'quantity' is not key=value" in malformed.output
    assert json.loads(cli("runs", "list", "--json").stdout) == []


def test_bad_flag_is_a_usage_error(cli):
    result = cli("runs", "list", "--limit", "zero")
    assert result.exit_code == 2
    assert "'zero' is not a valid integer" in result.output


def test_runs_show_unknown_run(cli):
    result = cli("runs", "show", "nope")
    assert result.exit_code == 1
    assert "no run with id 'nope'; see `flowkit runs list`" in result.output


def test_trigger_then_show_and_list(cli):
    run_id = cli("trigger", "orders", "-p", "customer=7").stdout.strip()
    shown = json.loads(cli("runs", "show", run_id[:8], "--json").stdout)
    assert shown["id"] == run_id and shown["state"] == "queued"
    assert shown["params"]["customer"] == 7
    assert [s["state"] for s in shown["steps"]] == ["pending"] * 9
    assert shown["events"][0]["action"] == "run_created"
    table = cli("runs", "list").stdout
    assert run_id in table and "queued" in table


@pytest.mark.slow
def test_dev_runs_a_flow_end_to_end_in_one_process(tmp_path):
    # The README's first command, minus the install: a fresh folder, no servers.
    proc = subprocess.run(
        [sys.executable, "-m", "flowkit.cli", "--dags-folder", str(ROOT / "dags"), "dev", "orders",
         "-p", f"workdir={tmp_path / 'work'}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert ": success" in proc.stdout
    assert (tmp_path / ".flowkit" / "flowkit.db").exists()
    table = proc.stdout.split("STEP", 1)[1]
    assert "backorder          skipped" in table
    assert table.count("success") == 8


@pytest.mark.slow
def test_dev_exits_1_when_the_run_fails(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "flowkit.cli", "--dags-folder", str(ENGINE), "dev", "big_result"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert ": failed" in proc.stdout
    assert "over the 262,144-byte cap" in proc.stdout


@pytest.mark.slow
def test_the_readme_example_flow_runs(tmp_path):
    # The README's "Writing a flow" example, verbatim, including a step on its own queue.
    import re

    readme = (ROOT / "README.md").read_text()
    code = re.search(r"## Writing a flow.*?```python\n(.*?)```", readme, re.S).group(1)
    (tmp_path / "dags").mkdir()
    (tmp_path / "dags" / "etl.py").write_text(code)
    proc = subprocess.run(
        [sys.executable, "-m", "flowkit.cli", "dev", "etl", "-p", "day=2026-11-23"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "load       success" in proc.stdout and "alert      skipped" in proc.stdout


def test_dags_check_refuses_a_step_timeout_above_the_visibility_timeout(cli, tmp_path, monkeypatch):
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "long.py").write_text(
        "from flowkit import Flow\n\n\ndef work(ctx):\n    return 1\n\n\n"
        "flow = Flow('long').step('crunch', work, timeout='2h')\n")
    result = cli("dags", "check", dags=dags)
    assert result.exit_code == 1
    assert (f"error: {dags / 'long.py'}:8: flow \"long\" step \"crunch\": timeout 7200 s is not below "
            "FLOWKIT_VISIBILITY_TIMEOUT_SECONDS=3600") in result.output
    monkeypatch.setenv("FLOWKIT_VISIBILITY_TIMEOUT_SECONDS", "9000")
    assert cli("dags", "check", dags=dags).exit_code == 0


def test_unreachable_database_is_one_line_without_the_password():
    result = CliRunner().invoke(main, ["--database-url", "postgresql://u:hunter2@127.0.0.1:1/x", "runs", "list"])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: cannot reach the database at postgresql+psycopg://u:***@127.0.0.1:1/x")
    assert "hunter2" not in result.output
