"""Order processing: receive an order of several lines, check stock, reserve or back-order,
invoice, ask a person to approve a large order, ship one parcel per order line, notify the
customer and post to the ledger. When shipping fails (or the approval is refused) the run
undoes what it did: the invoice is voided, then the reserved stock is released.

The "warehouse", the "billing system" and the "ledger" are JSON files in a work folder
(param ``workdir``, default: a folder under the system temp dir), so the flow does real I/O
without servers. Every write is keyed by the step's idempotency key (or the id it derives),
so a redelivered or retried step writes once.

Try it (no servers needed)::

    flowkit dev orders                                  # small order: ships, exit 0
    flowkit dev orders -p fail_shipping=true            # carrier refuses: failed (compensated)
    flowkit dev orders -p approval_threshold=10 --approve all        # a large order, approved
    flowkit dev orders -p approval_threshold=10 --reject approve_large
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from _files import load_json, save_json, workdir

from flowkit import Flow, Param, StepContext

DEFAULT_STOCK = {"widget": 100, "gadget": 0, "gizmo": 40}
UNIT_PRICE = {"widget": 4.50, "gadget": 19.99, "gizmo": 7.25}
TAX_RATE = 0.2
#: The order ``flowkit dev orders`` places with no params: two lines, total 19.50.
DEFAULT_LINES = [{"item": "widget", "quantity": 2}, {"item": "gizmo", "quantity": 1}]


# -- stock and order lines (file helpers: dags/_files.py, shared by the examples) ------
def _stock(work: Path) -> dict[str, int]:
    """The warehouse's stock, created with DEFAULT_STOCK on first use."""
    stock: dict[str, int] | None = load_json(work / "stock.json", None)
    if stock is None:
        stock = dict(DEFAULT_STOCK)
        save_json(work / "stock.json", stock)
    return stock


def _needed(lines: list[dict[str, Any]]) -> dict[str, int]:
    """Quantity per item over all lines (two lines may name the same item)."""
    needed: dict[str, int] = {}
    for line in lines:
        needed[line["item"]] = needed.get(line["item"], 0) + line["quantity"]
    return needed


def _lines(ctx: StepContext) -> list[dict[str, Any]]:
    """The order's lines, checked: a non-empty list of {"item": known item, "quantity": n > 0}."""
    lines: list[dict[str, Any]] = ctx.params["lines"]
    if not lines:
        raise ValueError('the order has no lines; pass e.g. -p lines=\'[{"item": "widget", "quantity": 2}]\'')
    for number, line in enumerate(lines, 1):
        if not isinstance(line, dict) or set(line) != {"item", "quantity"}:
            raise ValueError(f'line {number} is {line!r}; each line is {{"item": name, "quantity": n}}')
        if line["item"] not in UNIT_PRICE:
            raise ValueError(f"line {number}: unknown item {line['item']!r}; we sell {', '.join(sorted(UNIT_PRICE))}")
        quantity = line["quantity"]
        if isinstance(quantity, bool) or not isinstance(quantity, int) or quantity <= 0:
            raise ValueError(f"line {number}: quantity must be a positive whole number, got {quantity!r}")
    return lines


# -- the steps ---------------------------------------------------------------------------
def receive(ctx: StepContext) -> dict[str, Any]:
    """Check the order's lines and give the order an id."""
    order = {"order_id": f"o-{ctx.run_id[:8]}", "customer": ctx.params["customer"], "lines": _lines(ctx)}
    save_json(workdir(ctx, "orders") / f"{order['order_id']}.order.json", order)
    return order


def check_inventory(ctx: StepContext) -> dict[str, Any]:
    """Read the stock (created on first use) and report, per item, whether there is enough."""
    stock = _stock(workdir(ctx, "orders"))
    needed = _needed(ctx.upstream["receive"]["lines"])
    short = {item: qty - stock.get(item, 0) for item, qty in needed.items() if stock.get(item, 0) < qty}
    return {"needed": needed, "short": short, "in_stock": not short}


def route(ctx: StepContext) -> str:
    """Branch: reserve the stock when every line can be served, otherwise back-order."""
    return "reserve" if ctx.upstream["check_inventory"]["in_stock"] else "backorder"


def reserve(ctx: StepContext) -> dict[str, Any]:
    """Take every line's items out of stock, once per run (keyed by the step's idempotency key)."""
    work = workdir(ctx, "orders")
    reservations = load_json(work / "reservations.json", {})
    if ctx.idempotency_key not in reservations:
        stock = _stock(work)
        needed = _needed(_lines(ctx))
        for item, qty in needed.items():
            stock[item] -= qty
        reservations[ctx.idempotency_key] = {"items": needed, "status": "reserved"}
        save_json(work / "stock.json", stock)
        save_json(work / "reservations.json", reservations)
    return {"reservation": ctx.idempotency_key, "items": reservations[ctx.idempotency_key]["items"]}


def release_stock(ctx: StepContext) -> dict[str, Any]:
    """Compensation of reserve: put the reserved items back in stock, once."""
    work = workdir(ctx, "orders")
    key = ctx.result_of("reserve")["reservation"]  # ctx.compensates == "reserve"
    reservations = load_json(work / "reservations.json", {})
    held = reservations[key]
    if held["status"] == "reserved":  # a second delivery finds it released and does nothing
        stock = _stock(work)
        for item, qty in held["items"].items():
            stock[item] += qty
        held["status"] = "released"
        save_json(work / "stock.json", stock)
        save_json(work / "reservations.json", reservations)
    return {"released": held["items"]}


def backorder(ctx: StepContext) -> dict[str, Any]:
    """Record a back-order for the supplier."""
    work = workdir(ctx, "orders")
    backorders = load_json(work / "backorders.json", {})
    backorders[ctx.idempotency_key] = {"lines": _lines(ctx), "short": ctx.upstream.get("check_inventory")}
    save_json(work / "backorders.json", backorders)
    return {"backordered": True, "eta_days": 7}


def invoice(ctx: StepContext) -> dict[str, Any]:
    """Price every line and issue the invoice, once (the billing file is keyed by invoice id)."""
    lines = [
        {
            **line,
            "unit_price": UNIT_PRICE[line["item"]],
            "amount": round(UNIT_PRICE[line["item"]] * line["quantity"], 2),
        }
        for line in _lines(ctx)
    ]
    subtotal = round(sum(line["amount"] for line in lines), 2)
    tax = round(subtotal * TAX_RATE, 2)
    inv = {
        "invoice_id": f"inv-{ctx.run_id[:8]}",
        "customer": ctx.params["customer"],
        "lines": lines,
        "subtotal": subtotal,
        "tax": tax,
        "total": round(subtotal + tax, 2),
    }
    work = workdir(ctx, "orders")
    invoices = load_json(work / "invoices.json", {})
    if inv["invoice_id"] not in invoices:
        invoices[inv["invoice_id"]] = {"total": inv["total"], "status": "issued", "key": ctx.idempotency_key}
        save_json(work / "invoices.json", invoices)
    return inv


def void_invoice(ctx: StepContext) -> dict[str, Any]:
    """Compensation of invoice: mark the invoice void (a credit note in a real system), once."""
    invoice_id = ctx.result_of("invoice")["invoice_id"]  # ctx.compensates == "invoice"
    work = workdir(ctx, "orders")
    invoices = load_json(work / "invoices.json", {})
    invoices[invoice_id]["status"] = "void"
    save_json(work / "invoices.json", invoices)
    return {"voided": invoice_id}


def review(ctx: StepContext) -> list[str]:
    """Branch: a total above approval_threshold goes to approve_large, a smaller one skips it.

    Choosing nothing (an empty list) skips every downstream step of the branch."""
    total = ctx.upstream["invoice"]["total"]
    return ["approve_large"] if total > ctx.params["approval_threshold"] else []


def pack(ctx: StepContext) -> list[dict[str, Any]]:
    """One parcel per order line: the list that ship maps over."""
    carrier = "express" if ctx.params["express"] else "ground"
    return [
        {"line": number, "item": line["item"], "quantity": line["quantity"], "carrier": carrier}
        for number, line in enumerate(ctx.upstream["invoice"]["lines"], 1)
    ]


def ship(ctx: StepContext) -> dict[str, Any]:
    """Hand one parcel (ctx.item) to the carrier and write its label, once per parcel.

    fail_shipping=true makes the carrier refuse every parcel, to show the compensation."""
    parcel = ctx.item
    if ctx.params["fail_shipping"]:
        raise RuntimeError(f"carrier {parcel['carrier']} refused parcel {parcel['line']} (fail_shipping=true)")
    label = f"SHIP {parcel['quantity']} x {parcel['item']} BY {parcel['carrier']} TO customer {ctx.params['customer']}"
    path = workdir(ctx, "orders") / f"label-{ctx.run_id[:8]}-{ctx.index}.txt"
    path.write_text(label + "\n")  # the same content on a second delivery
    return {"label": str(path), "line": parcel["line"], "carrier": parcel["carrier"]}


def notify_customer(ctx: StepContext) -> dict[str, Any]:
    """Compose the message for whichever path the order took, and queue it once."""
    parcels = ctx.upstream.get("ship")
    if parcels:
        text = f"Your order ships in {len(parcels)} parcel(s) by {parcels[0]['carrier']}."
    else:
        text = "Your order is back-ordered; we will write when it ships."
    work = workdir(ctx, "orders")
    outbox = load_json(work / "outbox.json", {})
    outbox[ctx.idempotency_key] = {"customer": ctx.params["customer"], "text": text}
    save_json(work / "outbox.json", outbox)
    return {"message": text}


def update_accounting(ctx: StepContext) -> dict[str, Any]:
    """Post the invoice (if any) to the ledger, once."""
    inv = ctx.upstream.get("invoice")
    ledger = load_json(workdir(ctx, "orders") / "ledger.json", {})
    if inv and ctx.idempotency_key not in ledger:
        ledger[ctx.idempotency_key] = inv["total"]
        save_json(workdir(ctx, "orders") / "ledger.json", ledger)
    return {"posted": inv["total"] if inv else 0.0, "ledger_entries": len(ledger)}


flow = (
    Flow(
        "orders",
        owner="commerce",
        tags=["orders", "example"],
        description="Receive, stock check, reserve or back-order, invoice, approve large orders, "
        "ship each line, notify, ledger; void and release when shipping fails.",
        params={
            "customer": Param(int, default=42, help="customer id"),
            "lines": Param(
                list,
                default=DEFAULT_LINES,
                help='order lines: [{"item": "widget", "quantity": 2}, ...]; '
                "items: widget, gadget (never in stock), gizmo",
            ),
            "express": False,
            "approval_threshold": Param(
                float, default=100.0, help="orders with a larger total wait for a person's approval"
            ),
            "fail_shipping": Param(bool, default=False, help="make the carrier refuse every parcel"),
            "workdir": Param(str, default="", help="folder for the demo's files"),
        },
    )
    # reads=/writes= name the datasets each step touches, for `flowkit lineage --dataset`.
    .step("receive", receive, writes=["orders://incoming"])
    .step("check_inventory", check_inventory, after="receive", retries=3, timeout="30s", reads=["warehouse://stock"])
    .branch("route", route, after="check_inventory")
    .step(
        "reserve",
        reserve,
        after="route",
        compensate=release_stock,
        reads=["warehouse://stock"],
        writes=["warehouse://stock"],
    )
    .step("backorder", backorder, after="route", writes=["warehouse://backorders"])
    .step(
        "invoice",
        invoice,
        after="reserve",
        compensate=void_invoice,
        reads=["orders://incoming"],
        writes=["billing://invoices"],
    )
    .branch("review", review, after="invoice")
    .approval("approve_large", after="review", timeout="24h")  # no decision in a day: rejected
    # the approval is skipped for a small order: none_failed runs pack after the invoice alone
    # (and skips it on the back-order path, where nothing upstream succeeded)
    .step("pack", pack, after=["invoice", "approve_large"], trigger="none_failed")
    .map("ship", ship, over="pack", retries=2, retry_backoff="1s", timeout="30s", writes=["shipping://labels"])
    .step(
        "notify_customer", notify_customer, after=["ship", "backorder"], trigger="none_failed", writes=["mail://outbox"]
    )
    # after invoice too: ctx.upstream holds direct upstreams only (skipped on the back-order path)
    .step(
        "update_accounting",
        update_accounting,
        after=["notify_customer", "invoice"],
        trigger="none_failed",
        reads=["billing://invoices"],
        writes=["finance://ledger"],
    )
)
