"""The orders example (dags/orders.py): shipments mapped per order line, compensation when
shipping fails, approval of large orders; in-process (InlineHarness) and through `flowkit dev`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from flowkit import StepContext
from flowkit.store import approvals
from flowkit.testing import FakeClock, InlineHarness

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_DAGS = str(ROOT / "dags")
#: The stock a fresh work folder starts with (dags/orders.py DEFAULT_STOCK).
FRESH_STOCK = {"widget": 100, "gadget": 0, "gizmo": 40}
#: 20 widgets (90.00) and 4 gizmos (29.00) + 20 % tax = 142.80: above the default threshold (100).
LARGE_ORDER = '[{"item": "widget", "quantity": 20}, {"item": "gizmo", "quantity": 4}]'


def states(store, run_id):  # type: ignore[no-untyped-def]
    return {s["step"]: s["state"] for s in store.step_runs(run_id)}


def work_files(folder: Path) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(stock, invoices, reservations) as the run left them in its work folder."""
    return tuple(
        json.loads((folder / f"{name}.json").read_text())  # type: ignore[return-value]
        for name in ("stock", "invoices", "reservations")
    )


def assert_undone(folder: Path, run_id: str) -> None:
    """The stock is back to where it started and the run's invoice is void."""
    stock, invoices, reservations = work_files(folder)
    assert stock == FRESH_STOCK
    assert invoices[f"inv-{run_id[:8]}"]["status"] == "void"
    assert [r["status"] for r in reservations.values()] == ["released"]


# -- in-process ------------------------------------------------------------------------------
def test_failed_shipping_voids_the_invoice_then_releases_the_stock(sqlite_store, tmp_path):
    # Given an order whose carrier refuses every parcel
    clock = FakeClock()
    h = InlineHarness(sqlite_store, EXAMPLE_DAGS, clock=clock)
    run_id = h.trigger("orders", {"workdir": str(tmp_path), "fail_shipping": "true"})
    # When the run is worked to the end (the clock jumps over the retry timers)
    assert h.run_until_done(run_id, advance=clock.advance) == "failed"
    # Then every shipment failed after its retries, and the steps after it did not run
    st = states(sqlite_store, run_id)
    assert (st["ship"], st["ship[0]"], st["ship[1]"]) == ("failed", "failed", "failed")
    assert [a["number"] for a in sqlite_store.attempts(run_id, "ship[0]")] == [1, 2, 3]
    assert (
        "carrier ground refused parcel 1 (fail_shipping=true)" in sqlite_store.attempts(run_id, "ship[0]")[-1]["error"]
    )
    assert st["notify_customer"] == st["update_accounting"] == "upstream_failed"
    # ... the invoice and the reservation were undone, the invoice first (it came after)
    assert st["invoice:compensate"] == st["reserve:compensate"] == "success"
    assert (
        sqlite_store.attempts(run_id, "invoice:compensate")[0]["ended_at"]
        <= sqlite_store.attempts(run_id, "reserve:compensate")[0]["started_at"]
    )
    run = sqlite_store.get_run(run_id)
    assert (run["state"], run["outcome"]) == ("failed", "compensated")
    # ... and the work folder shows it: stock restored, invoice void, no ledger entry, no label
    assert_undone(tmp_path, run_id)
    assert not (tmp_path / "ledger.json").exists() and not list(tmp_path.glob("label-*"))
    assert sqlite_store.ledger_balance() == {k: (0, 0) for k in sqlite_store.ledger_balance()}


def test_a_large_order_waits_for_approval_and_ships_once_approved(sqlite_store, tmp_path):
    h = InlineHarness(sqlite_store, EXAMPLE_DAGS)
    run_id = h.trigger("orders", {"workdir": str(tmp_path), "lines": LARGE_ORDER})
    h.work()
    assert states(sqlite_store, run_id)["approve_large"] == "awaiting_approval"
    assert states(sqlite_store, run_id)["pack"] == "pending"  # nothing ships before the decision
    approvals.decide(sqlite_store, run_id, "approve_large", approve=True, by="alice", reason="known buyer")
    h.scheduler.handle([{"type": "approval_decided", "run_id": run_id}])
    assert h.run_until_done(run_id) == "success"
    results = sqlite_store.results(run_id)
    assert results["invoice"]["total"] == pytest.approx(142.8)
    assert results["review"] == ["approve_large"]
    assert [r["line"] for r in results["ship"]] == [1, 2]
    stock, invoices, _ = work_files(tmp_path)
    assert stock == {**FRESH_STOCK, "widget": 80, "gizmo": 36}
    assert invoices[f"inv-{run_id[:8]}"]["status"] == "issued"


def test_a_rejected_large_order_is_undone(sqlite_store, tmp_path):
    h = InlineHarness(sqlite_store, EXAMPLE_DAGS)
    run_id = h.trigger("orders", {"workdir": str(tmp_path), "lines": LARGE_ORDER})
    h.work()
    approvals.decide(sqlite_store, run_id, "approve_large", approve=False, by="bob", reason="credit limit")
    h.scheduler.handle([{"type": "approval_decided", "run_id": run_id}])
    assert h.run_until_done(run_id) == "failed"
    st = states(sqlite_store, run_id)
    assert st["approve_large"] == "failed"
    assert {st[s] for s in ("pack", "ship", "notify_customer", "update_accounting")} == {"upstream_failed"}
    assert sqlite_store.get_run(run_id)["outcome"] == "compensated"
    assert_undone(tmp_path, run_id)


def test_bad_order_lines_fail_the_first_step_with_the_line_and_the_fix(sqlite_store, tmp_path):
    h = InlineHarness(sqlite_store, EXAMPLE_DAGS)
    run_id = h.trigger(
        "orders",
        {"workdir": str(tmp_path), "lines": '[{"item": "widget", "quantity": 1}, {"item": "gadgte", "quantity": 1}]'},
    )
    assert h.run_until_done(run_id) == "failed"
    (attempt,) = sqlite_store.attempts(run_id, "receive")
    assert "line 2: unknown item 'gadgte'; we sell gadget, gizmo, widget" in attempt["error"]
    assert sqlite_store.get_run(run_id)["outcome"] is None  # nothing had been done to undo


def _orders_module() -> ModuleType:
    """dags/orders.py run as a worker runs it: with its pinned helper dags/_files.py importable
    while it loads (and sys.path and sys.modules as they were afterwards)."""
    from flowkit.loading.loader import exec_module_source
    from flowkit.loading.pinned import ModuleSource

    path, helper = ROOT / "dags" / "orders.py", ROOT / "dags" / "_files.py"
    return exec_module_source(
        str(path),
        path.read_text(),
        modules=[ModuleSource(name="_files", path=str(helper), source=helper.read_text(), package=False)],
    )


def test_each_write_and_each_undo_happens_once_when_delivered_twice(tmp_path):
    # Given the step functions, called as a redelivered attempt would call them: twice each
    orders = _orders_module()

    def ctx(step: str, upstream: dict[str, Any] | None = None, compensates: str | None = None) -> StepContext:
        return StepContext(
            flow="orders",
            run_id="r-1234567890",
            step=step,
            attempt=1,
            params={"workdir": str(tmp_path), "lines": orders.DEFAULT_LINES, "customer": 7},
            upstream=upstream or {},
            idempotency_key=f"r-1234567890:{step}",
            compensates=compensates,
        )

    reserved = [orders.reserve(ctx("reserve")) for _ in range(2)]
    issued = [orders.invoice(ctx("invoice")) for _ in range(2)]
    # Then the stock was taken once and one invoice issued
    stock, invoices, _ = work_files(tmp_path)
    assert stock == {**FRESH_STOCK, "widget": 98, "gizmo": 39}
    assert list(invoices) == ["inv-r-123456"] and reserved[0] == reserved[1] and issued[0] == issued[1]
    # When both compensations are delivered twice too
    for _ in range(2):
        orders.void_invoice(ctx("invoice:compensate", {"invoice": issued[0]}, "invoice"))
        orders.release_stock(ctx("reserve:compensate", {"reserve": reserved[0]}, "reserve"))
    # Then the stock is back exactly once and the invoice is void
    stock, invoices, reservations = work_files(tmp_path)
    assert stock == FRESH_STOCK
    assert invoices["inv-r-123456"]["status"] == "void"
    assert reservations["r-1234567890:reserve"]["status"] == "released"


# -- flowkit dev: the README's commands --------------------------------------------------------
def dev(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
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
            *args,
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )


def last_run(tmp_path: Path) -> dict[str, Any]:
    from flowkit.store.sql import SqlStore

    store = SqlStore(f"sqlite:///{tmp_path / '.flowkit' / 'flowkit.db'}")
    try:
        (run,) = store.list_runs("orders", limit=1)
        return {**store.get_run(run["id"]), "steps": states(store, run["id"])}
    finally:
        store.dispose()


@pytest.mark.slow
def test_dev_with_fail_shipping_ends_failed_compensated(tmp_path):
    proc = dev(tmp_path, "-p", "fail_shipping=true")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "state failed (compensated)" in proc.stdout
    table = proc.stdout.split("STEP", 1)[1]
    assert "carrier ground refused parcel 1 (fail_shipping=true)" in table
    for line in ("invoice:compensate  success", "reserve:compensate  success", "ship                failed"):
        assert line in table, table
    run = last_run(tmp_path)
    assert (run["state"], run["outcome"]) == ("failed", "compensated")
    assert_undone(tmp_path / "work", run["id"])


@pytest.mark.slow
def test_dev_large_order_approved_with_approve_all(tmp_path):
    proc = dev(tmp_path, "-p", f"lines={LARGE_ORDER}", "--approve", "all")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    table = proc.stdout.split("STEP", 1)[1]
    assert "approve_large      success" in table and "  ship[1]          success" in table
    run = last_run(tmp_path)
    assert run["state"] == "success" and run["steps"]["approve_large"] == "success"
    assert len(list((tmp_path / "work").glob("label-*.txt"))) == 2


@pytest.mark.slow
def test_dev_large_order_rejected_is_compensated(tmp_path):
    proc = dev(tmp_path, "-p", "approval_threshold=10", "--reject", "approve_large")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "state failed (compensated)" in proc.stdout
    assert "approve_large: rejected by " in proc.stdout and "flowkit dev --reject" in proc.stdout
    run = last_run(tmp_path)
    assert run["outcome"] == "compensated" and run["steps"]["pack"] == "upstream_failed"
    assert_undone(tmp_path / "work", run["id"])
