"""Connected-vehicle telematics: ingest a vehicle's sensor readings, stage them, enrich
with the vehicle's service history, predict which components are about to fail, then
book a service at a depot that has the parts (ordering them first when no depot does)
and tell the driver.

Everything lives in a work folder (param ``workdir``, default: a folder under the system
temp dir), so the flow does real I/O without servers:

- ``raw/`` and ``staging/``: the readings as CSV (synthetic but deterministic: seeded by
  the vehicle id, with a developing fault injected for param ``fault``);
- ``history/<vehicle>.json``: model, mileage and last service, created on first use;
- ``depots.json``: each depot's distance, daily slots and parts stock, created on first use;
- ``plans/``, ``purchase_orders/``, ``bookings.json`` and ``outbox.jsonl``: what the flow
  decided and did. Every effect is keyed by the step's idempotency key, so a redelivered
  step writes once.

Which path a run takes depends on param ``fault``:

- ``brake_pads`` (the default): the pads are predicted to wear out; depot-north stocks
  pads, so ``pick_depot`` follows ``book_appointment`` and ``order_part`` is skipped;
- ``oil_pump``: no depot stocks oil pumps, so ``pick_depot`` follows ``order_part``
  (a purchase order is written) and ``book_appointment`` joins after it;
- ``none``: a healthy vehicle; ``pick_depot`` follows neither, and ``notify_driver`` sends
  an all-clear (``cooling``, ``battery`` and ``wheel_bearing`` are the other faults).
"""

from __future__ import annotations

import csv
import hashlib
import json
import random
import re
import shutil
from datetime import date, timedelta
from pathlib import Path

from _files import load_json, save_json, sha256, workdir

from flowkit import Dataset, Deadline, Flow, Param, StepContext

SENSORS = ("engine_temp_c", "oil_pressure_kpa", "brake_pad_mm", "battery_v", "vibration_g")

#: component -> (sensor, warning level, failure limit, replacement part). A limit below
#: its warning level means "low is bad" (pressure, pad thickness, volts).
COMPONENTS: dict[str, tuple[str, float, float, str]] = {
    "cooling": ("engine_temp_c", 100.0, 112.0, "thermostat"),
    "oil_pump": ("oil_pressure_kpa", 220.0, 150.0, "oil-pump"),
    "brake_pads": ("brake_pad_mm", 5.0, 3.0, "brake-pad-set"),
    "battery": ("battery_v", 12.2, 11.8, "battery-12v"),
    "wheel_bearing": ("vibration_g", 0.6, 1.0, "wheel-bearing"),
}

#: part -> (unit price, supplier lead time in days)
PART_CATALOG = {
    "thermostat": (48.00, 2),
    "oil-pump": (312.50, 5),
    "brake-pad-set": (89.90, 1),
    "battery-12v": (139.00, 1),
    "wheel-bearing": (75.40, 3),
}

DEFAULT_DEPOTS = {
    "depot-central": {
        "distance_km": 4.0,
        "slots_per_day": 4,
        "stock": {"battery-12v": 6, "thermostat": 2, "wheel-bearing": 1, "brake-pad-set": 0},
    },
    "depot-north": {
        "distance_km": 11.5,
        "slots_per_day": 3,
        "stock": {"brake-pad-set": 8, "battery-12v": 1, "wheel-bearing": 0},
    },
    "depot-east": {
        "distance_km": 23.0,
        "slots_per_day": 2,
        "stock": {"brake-pad-set": 2, "wheel-bearing": 3, "thermostat": 1},
    },
}

MODELS = ("Volta E-Van", "Kestrel 2.0 TDI", "Atlas HD Truck", "Mira Hatch")
SERVICE_INTERVAL_KM = 15_000
_VEHICLE_RE = re.compile(r"^[A-Za-z0-9-]{1,32}$")


# -- helpers (the file helpers are in dags/_files.py, shared by the examples) -------------
def _seed(vehicle: str) -> int:
    """A stable seed (``hash()`` of a str changes between processes)."""
    return int.from_bytes(hashlib.sha256(vehicle.encode()).digest()[:8], "big")


def _plan_path(ctx: StepContext) -> Path:
    return workdir(ctx, "telematics", "plans") / f"{ctx.run_id}.json"


def _rolling_means(xs: list[float], window: int) -> list[float]:
    total = sum(xs[:window])
    out = [total / window]
    for i in range(window, len(xs)):
        total += xs[i] - xs[i - window]
        out.append(total / window)
    return out


def _slope(ys: list[float]) -> float:
    """Least-squares slope of ``ys`` against its index (units per sample)."""
    n = len(ys)
    mean_x, mean_y = (n - 1) / 2, sum(ys) / n
    cov = sum((i - mean_x) * (y - mean_y) for i, y in enumerate(ys))
    var = sum((i - mean_x) ** 2 for i in range(n))
    return cov / var if var else 0.0


def _severity(value: float, warn: float, limit: float) -> float:
    """0 at (or on the good side of) the warning level, 1 at (or past) the failure limit."""
    return min(1.0, max(0.0, (value - warn) / (limit - warn)))


# -- steps --------------------------------------------------------------------------------
def ingest(ctx: StepContext) -> dict:
    """Receive the vehicle's sensor readings (synthetic, seeded by the vehicle id) as CSV."""
    vehicle, n, fault = ctx.params["vehicle"], ctx.params["samples"], ctx.params["fault"]
    if not _VEHICLE_RE.match(vehicle):
        raise ValueError(f"vehicle id {vehicle!r} must be 1-32 letters, digits or '-'")
    if not 50 <= n <= 100_000:
        raise ValueError(f"samples must be between 50 and 100000, got {n}")
    if fault != "none" and fault not in COMPONENTS:
        raise ValueError(f"unknown fault {fault!r}; use none or one of {', '.join(COMPONENTS)}")

    rng = random.Random(_seed(vehicle))
    base = {
        "engine_temp_c": rng.uniform(86, 93),
        "oil_pressure_kpa": rng.uniform(280, 320),
        "brake_pad_mm": rng.uniform(6.5, 9.0),
        "battery_v": rng.uniform(12.45, 12.75),
        "vibration_g": rng.uniform(0.18, 0.32),
    }
    noise = {
        "engine_temp_c": 1.5,
        "oil_pressure_kpa": 8.0,
        "brake_pad_mm": 0.05,
        "battery_v": 0.04,
        "vibration_g": 0.04,
    }
    odometer = float(rng.randrange(20_000, 140_000))
    # A developing fault drifts its sensor past the failure limit, faster towards the end.
    target = None
    if fault != "none":
        sensor, warn, limit, _part = COMPONENTS[fault]
        target = (sensor, limit + 0.25 * (limit - warn))

    path = workdir(ctx, "telematics", "raw") / f"{vehicle}-{ctx.run_id[:8]}.csv"
    tmp = path.with_suffix(".csv.tmp")
    first_km = odometer
    with tmp.open("w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["sample", "odometer_km", *SENSORS])
        for i in range(n):
            progress = i / (n - 1)
            odometer += 0.4 + rng.random() * 0.2
            row = []
            for s in SENSORS:
                value = base[s] + rng.gauss(0.0, noise[s])
                if s == "brake_pad_mm":
                    value -= 0.0002 * i  # ordinary wear
                if target and target[0] == s:
                    value += (target[1] - base[s]) * progress**2
                row.append(round(max(value, 0.0), 3))
            out.writerow([i, round(odometer, 1), *row])
    tmp.replace(path)
    ctx.log.info("ingested %s readings for %s into %s", n, vehicle, path)
    return {
        "vehicle": vehicle,
        "path": str(path),
        "samples": n,
        "first_odometer_km": round(first_km, 1),
        "odometer_km": round(odometer, 1),
    }


def stage(ctx: StepContext) -> dict:
    """Copy the raw file into the staging folder and check that the copy is intact."""
    raw = Path(ctx.upstream["ingest"]["path"])
    staged = workdir(ctx, "telematics", "staging") / raw.name
    tmp = staged.with_suffix(".csv.tmp")
    shutil.copyfile(raw, tmp)
    source_sum, copy_sum = sha256(raw), sha256(tmp)
    if source_sum != copy_sum:
        tmp.unlink(missing_ok=True)
        raise OSError(f"staged copy of {raw} does not match its source (checksum); retrying")
    tmp.replace(staged)
    return {"path": str(staged), "sha256": copy_sum, "bytes": staged.stat().st_size}


def enrich(ctx: StepContext) -> dict:
    """Look up the vehicle's history (created on first use) and bring its mileage up to date."""
    reading = ctx.upstream["ingest"]
    vehicle = reading["vehicle"]
    path = workdir(ctx, "telematics", "history") / f"{vehicle}.json"
    history = load_json(path, None)
    if history is None:
        rng = random.Random(_seed(vehicle) ^ 0x5EED)
        history = {
            "vehicle": vehicle,
            "model": rng.choice(MODELS),
            "year": rng.randrange(2015, 2025),
            "mileage_km": reading["first_odometer_km"],
            "last_service_km": round(reading["first_odometer_km"] - rng.randrange(2_000, 16_000), 1),
            "service_interval_km": SERVICE_INTERVAL_KM,
        }
    assert isinstance(history, dict)
    if reading["odometer_km"] > history["mileage_km"]:  # an odometer never goes back
        history["mileage_km"] = reading["odometer_km"]
    save_json(path, history)
    since = round(history["mileage_km"] - history["last_service_km"], 1)
    return {
        "model": history["model"],
        "year": history["year"],
        "mileage_km": history["mileage_km"],
        "km_since_service": since,
        "service_due": since >= history["service_interval_km"],
    }


def analyze(ctx: StepContext) -> dict:
    """Score each component from its sensor's rolling mean and recent trend; list the likely failures.

    A component's score is ``0.6 * severity(latest rolling mean) + 0.4 * severity(value
    projected one fifth of the observed span ahead on the recent trend)``, where severity
    is 0 at the warning level and 1 at the failure limit; an overdue service adds 0.1 to
    components already past their warning level. Scores >= ``min_score`` are likely failures.
    """
    staged = ctx.upstream["stage"]
    history = ctx.upstream["enrich"]
    path = Path(staged["path"])
    if sha256(path) != staged["sha256"]:
        raise ValueError(f"{path} changed since it was staged (checksum mismatch)")
    columns: dict[str, list[float]] = {s: [] for s in SENSORS}
    with path.open(newline="") as fh:
        for row in csv.DictReader(fh):
            for s in SENSORS:
                columns[s].append(float(row[s]))
    n = len(columns[SENSORS[0]])
    window = max(5, n // 10)
    horizon = n // 5

    components: dict[str, dict[str, float | int | None]] = {}
    failing: list[dict[str, str | float]] = []
    for name, (sensor, warn, limit, part) in COMPONENTS.items():
        means = _rolling_means(columns[sensor], window)
        level = means[-1]
        recent = columns[sensor][n // 2 :]
        slope = _slope(recent)
        projected = level + slope * horizon
        level_sev = _severity(level, warn, limit)
        score = 0.6 * level_sev + 0.4 * _severity(projected, warn, limit)
        if history["service_due"] and level_sev > 0:
            score += 0.1
        score = round(min(score, 1.0), 3)
        heading_to_limit = (limit - level) * slope > 0
        to_limit = 0 if level_sev >= 1 else (round((limit - level) / slope) if heading_to_limit else None)
        components[name] = {
            "score": score,
            "level": round(level, 3),
            "slope_per_100": round(slope * 100, 4),
            "samples_to_limit": to_limit,
        }
        if score >= ctx.params["min_score"]:
            failing.append({"component": name, "part": part, "score": score})
    failing.sort(key=lambda f: -float(f["score"]))
    ctx.log.info("%s: likely failures %s", ctx.params["vehicle"], failing or "none")
    return {
        "vehicle": ctx.params["vehicle"],
        "failing": failing,
        "components": components,
        "service_due": history["service_due"],
    }


def pick_depot(ctx: StepContext) -> str | list[str]:
    """Branch: book at the nearest depot stocking every needed part, else order the parts.

    Follows nothing when no component is failing. The plan (parts, depot, missing parts)
    is saved for the steps after the branch, which see only the branch's choice.
    """
    failing = ctx.upstream["analyze"]["failing"]
    parts = sorted({f["part"] for f in failing})
    depots_file = workdir(ctx, "telematics") / "depots.json"
    depots = load_json(depots_file, None)
    if depots is None:
        depots = json.loads(json.dumps(DEFAULT_DEPOTS))
        save_json(depots_file, depots)
    assert isinstance(depots, dict)

    def in_stock(name: str) -> list[str]:
        return [p for p in parts if depots[name]["stock"].get(p, 0) > 0]

    by_distance = sorted(depots, key=lambda d: depots[d]["distance_km"])
    plan: dict[str, object] = {"parts": parts, "components": [f["component"] for f in failing]}
    choice: str | list[str]
    if not parts:
        plan.update(depot=None, missing=[])
        choice = []
    else:
        complete = [d for d in by_distance if len(in_stock(d)) == len(parts)]
        if complete:
            plan.update(depot=complete[0], missing=[])
            choice = "book_appointment"
        else:  # the depot that already has the most of them (nearest on ties) gets the rest
            best = max(by_distance, key=lambda d: (len(in_stock(d)), -depots[d]["distance_km"]))
            plan.update(depot=best, missing=[p for p in parts if p not in in_stock(best)])
            choice = "order_part"
    save_json(_plan_path(ctx), plan)
    return choice


def order_part(ctx: StepContext) -> dict:
    """Write a purchase order for the parts no depot has, delivered to the chosen depot (once)."""
    plan = load_json(_plan_path(ctx), None)
    assert isinstance(plan, dict)
    path = workdir(ctx, "telematics", "purchase_orders") / f"po-{ctx.run_id[:8]}.json"
    po = load_json(path, None)
    if not (isinstance(po, dict) and po.get("key") == ctx.idempotency_key):
        lines = [{"part": p, "quantity": 1, "unit_price": PART_CATALOG[p][0]} for p in plan["missing"]]
        po = {
            "po_id": path.stem,
            "key": ctx.idempotency_key,
            "vehicle": ctx.params["vehicle"],
            "deliver_to": plan["depot"],
            "lines": lines,
            "total": round(sum(line["unit_price"] * line["quantity"] for line in lines), 2),
            "eta_days": max(PART_CATALOG[p][1] for p in plan["missing"]),
        }
        save_json(path, po)
    return {
        "po_id": po["po_id"],
        "deliver_to": po["deliver_to"],
        "parts": plan["missing"],
        "total": po["total"],
        "eta_days": po["eta_days"],
    }


def book_appointment(ctx: StepContext) -> dict:
    """Book the first free slot at the chosen depot, after any ordered parts arrive (once)."""
    plan = load_json(_plan_path(ctx), None)
    assert isinstance(plan, dict)
    work = workdir(ctx, "telematics")
    bookings = load_json(work / "bookings.json", {})
    assert isinstance(bookings, dict)
    if ctx.idempotency_key not in bookings:
        depots = load_json(work / "depots.json", DEFAULT_DEPOTS)
        assert isinstance(depots, dict)
        depot = plan["depot"]
        capacity = depots[depot]["slots_per_day"]
        po = ctx.upstream.get("order_part")
        day = date.today() + timedelta(days=1 + (po["eta_days"] if po else 0))
        while True:
            taken = sum(1 for b in bookings.values() if b["depot"] == depot and b["date"] == day.isoformat())
            if taken < capacity:
                break
            day += timedelta(days=1)
        bookings[ctx.idempotency_key] = {
            "booking_id": f"bk-{ctx.run_id[:8]}",
            "vehicle": ctx.params["vehicle"],
            "depot": depot,
            "date": day.isoformat(),
            "time": f"{8 + 2 * taken:02d}:00",
            "parts": plan["parts"],
            "components": plan["components"],
            "po_id": po["po_id"] if po else None,
        }
        save_json(work / "bookings.json", bookings)
    booking: dict = bookings[ctx.idempotency_key]
    return booking


def notify_driver(ctx: StepContext) -> dict:
    """Tell the driver what was found and when to bring the vehicle in (one message per run)."""
    analysis = ctx.upstream["analyze"]
    booking = ctx.upstream.get("book_appointment")
    vehicle = ctx.params["vehicle"]
    if booking:
        found = ", ".join(f"{f['component'].replace('_', ' ')} ({f['score']:.2f})" for f in analysis["failing"])
        text = (
            f"Vehicle {vehicle}: likely to fail soon: {found}. Service booked at "
            f"{booking['depot']} on {booking['date']} at {booking['time']}."
        )
        if booking["po_id"]:
            text += f" Parts are on order ({booking['po_id']})."
    else:
        text = f"Vehicle {vehicle}: all monitored components look healthy; no service needed."
    outbox = workdir(ctx, "telematics") / "outbox.jsonl"
    sent = {json.loads(line)["key"] for line in outbox.read_text().splitlines()} if outbox.exists() else set()
    if ctx.idempotency_key not in sent:
        with outbox.open("a") as fh:
            fh.write(json.dumps({"key": ctx.idempotency_key, "vehicle": vehicle, "text": text}) + "\n")
    return {"message": text, "outbox": str(outbox)}


flow = (
    Flow(
        "telematics",
        owner="fleet",
        tags=["telematics", "predictive-maintenance", "example"],
        description="Ingest sensor data, stage, enrich, predict failures, book or order parts, notify.",
        # The demo run takes seconds: 15 minutes from its creation leaves ample slack.
        deadline=Deadline(within="15m"),
        params={
            "vehicle": Param(str, default="VIN123", help="vehicle id (letters, digits, '-')"),
            "samples": Param(int, default=500, help="number of sensor readings to ingest"),
            "fault": Param(
                str,
                default="brake_pads",
                help="fault to simulate: none, cooling, oil_pump, brake_pads, battery, wheel_bearing",
            ),
            "min_score": Param(float, default=0.5, help="score (0-1) from which a component is failing"),
            "workdir": Param(str, default="", help="folder for the demo's files"),
        },
    )
    .step("ingest", ingest, timeout="60s", writes=["telemetry://raw"])
    .step(
        "stage",
        stage,
        after="ingest",
        retries=2,
        retry_backoff="1s",
        reads=["telemetry://raw"],
        writes=["telemetry://staging"],
    )
    .step("enrich", enrich, after="ingest", retries=2, reads=["fleet://vehicle-history"])
    .step(
        "analyze",
        analyze,
        after=["stage", "enrich"],
        timeout="60s",
        reads=["telemetry://staging"],
        writes=["fleet://predictions"],
    )
    .branch("pick_depot", pick_depot, after="analyze", reads=["depots://inventory"])
    .step("order_part", order_part, after="pick_depot", retries=3, retry_backoff="2s", writes=["purchasing://orders"])
    .step(
        "book_appointment",
        book_appointment,
        after=["pick_depot", "order_part"],
        trigger="none_failed",
        writes=["depots://bookings"],
    )
    .step(
        "notify_driver",
        notify_driver,
        after=["analyze", "book_appointment"],
        trigger="none_failed",
        writes=["mail://outbox"],
    )
)


def fleet_summary(ctx: StepContext) -> dict:
    """Fold the maintenance plans written so far into one fleet report."""
    plans = [load_json(path, {}) for path in sorted(workdir(ctx, "telematics", "plans").glob("*.json"))]
    summary = {
        "plans": len(plans),
        "needing_service": sum(1 for plan in plans if plan.get("components")),
        "parts_missing": sorted({part for plan in plans for part in plan.get("missing") or []}),
    }
    report_path = workdir(ctx, "telematics") / "fleet_report.json"
    save_json(report_path, {**summary, "run": ctx.run_id})
    return {**summary, "report": str(report_path)}


#: Started by each telematics run's prediction write (a dataset trigger): one report
#: per analysed vehicle run, never a burst folded into one (see README, "Flow and dataset triggers").
fleet_report = Flow(
    "fleet_report",
    owner="fleet",
    tags=["telematics", "example"],
    description="Fold the maintenance plans so far into a fleet report whenever new predictions land.",
    params={"workdir": Param(str, default="", help="folder for the demo's files")},
    trigger_on=[Dataset("fleet://predictions")],
    deadline=Deadline(within="10m"),
).step("summarize", fleet_summary, reads=["fleet://predictions"], writes=["fleet://report"])
