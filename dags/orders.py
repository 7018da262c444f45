"""Order processing: receive an order, check stock, reserve or back-order, invoice, ship,
notify the customer, and post to the ledger.

The "warehouse" and the "ledger" are JSON files in a work folder (param ``workdir``,
default: a folder under the system temp dir), so the flow does real I/O without servers.
Every write is keyed by the step's idempotency key, so a redelivered step writes once.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from flowkit import Flow, Param, StepContext

DEFAULT_STOCK = {"widget": 12, "gadget": 0, "gizmo": 5}
UNIT_PRICE = {"widget": 4.50, "gadget": 19.99, "gizmo": 7.25}


def _workdir(ctx: StepContext) -> Path:
    base = ctx.params.get("workdir") or str(Path(tempfile.gettempdir()) / "flowkit-orders")
    path = Path(base)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _load(path: Path, default: object) -> object:
    return json.loads(path.read_text()) if path.exists() else default


def _save(path: Path, data: object) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
    tmp.replace(path)  # atomic: a killed worker never leaves half a file


def receive(ctx: StepContext) -> dict:
    """Validate the incoming order and give it an id."""
    qty = ctx.params["quantity"]
    item = ctx.params["item"]
    if qty <= 0:
        raise ValueError(f"quantity must be positive, got {qty}")
    if item not in UNIT_PRICE:
        raise ValueError(f"unknown item {item!r}; we sell {', '.join(sorted(UNIT_PRICE))}")
    order = {"order_id": f"o-{ctx.run_id[:8]}", "customer": ctx.params["customer"],
             "item": item, "quantity": qty}
    _save(_workdir(ctx) / f"{order['order_id']}.order.json", order)
    return order


def check_inventory(ctx: StepContext) -> dict:
    """Read the stock file (created on first use) and report availability."""
    order = ctx.upstream["receive"]
    stock_file = _workdir(ctx) / "stock.json"
    stock = _load(stock_file, None)
    if stock is None:
        stock = dict(DEFAULT_STOCK)
        _save(stock_file, stock)
    available = stock.get(order["item"], 0)
    return {"item": order["item"], "available": available,
            "in_stock": available >= order["quantity"]}


def route(ctx: StepContext) -> str:
    """Branch: reserve stock when there is enough, otherwise back-order."""
    return "reserve" if ctx.upstream["check_inventory"]["in_stock"] else "backorder"


def reserve(ctx: StepContext) -> dict:
    """Take the items out of stock, once per run (idempotent on the run's key)."""
    work = _workdir(ctx)
    reservations = _load(work / "reservations.json", {})
    assert isinstance(reservations, dict)
    if ctx.idempotency_key not in reservations:
        stock = _load(work / "stock.json", dict(DEFAULT_STOCK))
        assert isinstance(stock, dict)
        qty = ctx.params["quantity"]
        item = ctx.params["item"]
        stock[item] -= qty
        reservations[ctx.idempotency_key] = {"item": item, "quantity": qty}
        _save(work / "stock.json", stock)
        _save(work / "reservations.json", reservations)
    return {"reserved": reservations[ctx.idempotency_key]}


def backorder(ctx: StepContext) -> dict:
    """Record a back-order for the supplier."""
    work = _workdir(ctx)
    backorders = _load(work / "backorders.json", {})
    assert isinstance(backorders, dict)
    backorders[ctx.idempotency_key] = {"item": ctx.params["item"], "quantity": ctx.params["quantity"]}
    _save(work / "backorders.json", backorders)
    return {"backordered": True, "eta_days": 7}


def invoice(ctx: StepContext) -> dict:
    """Price the order."""
    qty, item = ctx.params["quantity"], ctx.params["item"]
    subtotal = round(UNIT_PRICE[item] * qty, 2)
    tax = round(subtotal * 0.2, 2)
    inv = {"invoice_id": f"inv-{ctx.run_id[:8]}", "subtotal": subtotal, "tax": tax,
           "total": round(subtotal + tax, 2)}
    _save(_workdir(ctx) / f"{inv['invoice_id']}.json", inv)
    return inv


def ship(ctx: StepContext) -> dict:
    """Write the shipping label."""
    label = f"SHIP {ctx.params['quantity']} x {ctx.params['item']} TO customer {ctx.params['customer']}"
    path = _workdir(ctx) / f"label-{ctx.run_id[:8]}.txt"
    path.write_text(label + "\n")
    return {"label": str(path), "carrier": "express" if ctx.params["express"] else "ground"}


def notify_customer(ctx: StepContext) -> dict:
    """Compose the message for whichever path the order took."""
    if "ship" in ctx.upstream and ctx.upstream["ship"]:
        text = f"Your order ships by {ctx.upstream['ship']['carrier']}."
    else:
        text = "Your order is back-ordered; we will write when it ships."
    outbox = _workdir(ctx) / "outbox.jsonl"
    with outbox.open("a") as fh:
        fh.write(json.dumps({"key": ctx.idempotency_key, "customer": ctx.params["customer"],
                             "text": text}) + "\n")
    return {"message": text}


def update_accounting(ctx: StepContext) -> dict:
    """Post the invoice (if any) to the ledger, once."""
    inv = ctx.upstream.get("invoice")
    ledger = _load(_workdir(ctx) / "ledger.json", {})
    assert isinstance(ledger, dict)
    if inv and ctx.idempotency_key not in ledger:
        ledger[ctx.idempotency_key] = inv["total"]
        _save(_workdir(ctx) / "ledger.json", ledger)
    return {"posted": inv["total"] if inv else 0.0, "ledger_entries": len(ledger)}


flow = (
    Flow(
        "orders",
        owner="commerce",
        tags=["orders", "example"],
        description="Receive, stock check, reserve or back-order, invoice, ship, notify, ledger.",
        params={
            "customer": Param(int, default=42, help="customer id"),
            "item": Param(str, default="widget", help="widget, gadget or gizmo"),
            "quantity": Param(int, default=2),
            "express": False,
            "workdir": Param(str, default="", help="folder for the demo's files"),
        },
    )
    # reads=/writes= name the datasets each step touches, for `flowkit lineage --dataset`.
    .step("receive", receive, writes=["orders://incoming"])
    .step("check_inventory", check_inventory, after="receive", retries=3, timeout="30s",
          reads=["warehouse://stock"])
    .branch("route", route, after="check_inventory")
    .step("reserve", reserve, after="route", reads=["warehouse://stock"], writes=["warehouse://stock"])
    .step("backorder", backorder, after="route", writes=["warehouse://backorders"])
    .step("invoice", invoice, after="reserve", reads=["orders://incoming"], writes=["billing://invoices"])
    .step("ship", ship, after="invoice", retries=2, retry_backoff="2s", writes=["shipping://labels"])
    .step("notify_customer", notify_customer, after=["ship", "backorder"], trigger="none_failed",
          writes=["mail://outbox"])
    # after invoice too: ctx.upstream holds direct upstreams only (skipped on the back-order path)
    .step("update_accounting", update_accounting, after=["notify_customer", "invoice"], trigger="none_failed",
          reads=["billing://invoices"], writes=["finance://ledger"])
)
