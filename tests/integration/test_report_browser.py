"""The HTML report of a real run, opened in headless Chromium.

A real run of the orders example (``flowkit dev``: scheduler and worker in one process, no
servers) that fails at its first step; ``flowkit report`` writes the page; Chromium renders
it, we read back the DOM it built and take a screenshot (kept in pytest's tmp dir).
Skipped when Chromium is missing, failed instead when FLOWKIT_REQUIRE_SERVICES=1.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from flowkit.store.sql import SqlStore

from ..conftest import service_missing

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "chromium", "chromium-browser", "google-chrome")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]


def chromium() -> str:
    for candidate in CHROMIUM_CANDIDATES:
        found = shutil.which(candidate)
        if found:
            return found
    service_missing("headless Chromium (/usr/bin/chromium, Debian package chromium)", FileNotFoundError("chromium"))
    raise AssertionError("unreachable")


def flowkit(*args: str, db: Path, dags: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWKIT_")}
    cmd = [
        sys.executable,
        "-c",
        "from flowkit.cli import main; main()",
        "--database-url",
        f"sqlite:///{db}",
        "--dags-folder",
        str(dags),
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=db.parent)


def browse(browser: str, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args], capture_output=True, text=True, timeout=120
    )


def test_report_of_a_real_run_renders_in_chromium(tmp_path: Path) -> None:
    browser = chromium()
    dags = tmp_path / "dags"
    dags.mkdir()
    for name in ("orders.py", "_files.py"):  # the example and the file helpers it imports
        shutil.copy(ROOT / "dags" / name, dags / name)
    db = tmp_path / "flowkit.db"

    # a real run that fails: quantity 0 is refused by the first step
    dev = flowkit(
        "dev",
        "orders",
        "-p",
        'lines=[{"item": "widget", "quantity": 0}]',
        "-p",
        f"workdir={tmp_path / 'work'}",
        "--timeout",
        "60",
        db=db,
        dags=dags,
    )
    assert dev.returncode == 1, dev.stdout + dev.stderr
    store = SqlStore(f"sqlite:///{db}")
    try:
        run_id = store.list_runs("orders", limit=1)[0]["id"]
        assert store.get_run(run_id)["state"] == "failed"
    finally:
        store.dispose()

    report = tmp_path / "report.html"
    res = flowkit("report", run_id[:8], "-o", str(report), db=db, dags=dags)
    assert res.returncode == 0, res.stderr
    html = report.read_text()
    assert "<svg" in html and 'class="flowkit-timeline"' in html

    # the DOM Chromium built from the page
    dom = browse(browser, tmp_path / "profile-dom", "--dump-dom", report.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    page = dom.stdout
    assert f"orders run {run_id}" in page
    for step in (
        "receive",
        "check_inventory",
        "route",
        "reserve",
        "backorder",
        "invoice",
        "review",
        "approve_large",
        "pack",
        "ship",
        "notify_customer",
        "update_accounting",
    ):
        assert f'<tr data-step="{step}"><td>{step}</td>' in page
    assert '<span class="state" style="background:#f1948a">failed</span>' in page
    assert page.count(">upstream_failed</span>") == 11
    assert "line 1: quantity must be a positive whole number, got 0" in page
    for action in ("run_created", "run_state", "step_state", "attempt_started", "attempt_finished"):
        assert f"<td>{action}</td>" in page
    assert page.count('<g id="node') >= 12  # the run graph, laid out by dot, inline

    # a screenshot, left in pytest's tmp dir for a human to look at
    shot = tmp_path / "report.png"
    res_shot = browse(
        browser, tmp_path / "profile-shot", f"--screenshot={shot}", "--window-size=1400,2000", report.as_uri()
    )
    assert res_shot.returncode == 0, res_shot.stderr[-2000:]
    data = shot.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(data) > 50_000, f"screenshot is only {len(data)} bytes: is the page blank?"


def test_report_of_a_map_approval_and_compensation_run_renders_in_chromium(tmp_path: Path) -> None:
    """A run with map instances, a decided approval, a failing shell step and compensation
    (made in-process on the same SQLite file), reported by the CLI and opened in Chromium:
    tracebacks and output stay closed until clicked."""
    from flowkit.store import approvals
    from flowkit.testing import InlineHarness

    browser = chromium()
    dags = tmp_path / "dags"
    dags.mkdir()
    shutil.copy(ROOT / "tests" / "dags" / "render" / "flows.py", dags / "flows.py")
    db = tmp_path / "flowkit.db"
    store = SqlStore(f"sqlite:///{db}")
    try:
        store.upgrade()
        h = InlineHarness(store, str(dags))
        run_id = h.trigger("pictured", {"bad": -1})
        h.work()
        approvals.decide(store, run_id, "sign_off", approve=True, by="ann", reason="checked")
        h.scheduler.handle([{"type": "approval_decided", "run_id": run_id}])
        assert h.run_until_done(run_id) == "failed"
    finally:
        store.dispose()

    report = tmp_path / "report.html"
    res = flowkit("report", run_id, "-o", str(report), db=db, dags=dags)
    assert res.returncode == 0, res.stderr
    dom = browse(browser, tmp_path / "profile-dom", "--dump-dom", report.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    page = dom.stdout
    assert "approved by ann: checked" in page and ">compensation failed</span>" in page
    for name in ("square[0]", "square[3]", "numbers:compensate", "prepare:compensate"):
        assert f'data-step="{name}"' in page
    assert page.count("<details ") == 2 and "<details open" not in page  # the shell step, the compensation
    assert "key=***" in page and "hunter2-secret" not in page
    assert page.count('<g id="node') >= 7


def test_report_reads_the_same_rows_on_postgresql(pg_url: str) -> None:
    """The run-picture reads (instance counts, the first instances, instance events left
    out) on PostgreSQL, over a run made in-process; then the report, laid out by dot."""
    from flowkit import render as rd
    from flowkit.testing import InlineHarness

    store = SqlStore(pg_url)
    try:
        store.upgrade()
        h = InlineHarness(store, str(ROOT / "tests" / "dags" / "render"))
        run_id = h.trigger("pictured", {"n": 14, "bad": 12})  # the map fails: no approval asked
        assert h.run_until_done(run_id) == "failed"
        view = rd.load_run_view(store, run_id, instances_shown=5, failed_shown=2)
    finally:
        store.dispose()
    assert view.map_counts == {"square": {"success": 13, "failed": 1}}
    assert [r["step"] for r in view.instances["square"]] == [f"square[{i}]" for i in (0, 1, 2, 3, 4, 12)]
    assert "square[7]" not in view.attempts and len(view.attempts["square[12]"]) == 1
    assert view.instance_events > 0 and not any("[" in (e["step"] or "") for e in view.events)
    page = rd.report_html(view)
    assert "8 more of 14 instances (13 success, 1 failed)" in page
    assert "hunter2-secret" not in page and "token ***" in page
    assert ">compensation failed</span>" in page and 'data-step="prepare:compensate"' in page
    assert page.count('<g id="node') >= 5
