"""The CLI through click's CliRunner: output, JSON, exit codes and one-line errors."""

from __future__ import annotations

import json
import logging
import socket
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
        # The in-memory broker: unit tests publish nothing to a shared Redis.
        return runner.invoke(
            main, ["--database-url", db, "--broker-url", "memory://", "--dags-folder", str(dags), *args]
        )

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
    assert {"orders", "telematics", "fleet_report", "ml_training"} <= set(result.output.replace(",", " ").split())


def test_trigger_validates_params_before_creating_a_run(cli):
    bad = cli("trigger", "orders", "-p", "customer=lots")
    assert bad.exit_code == 1
    assert bad.output.strip().splitlines() == [
        'error: flow "orders" param "customer": \'lots\' is not an int; pass an int, e.g. -p customer=42'
    ]
    not_a_list = cli("trigger", "orders", "-p", "lines=widget")
    assert not_a_list.exit_code == 1
    assert not_a_list.output.strip().splitlines() == [
        "error: flow \"orders\" param \"lines\": 'widget' is not JSON; pass a list, e.g. -p lines='[1,2]'"
    ]
    unknown = cli("trigger", "ordres")
    assert unknown.exit_code == 1
    assert 'no flow named "ordres". Did you mean "orders"?' in unknown.output
    malformed = cli("trigger", "orders", "-p", "customer")
    assert malformed.exit_code == 2
    assert "'customer' is not key=value" in malformed.output
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
    assert [s["state"] for s in shown["steps"]] == ["pending"] * 12
    assert shown["events"][0]["action"] == "run_created"
    table = cli("runs", "list").stdout
    assert run_id in table and "queued" in table


@pytest.mark.slow
def test_dev_runs_a_flow_end_to_end_in_one_process(tmp_path):
    # The README's first command, minus the install: a fresh folder, no servers.
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "flowkit.cli",
            "--dags-folder",
            str(ROOT / "dags"),
            "dev",
            "orders",
            "-p",
            f"workdir={tmp_path / 'work'}",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert ": success" in proc.stdout
    assert (tmp_path / ".flowkit" / "flowkit.db").exists()
    table = proc.stdout.split("STEP", 1)[1]
    assert "backorder          skipped" in table
    assert "approve_large      skipped" in table
    # 10 steps and the 2 instances of the map step (one shipment per order line)
    assert table.count("success") == 12
    assert "  ship[0]          success" in table and "  ship[1]          success" in table
    labels = sorted(p.read_text() for p in (tmp_path / "work").glob("label-*.txt"))
    assert labels == ["SHIP 1 x gizmo BY ground TO customer 42\n", "SHIP 2 x widget BY ground TO customer 42\n"]


@pytest.mark.slow
def test_dev_exits_1_when_the_run_fails(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "flowkit.cli", "--dags-folder", str(ENGINE), "dev", "big_result"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
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
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "load       success" in proc.stdout and "alert      skipped" in proc.stdout


def test_dags_check_refuses_a_step_timeout_above_the_visibility_timeout(cli, tmp_path, monkeypatch):
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "long.py").write_text(
        "from flowkit import Flow\n\n\ndef work(ctx):\n    return 1\n\n\n"
        "flow = Flow('long').step('crunch', work, timeout='2h')\n"
    )
    result = cli("dags", "check", dags=dags)
    assert result.exit_code == 1
    assert (
        f'error: {dags / "long.py"}:8: flow "long" step "crunch": timeout 7200 s is not below '
        "FLOWKIT_VISIBILITY_TIMEOUT_SECONDS=3600"
    ) in result.output
    monkeypatch.setenv("FLOWKIT_VISIBILITY_TIMEOUT_SECONDS", "9000")
    assert cli("dags", "check", dags=dags).exit_code == 0


def test_unreachable_database_is_one_line_without_the_password():
    result = CliRunner().invoke(main, ["--database-url", "postgresql://u:hunter2@127.0.0.1:1/x", "runs", "list"])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: cannot reach the database at postgresql://u:***@127.0.0.1:1/x: ")
    assert "hunter2" not in result.output


# -- configuration mistakes: one line, exit 1, no password ---------------------------------------
DOWN_PG = "postgresql://u:hunter2@127.0.0.1:1/x"  # nothing listens on port 1: refused at once
DOWN_REDIS = "redis://:hunter2@127.0.0.1:1/0"


@pytest.fixture
def restore_signals():  # type: ignore[no-untyped-def]
    """`flowkit scheduler` installs SIGTERM/SIGINT handlers; give pytest its own back."""
    import signal

    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    yield
    for s, handler in saved.items():
        signal.signal(s, handler)


def _one_error_line(result) -> str:  # type: ignore[no-untyped-def]
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith("error: ")
    assert "hunter2" not in result.output and "Traceback" not in result.output
    return lines[0]


@pytest.mark.parametrize(
    "args",
    [
        ["db", "upgrade"],
        ["dags", "list"],
        ["trigger", "orders"],
        ["runs", "list"],
        ["runs", "show", "abc"],
        ["render", "orders"],
        ["report", "abc", "-o", "r.html"],
        ["timeline", "abc"],
        ["lineage", "abc"],
        ["dev", "orders"],
        ["scheduler", "--wait-for-services", "0"],
        ["worker", "--wait-for-services", "0"],
    ],
    ids=lambda a: " ".join(a[:2]),
)
def test_every_command_says_in_one_line_that_the_database_is_down(args, tmp_path, monkeypatch, restore_signals):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(
        main, ["--database-url", DOWN_PG, "--broker-url", "memory://", "--dags-folder", str(ROOT / "dags"), *args]
    )
    line = _one_error_line(result)
    assert line.startswith("error: cannot reach the database at postgresql://u:***@127.0.0.1:1/x: ")
    assert line.endswith("; check FLOWKIT_DATABASE_URL and that the server runs")


@pytest.mark.parametrize(
    ("option", "url", "expected"),
    [
        (
            "--database-url",
            "postgresql://u:hunter2@db:notaport/x",
            "error: FLOWKIT_DATABASE_URL='postgresql://u:***@db:notaport/x' has a port that is not a number; use e.g. ",
        ),
        ("--database-url", "u:hunter2@db/x", "error: FLOWKIT_DATABASE_URL='u:***@db/x' is not a URL"),
        ("--database-url", "mysql://u:hunter2@db/x", "error: FLOWKIT_DATABASE_URL='mysql://u:***@db/x' uses mysql, "),
        (
            "--broker-url",
            "nonsense://x",
            "error: FLOWKIT_BROKER_URL='nonsense://x' uses scheme 'nonsense', which "
            "no kombu transport handles; use e.g. redis://",
        ),
    ],
)
@pytest.mark.parametrize(
    "args", [["db", "upgrade"], ["runs", "list"], ["trigger", "orders"], ["scheduler"]], ids=lambda a: a[0]
)
def test_a_malformed_url_is_one_line_before_any_command_runs(option, url, expected, args, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, [option, url, "--dags-folder", str(ROOT / "dags"), *args])
    assert _one_error_line(result).startswith(expected)
    assert not (tmp_path / ".flowkit").exists()  # nothing was created


def test_a_malformed_broker_url_from_the_environment_creates_no_run(cli, monkeypatch):
    monkeypatch.setenv("FLOWKIT_BROKER_URL", "nonsense://x")
    result = CliRunner().invoke(main, ["--dags-folder", str(ROOT / "dags"), "trigger", "orders"])
    assert _one_error_line(result).startswith("error: FLOWKIT_BROKER_URL='nonsense://x' ")
    monkeypatch.delenv("FLOWKIT_BROKER_URL")
    assert json.loads(cli("runs", "list", "--json").stdout) == []


def test_trigger_with_the_broker_down_queues_the_run_and_warns_in_one_line(tmp_path):
    db = f"sqlite:///{tmp_path / 'cli.db'}"
    base = ["--database-url", db, "--dags-folder", str(ROOT / "dags")]
    result = CliRunner().invoke(main, [*base, "--broker-url", DOWN_REDIS, "trigger", "orders", "--json"])
    assert result.exit_code == 0, result.output
    run_id = json.loads(result.stdout)["run_id"]  # stdout stays machine-readable
    warning = result.stderr.strip().splitlines()
    assert len(warning) == 1
    assert warning[0].startswith(
        f"warning: run {run_id} is queued, but the scheduler was not woken: cannot reach "
        "the broker at redis://:***@127.0.0.1:1/0: "
    )
    assert "hunter2" not in result.output
    listed = CliRunner().invoke(main, [*base, "--broker-url", "memory://", "runs", "list", "--json"])
    assert [r["id"] for r in json.loads(listed.stdout)] == [run_id]


def test_trigger_help_says_what_happens_when_the_broker_is_down():
    text = CliRunner().invoke(main, ["trigger", "--help"]).output
    assert "still exits 0" in text and "next sweep" in text


@pytest.mark.parametrize(
    "args",
    [
        ["scheduler", "--wait-for-services", "0"],
        ["worker", "--wait-for-services", "0"],
        ["flower", "--wait-for-services", "0"],
        ["dev", "orders"],
    ],
    ids=lambda a: a[0],
)
def test_daemons_say_in_one_line_that_the_broker_is_down(args, tmp_path, monkeypatch, restore_signals):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["--broker-url", DOWN_REDIS, "--dags-folder", str(ROOT / "dags"), *args])
    line = _one_error_line(result)
    assert line.startswith("error: cannot reach the broker at redis://:***@127.0.0.1:1/0: ")
    assert line.endswith("; check FLOWKIT_BROKER_URL and that the server runs")


def test_a_daemon_retries_a_down_server_with_one_log_line_per_retry(tmp_path, monkeypatch, caplog, restore_signals):
    monkeypatch.chdir(tmp_path)
    with caplog.at_level(logging.WARNING):
        result = CliRunner().invoke(
            main,
            [
                "--broker-url",
                DOWN_REDIS,
                "--dags-folder",
                str(ROOT / "dags"),
                "scheduler",
                "--wait-for-services",
                "1.5",
            ],
        )
    _one_error_line(result)
    retries = [r for r in caplog.records if "retrying in" in r.getMessage()]
    assert [r.getMessage().rsplit(";", 1)[1] for r in retries] == [" retrying in 1 s (attempt 1)"]
    assert retries[0].getMessage().startswith("scheduler: cannot reach the broker at redis://:***@127.0.0.1:1/0")
    assert all(r.exc_info is None for r in caplog.records)


def test_an_impossible_url_is_not_retried(tmp_path, monkeypatch, caplog, restore_signals):
    import flowkit.connectivity as connectivity

    def unknown_host(url: str, **_: object) -> None:
        raise connectivity.broker_error(socket.gaierror(socket.EAI_NONAME, "Name or service not known"), url)

    monkeypatch.setattr(connectivity, "probe_broker", unknown_host)
    monkeypatch.chdir(tmp_path)
    with caplog.at_level(logging.WARNING):
        result = CliRunner().invoke(
            main, ["--broker-url", "redis://cache.example:6379/0", "--dags-folder", str(ROOT / "dags"), "scheduler"]
        )  # waits forever for a *down* server
    assert _one_error_line(result) == (
        "error: cannot connect to the broker at redis://cache.example:6379/0: "
        "[Errno -2] Name or service not known; check FLOWKIT_BROKER_URL"
    )
    assert not [r for r in caplog.records if "retrying" in r.getMessage()]


def test_dags_list_prints_each_load_error_once(tmp_path):
    # A real process: the log handler `flowkit` installs is what printed each error twice.
    args = [
        sys.executable,
        "-m",
        "flowkit.cli",
        "--database-url",
        f"sqlite:///{tmp_path / 'once.db'}",
        "--broker-url",
        "memory://",
        "--dags-folder",
        str(MIXED),
        "dags",
        "list",
    ]
    for _ in range(2):  # the first load imports, the second reads the cache
        result = subprocess.run(args, capture_output=True, text=True, timeout=120, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        lines = [line for line in result.stderr.splitlines() if "broken_import.py" in line]
        assert len(lines) == 1, result.stderr
        assert lines[0].startswith("error: ")


def test_dev_echo_lists_map_instances_right_under_their_map_step(sqlite_store):
    from flowkit.cli.dev import follow
    from flowkit.testing import InlineHarness

    h = InlineHarness(sqlite_store, str(ROOT / "tests" / "dags" / "maps"))
    run_id = h.trigger("squares", {"n": 12})
    assert h.run_until_done(run_id) == "success"
    lines: list[str] = []
    assert follow(sqlite_store, run_id, 5, lines.append) == "success"
    names = [line.split()[0] for line in lines[:-1]]
    assert names == ["numbers", "square", *[f"square[{i}]" for i in range(12)], "total"]
