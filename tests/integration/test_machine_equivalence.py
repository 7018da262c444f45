"""One state machine on every backend: every flow of tests/dags and of the examples, and the
operators' actions on them, run through the store on SQLite, on PostgreSQL with its fast path
(store/pg_fast.py) and on PostgreSQL with the generic machine alone, must leave the same audit
trail and the same final states.

The trails are normalized: ids, times and the scratch directory are stripped; events keep
their order within a step (and within the run's own events), where the in-process worker
makes it deterministic, and runs are paired by the order they were created in.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from flowkit.store import approvals, pg_fast
from flowkit.store.sql import SqlStore
from flowkit.testing import FakeClock, InlineHarness

from ..conftest import PG_ADMIN_URL, ROOT, TEST_DAGS, service_missing
from ..unit import map_compensation_cases, saga_retry_cases

BACKENDS = ("sqlite", "pg_fast", "pg_generic")

#: Pools the test flows name (created before their dags are synced).
POOLS = {"db": 2, "mpool": 2, "one": 1, "rooms": 1}

#: Flows the in-process worker cannot run as the others: they stop the process, wait on a
#: person or on another process, or hold a step for tens of seconds of real time.
NOT_INLINE = {
    "hard_timeout": "its step outlives the hard time limit: 60 s of real time",
    "shell_long": "30 s of real time",
    "lone_shell": "30 s of real time",
    "mixed": "30 s of real time",
    "interrupted": "raises SystemExit in the worker, as a stopped pool child does",
    "inside": "cancels its own run from another store (tested by test_operator_actions)",
    "approve_me": "waits for a person (the approval scenarios below decide it)",
    **{
        name: "its sensor waits on the unit tests' injected clock (tests/unit/test_sensors.py)"
        for name in (
            "sensor_clocked_fail",
            "sensor_clocked_skip",
            "sensor_clocked_retries",
            "sensor_clocked_file",
            "sensor_clocked_flow",
        )
    },
    "it_sensor_file": "waits for a file the integration test creates",
}

#: Params that keep a flow inline-sized (the defaults are sized for real workers).
PARAMS: dict[str, dict[str, Any]] = {
    "it_squares": {"n": 40},
    "it_slow": {"sleep": 0.0},
    "it_capped": {"sleep": 0.0},
    "slow": {"seconds": 0.0},
}

FOLDERS = sorted(
    p.name
    for p in TEST_DAGS.iterdir()
    if p.is_dir() and any(p.glob("*.py")) and p.name not in ("mixed", "dups", "hang", "devstop", "cancelpools")
) + ["examples"]
# mixed and dups hold broken files and name clashes (loader tests); hang and devstop hang
# or stop the process on purpose; cancelpools holds only NOT_INLINE flows.

#: Flows whose results carry values of their own making (random ids, a shared registry's
#: version, content hashes): which steps stored a result is compared, not the values.
OWN_VALUES = {"orders", "ml_training", "telematics", "fleet_report"}


def _folder(name: str) -> Path:
    return ROOT / "dags" if name == "examples" else TEST_DAGS / name


# -- stores -----------------------------------------------------------------------------------
@pytest.fixture
def stores(tmp_path: Path) -> Iterator[Callable[[str], SqlStore]]:
    """Backend name -> a fresh, upgraded store (PostgreSQL databases of their own, dropped)."""
    import psycopg

    made: list[SqlStore] = []
    databases: list[str] = []

    def make(backend: str) -> SqlStore:
        if backend == "sqlite":
            store = SqlStore(f"sqlite:///{tmp_path / f'{uuid.uuid4().hex[:8]}.db'}")
        else:
            name = f"machine_eq_{uuid.uuid4().hex[:10]}"
            try:
                with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=3) as admin:
                    admin.execute(f'CREATE DATABASE "{name}"')
            except Exception as exc:
                service_missing("PostgreSQL", exc)
            databases.append(name)
            base = PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
            store = SqlStore(f"{base}/{name}", fast_path=backend == "pg_fast")
            assert store.fast_path == (backend == "pg_fast")
        store.upgrade()
        made.append(store)
        return store

    yield make
    for store in made:
        store.dispose()
    if databases:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
            for name in databases:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# -- normalized trails ------------------------------------------------------------------------
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_PID = re.compile(r"\b(pid|process) \d+")
_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(\+00:00|Z)?")
_DELAY = re.compile(r"retrying in [\d.]+ s")  # the retry policy's jitter


def _clean(text: Any, scratch: Path) -> Any:
    if not isinstance(text, str):
        return text
    text = text.replace(str(scratch), "<tmp>")
    text = _TIME.sub("<time>", _DELAY.sub("retrying in <delay> s", text))
    return _PID.sub(r"\1 <n>", _UUID.sub("<id>", text))


def trail(store: SqlStore, scratch: Path) -> list[dict[str, Any]]:
    """Every run of the store, oldest first, as what must not differ between backends."""
    out = []
    for run in sorted(store.list_runs(limit=10_000), key=lambda r: r["created_at"]):
        run_id = run["id"]
        by_step: dict[str, list[tuple[Any, ...]]] = {}
        for e in store.events(run_id):
            by_step.setdefault(e["step"] or "<run>", []).append(
                (e["action"], e["attempt"], e["old_state"], e["new_state"], _clean(e["reason"], scratch), e["actor"])
            )
        steps = {
            s["step"]: (
                s["state"],
                s["attempts"],
                s["n_up"],
                s["ok_up"],
                s["bad_up"],
                s["skip_up"],
                s["retry_base"],
                s["map_parent"],
                s["map_index"],
                s["map_total"],
                s["map_left"],
                s["map_failed"],
            )
            for s in store.step_runs(run_id)
        }
        attempts = [
            (
                a["step"],
                a["number"],
                a["state"],
                a["deliveries"],
                a["interruptions"],
                _clean(a["error"], scratch),
                a["worker"],
            )
            for a in store.attempts(run_id)
        ]
        out.append(
            {
                "flow": run["flow_name"],
                "state": run["state"],
                "outcome": run["outcome"],
                "steps_left": run["steps_left"],
                "events": by_step,
                "steps": steps,
                "attempts": attempts,
                "results": sorted(store.results(run_id))
                if run["flow_name"] in OWN_VALUES
                else _clean(repr(sorted(store.results(run_id).items())), scratch),
            }
        )
    return out


def differences(trails: dict[str, list[dict[str, Any]]]) -> list[str]:
    """Where each backend's trail differs from SQLite's, run by run and part by part."""
    reference = trails["sqlite"]
    assert reference, "no run was recorded"
    found: list[str] = []
    for backend, other in trails.items():
        if [r["flow"] for r in other] != [r["flow"] for r in reference]:
            found.append(f"{backend}: runs {[r['flow'] for r in other]} != {[r['flow'] for r in reference]}")
            continue
        for mine, theirs in zip(other, reference, strict=True):
            where = f"{backend} vs sqlite, flow {theirs['flow']}"
            for key in ("state", "outcome", "steps_left", "steps", "attempts", "results"):
                if mine[key] != theirs[key]:
                    found.append(f"{where}: {key}: {mine[key]!r} != {theirs[key]!r}")
            for step in sorted(set(mine["events"]) | set(theirs["events"])):
                ours, ref = mine["events"].get(step) or [], theirs["events"].get(step) or []
                if ours != ref:
                    extra = [e for e in ours if e not in ref]
                    missing = [e for e in ref if e not in ours]
                    found.append(
                        f"{where} step {step}: audit trail differs: has {extra}, lacks {missing}"
                        if extra or missing
                        else f"{where} step {step}: audit order differs: {ours}"
                    )
    return found


def _on_every_backend(
    stores: Callable[[str], SqlStore],
    tmp_path: Path,
    scenario: Callable[[SqlStore, Path], None],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = _count_fast_path(monkeypatch)
    trails = {}
    for backend in BACKENDS:
        scratch = tmp_path / backend
        scratch.mkdir()
        store = stores(backend)
        calls.clear()
        scenario(store, scratch)
        trails[backend] = trail(store, scratch)
        # the switch holds: only the fast backend runs the one-statement forms, and it does
        # wherever they apply (a run's second claim on this worker is one, at least)
        applies = any(sum(a[2] == "success" for a in run["attempts"]) >= 2 for run in trails[backend])
        if backend != "pg_fast":
            assert not calls, (backend, calls)
        elif applies:
            assert calls, "the fast backend never took its one-statement forms"
    found = differences(trails)
    assert not found, "\n".join(found)


def _count_fast_path(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Count the calls of pg_fast's one-statement claim and finishes."""
    calls: dict[str, int] = {}
    for name in ("claim", "finish_success", "finish_instance_success"):
        real = getattr(pg_fast, name)

        def counted(*args: Any, _real: Any = real, _name: str = name, **kwargs: Any) -> Any:
            calls[_name] = calls.get(_name, 0) + 1
            return _real(*args, **kwargs)

        monkeypatch.setattr(pg_fast, name, counted)
    return calls


# -- every flow -------------------------------------------------------------------------------
def _params(spec: Any, scratch: Path) -> dict[str, Any]:
    """A path in the scratch directory for each required param (the flows take log and marker
    files), and the inline-sized values of PARAMS."""
    given = {p.name: str(scratch / f"{spec.name}.{p.name}") for p in spec.params if p.required}
    return {**given, **PARAMS.get(spec.name, {})}


def run_every_flow(folder: Path) -> Callable[[SqlStore, Path], None]:
    def scenario(store: SqlStore, scratch: Path) -> None:
        for pool, slots in POOLS.items():
            store.set_pool(pool, slots)
        clock = FakeClock()
        h = InlineHarness(store, str(folder), clock=clock)
        for flow in sorted(f["name"] for f in store.list_flows()):
            if flow in NOT_INLINE:
                continue
            run_id = h.trigger(flow, _params(store.flow_spec(flow), scratch))
            h.run_until_done(run_id, advance=clock.advance, max_rounds=400)

    return scenario


@pytest.mark.parametrize("folder", FOLDERS)
def test_every_flow_leaves_the_same_trail_on_every_backend(stores, tmp_path, monkeypatch, folder):
    _on_every_backend(stores, tmp_path, run_every_flow(_folder(folder)), monkeypatch)


# -- operators' actions -----------------------------------------------------------------------
OPERATOR_DAGS = str(TEST_DAGS / "operator")
SAGA_DAGS = str(TEST_DAGS / "saga")


def cancel_retry_and_mark(store: SqlStore, scratch: Path) -> None:
    store.set_pool("one", 1)
    clock = FakeClock()
    h = InlineHarness(store, OPERATOR_DAGS, clock=clock)
    flag = scratch / "flag"
    # retry from the failed steps after fixing the cause; then a named step and its downstream
    flag.write_text("stop")
    run_id = h.trigger("gated", {"flag": str(flag)})
    h.run_until_done(run_id, advance=clock.advance)
    flag.write_text("go")
    h.act(store.retry_run(run_id, by="ann", reason="flag fixed"))
    h.run_until_done(run_id, advance=clock.advance)
    h.act(store.retry_run(run_id, steps=["load"], downstream=True, by="ann"))
    h.run_until_done(run_id, advance=clock.advance)
    # a retrying step whose budget the operator's retry restarts
    flag.write_text("stop")
    run_id = h.trigger("flaky", {"flag": str(flag)})
    h.run_until_done(run_id, advance=clock.advance)
    h.act(store.retry_run(run_id, by="ann"))
    h.work()
    flag.write_text("go")
    h.run_until_done(run_id, advance=clock.advance)
    # mark a failed step success; mark a pending step skipped, then the failed one skipped
    run_id = h.trigger("broken")
    h.run_until_done(run_id, advance=clock.advance)
    h.act(store.mark_step(run_id, "bad", "success", by="ann", reason="fixed by hand"))
    h.run_until_done(run_id, advance=clock.advance)
    run_id = h.trigger("broken")
    h.act(store.mark_step(run_id, "after_bad", "skipped", by="ann"))
    h.run_until_done(run_id, advance=clock.advance)
    h.act(store.mark_step(run_id, "bad", "skipped", by="ann"))
    # cancel a run with a step queued and one done, then one still queued
    run_id = h.trigger("gated", {"flag": str(flag)})
    item = h.dispatcher.sent.pop(0)
    from flowkit.execution.attempt import run_attempt

    run_attempt(h.runtime, item.run_id, item.step.name, item.attempt)
    h.act(store.cancel_run(run_id, by="ann", reason="wrong input"))
    run_id = h.trigger("held", {"log": str(scratch / "held.log")})
    h.act(store.cancel_run(run_id, by="ann"))
    h.work()
    # then retry the cancelled run
    h.act(store.retry_run(run_id, by="ann"))
    h.run_until_done(run_id, advance=clock.advance)


def approvals_decided(store: SqlStore, scratch: Path) -> None:
    clock = FakeClock()
    h = InlineHarness(store, SAGA_DAGS, clock=clock)
    for approve, by in ((True, "alice"), (False, "bob")):
        run_id = h.trigger("approve_me")
        h.work()
        approvals.decide(store, run_id, "sign_off", approve=approve, by=by, reason="checked")
        h.scheduler.handle([{"type": "approval_decided", "run_id": run_id}])
        h.scheduler.grant()
        h.run_until_done(run_id, advance=clock.advance)


def _saga_case(case: Callable[[Any, Path], None]) -> Callable[[SqlStore, Path], None]:
    return lambda store, scratch: case(store, scratch)


def _map_case(case: Callable[[Any], None]) -> Callable[[SqlStore, Path], None]:
    return lambda store, scratch: case(store)


SCENARIOS: dict[str, Callable[[SqlStore, Path], None]] = {
    "cancel_retry_and_mark": cancel_retry_and_mark,
    "approvals_decided": approvals_decided,
    **{f"saga:{c.__name__}": _saga_case(c) for c in saga_retry_cases.CASES},
    **{f"map:{c.__name__}": _map_case(c) for c in map_compensation_cases.CASES},
}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_operator_actions_leave_the_same_trail_on_every_backend(stores, tmp_path, monkeypatch, name):
    _on_every_backend(stores, tmp_path, SCENARIOS[name], monkeypatch)
