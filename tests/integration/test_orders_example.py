"""The orders example (dags/orders.py) on real processes: a scheduler and two prefork
workers over PostgreSQL and Redis. Shipping fails and the run compensates; a large order
waits for `flowkit approve`. One cluster for the module (the happy path is in
test_end_to_end.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flowkit.store.sql import SqlStore

from .procs import Cluster, wait_for
from .services import cluster_on_fresh_services

ROOT = Path(__file__).resolve().parents[2]
FRESH_STOCK = {"widget": 100, "gadget": 0, "gizmo": 40}  # dags/orders.py DEFAULT_STOCK


@pytest.fixture(scope="module")
def orders(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cluster, SqlStore]]:
    """A fresh PostgreSQL database and Redis db, a scheduler and two prefork workers."""
    with cluster_on_fresh_services(
        tmp_path_factory.mktemp("orders"),
        "dags",
        workers=[("worker-a", 2), ("worker-b", 2)],
        FLOWKIT_HEARTBEAT_SECONDS="1",
    ) as got:
        yield got


def _ended(store: SqlStore, run_id: str, cluster: Cluster) -> dict[str, Any]:
    return wait_for(
        lambda: (r := store.get_run(run_id))["state"] in ("success", "failed") and r,
        30,
        f"run {run_id} to end",
        cluster,
    )


def _states(store: SqlStore, run_id: str) -> dict[str, str]:
    return {s["step"]: s["state"] for s in store.step_runs(run_id)}


def _files(folder: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    return (json.loads((folder / "stock.json").read_text()), json.loads((folder / "invoices.json").read_text()))


def test_failed_shipping_is_compensated_on_prefork_workers(orders, tmp_path):
    cluster, store = orders
    # Given the default order (two lines) and a carrier that refuses every parcel
    run_id = cluster.cli("trigger", "orders", "-p", f"workdir={tmp_path}", "-p", "fail_shipping=true").stdout.strip()
    # When the run ends
    run = _ended(store, run_id, cluster)
    # Then it failed, and the compensations undid the invoice and the reservation
    assert (run["state"], run["outcome"]) == ("failed", "compensated")
    st = _states(store, run_id)
    assert (st["ship[0]"], st["ship[1]"], st["ship"]) == ("failed", "failed", "failed")
    assert st["notify_customer"] == st["update_accounting"] == "upstream_failed"
    assert st["invoice:compensate"] == st["reserve:compensate"] == "success"
    for instance in ("ship[0]", "ship[1]"):  # each shipment retried on its own, on a worker
        attempts = store.attempts(run_id, instance)
        assert [a["state"] for a in attempts] == ["failed"] * 3 and all(a["worker"] for a in attempts)
    void, release = store.attempts(run_id, "invoice:compensate"), store.attempts(run_id, "reserve:compensate")
    assert len(void) == len(release) == 1 and void[0]["ended_at"] <= release[0]["started_at"]
    # ... the work folder shows the stock back and the invoice void
    stock, invoices = _files(tmp_path)
    assert stock == FRESH_STOCK
    assert invoices[f"inv-{run_id[:8]}"]["status"] == "void"
    # ... the CLI says so, and no slot is left held
    assert "state failed (compensated)" in cluster.cli("runs", "show", run_id).stdout
    ended = [e for e in store.events(run_id) if e["action"] == "run_state" and e["new_state"] == "failed"]
    assert "failed steps: ship; compensated: invoice:compensate, reserve:compensate" in ended[-1]["reason"]
    assert store.ledger_balance() == {k: (0, 0) for k in store.ledger_balance()}


def test_large_order_waits_for_flowkit_approve(orders, tmp_path):
    cluster, store = orders
    # Given an order above the approval threshold
    run_id = cluster.cli("trigger", "orders", "-p", f"workdir={tmp_path}", "-p", "approval_threshold=10").stdout.strip()
    wait_for(
        lambda: _states(store, run_id).get("approve_large") == "awaiting_approval", 20, "the approval to wait", cluster
    )
    assert _states(store, run_id)["pack"] == "pending"
    # When someone approves it from the CLI
    out = cluster.cli("approve", run_id, "approve_large", "--by", "ops", "--reason", "known buyer").stdout
    assert f"run {run_id} step approve_large: approved by ops" in out
    # Then the order ships, one parcel per line, and the stock is taken
    run = _ended(store, run_id, cluster)
    assert run["state"] == "success" and run["outcome"] is None
    assert [r["line"] for r in store.results(run_id)["ship"]] == [1, 2]
    stock, invoices = _files(tmp_path)
    assert stock == {**FRESH_STOCK, "widget": 98, "gizmo": 39}
    assert invoices[f"inv-{run_id[:8]}"]["status"] == "issued"
