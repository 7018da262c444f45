"""PostgreSQL's finish commits on its own; what it leaves for the machine (a downstream step
it made ready, the run's end) is done in a second transaction. A worker that dies between
the two leaves a durable trace that the scheduler's sweep decides from: nothing is lost and
nothing runs twice (InlineHarness over PostgreSQL: the worker's finish takes the pg_fast path)."""

from __future__ import annotations

from pathlib import Path

import pytest

from flowkit.execution.attempt import run_attempt
from flowkit.store import worker_ops
from flowkit.testing import InlineHarness

FLOWS = """
from flowkit import Flow

def noop():
    return None

flow = (Flow("followup").step("root", noop)
        .step("a", noop, after="root").step("b", noop, after="root")
        .step("join", noop, after=["a", "b"]))
"""


class WorkerDied(BaseException):
    """Stands for the worker process dying (not an Exception: nothing retries it)."""


@pytest.fixture
def harness(pg_url, open_store, tmp_path: Path) -> InlineHarness:
    (tmp_path / "dags").mkdir()
    (tmp_path / "dags" / "followup.py").write_text(FLOWS)
    store = open_store(pg_url)
    store.upgrade()
    return InlineHarness(store, str(tmp_path / "dags"))


def _run_next(h: InlineHarness, step: str) -> None:
    item = next(d for d in h.dispatcher.sent if d.step.name == step)
    h.dispatcher.sent.remove(item)
    run_attempt(h.runtime, item.run_id, item.step.name, item.attempt)
    h.scheduler.handle(h.events.wait(0))
    h.scheduler.grant()


def _die_after_commit(monkeypatch: pytest.MonkeyPatch) -> None:
    def die(*args: object, **kwargs: object) -> None:
        raise WorkerDied()

    monkeypatch.setattr(worker_ops, "_settle_after_success", die)


def _state(h: InlineHarness, run_id: str, step: str) -> str:
    return next(r["state"] for r in h.store.step_runs(run_id) if r["step"] == step)


def test_a_ready_step_left_by_a_dead_worker_is_started_by_the_sweep(harness, monkeypatch):
    h = harness
    run_id = h.trigger("followup")
    _run_next(h, "root")
    _run_next(h, "a")
    # Given b's finish committed (join's last upstream counted) and the worker died before
    # the follow-up that starts join (no fast-follow: the scheduler granted a and b)
    _die_after_commit(monkeypatch)
    h.runtime.dispatcher = None  # no fast-follow: join must be started by the follow-up
    item = next(d for d in h.dispatcher.sent if d.step.name == "b")
    h.dispatcher.sent.remove(item)
    with pytest.raises(WorkerDied):
        run_attempt(h.runtime, run_id, "b", item.attempt)
    monkeypatch.undo()
    assert _state(h, run_id, "b") == "success"
    assert _state(h, run_id, "join") == "pending"
    # Then the statement marked the run, and the sweep finds it and starts join once
    assert h.store.get_run(run_id)["followups"] == 1
    assert h.store.runs_with_followups() == [run_id]
    h.scheduler.sweep()
    assert _state(h, run_id, "join") == "queued"
    assert h.store.runs_with_followups() == []
    assert h.store.get_run(run_id)["followups"] == 0
    assert h.run_until_done(run_id) == "success"
    assert sorted((a["step"], a["number"]) for a in h.store.attempts(run_id)) == [
        ("a", 1),
        ("b", 1),
        ("join", 1),
        ("root", 1),
    ]


def test_a_run_whose_last_finish_died_before_ending_it_is_ended_by_the_sweep(harness, monkeypatch):
    h = harness
    run_id = h.trigger("followup")
    for step in ("root", "a", "b"):
        _run_next(h, step)
    # Given join's finish committed (steps_left 0) and the worker died before ending the run
    _die_after_commit(monkeypatch)
    item = next(d for d in h.dispatcher.sent if d.step.name == "join")
    h.dispatcher.sent.remove(item)
    with pytest.raises(WorkerDied):
        run_attempt(h.runtime, run_id, "join", item.attempt)
    monkeypatch.undo()
    assert h.store.get_run(run_id)["state"] == "running"
    # Then the sweep ends it, with the audit trail of a normal end
    h.scheduler.sweep()
    run = h.store.get_run(run_id)
    assert run["state"] == "success"
    assert [e["new_state"] for e in h.store.events(run_id) if e["action"] == "run_state"][-1] == "success"


def test_a_finish_that_needs_nothing_more_commits_alone(harness, monkeypatch):
    # Given the follow-up would fail if it were called
    h = harness
    run_id = h.trigger("followup")
    _run_next(h, "root")
    _die_after_commit(monkeypatch)
    # When a (join still waits for b) finishes: the statement alone records it
    _run_next(h, "a")
    monkeypatch.undo()
    assert _state(h, run_id, "a") == "success"
    assert _state(h, run_id, "join") == "pending"
    assert h.store.runs_with_followups() == []
    assert h.run_until_done(run_id) == "success"


def test_a_live_follow_up_and_the_sweep_start_a_ready_step_once(harness):
    # Given b's finish made join ready with no fast-follow: its follow-up queued join
    h = harness
    h.runtime.dispatcher = None
    run_id = h.trigger("followup")
    for step in ("root", "a", "b"):
        _run_next(h, step)
    assert _state(h, run_id, "join") in ("queued", "scheduled")
    assert h.store.get_run(run_id)["followups"] == 2  # root's (a and b ready) and b's (join)
    # When the sweep reconciles the marked run
    h.scheduler.sweep()
    # Then the mark is reset and join has one attempt
    assert h.store.get_run(run_id)["followups"] == 0
    assert h.run_until_done(run_id) == "success"
    assert [a["number"] for a in h.store.attempts(run_id) if a["step"] == "join"] == [1]


WIDE = """
from flowkit import Flow

def noop():
    return None

flow = Flow("wide").step("root", noop)
members = [f"m{i:03d}" for i in range(120)]
for m in members:
    flow.step(m, noop, after="root")
flow.step("join", noop, after=members)
"""


def test_sweeps_during_a_fan_out_lose_no_count(pg_url, open_store, tmp_path):
    """The sweep reconciles a marked run while its members still finish: it must not rewrite
    the counters from a snapshot (a recount would drop the bumps that commit meanwhile, and
    the join would never start)."""
    import threading

    (tmp_path / "dags").mkdir()
    (tmp_path / "dags" / "wide.py").write_text(WIDE)
    store = open_store(pg_url)
    store.upgrade()
    h = InlineHarness(store, str(tmp_path / "dags"))
    h.runtime.dispatcher = None  # every ready step goes through a follow-up (and marks the run)
    run_id = h.trigger("wide")
    _run_next(h, "root")
    members = [d for d in h.dispatcher.sent if d.step.name.startswith("m")]
    assert len(members) == 120 and h.store.runs_with_followups() == [run_id]
    h.dispatcher.sent = [d for d in h.dispatcher.sent if d not in members]
    errors: list[BaseException] = []

    def work(items: list) -> None:
        try:
            for d in items:
                run_attempt(h.runtime, d.run_id, d.step.name, d.attempt)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(members[i::2],)) for i in range(2)]
    for th in threads:
        th.start()
    sweeps = 0
    while any(th.is_alive() for th in threads):
        h.scheduler.sweep()
        sweeps += 1
    for th in threads:
        th.join()
    assert not errors and sweeps > 1
    join = next(r for r in store.step_runs(run_id) if r["step"] == "join")
    assert (join["ok_up"], join["n_up"]) == (120, 120)
    h.scheduler.handle(h.events.wait(0))
    h.scheduler.grant()
    assert h.run_until_done(run_id) == "success"
    assert [a["number"] for a in store.attempts(run_id) if a["step"] == "join"] == [1]


SPLIT = """
from flowkit import Flow

def noop():
    return None

flow = (Flow("split").step("root", noop)
        .step("fast", noop, after="root")
        .step("slow", noop, after="root", pool="p"))
"""


def test_a_failed_follow_up_still_publishes_what_the_statement_queued(pg_url, open_store, tmp_path, monkeypatch):
    """A deadlock or a dropped connection in the follow-up must not cost the steps the
    finish statement already queued (fast-follow): they are published, the rest is the
    sweep's. Retrying the whole finish instead would find the attempt ended, drop them, and
    leave them queued in SQL until the 300 s lease."""
    from sqlalchemy.exc import OperationalError

    (tmp_path / "dags").mkdir()
    (tmp_path / "dags" / "split.py").write_text(SPLIT)
    store = open_store(pg_url)
    store.upgrade()
    store.set_pool("p", 1)
    h = InlineHarness(store, str(tmp_path / "dags"))
    run_id = h.trigger("split")

    def deadlock(*args: object, **kwargs: object) -> None:
        raise OperationalError("SELECT ... FOR UPDATE", {}, Exception("deadlock detected"))

    monkeypatch.setattr(worker_ops, "_settle_after_success", deadlock)
    item = next(d for d in h.dispatcher.sent if d.step.name == "root")
    h.dispatcher.sent.remove(item)
    assert run_attempt(h.runtime, run_id, "root", item.attempt) == "success"
    monkeypatch.undo()
    # fast was queued by the statement and published; slow waits for the sweep
    assert [d.step.name for d in h.dispatcher.sent] == ["fast"]
    assert _state(h, run_id, "slow") == "pending"
    assert h.store.runs_with_followups() == [run_id]
    h.scheduler.sweep()
    assert _state(h, run_id, "slow") in ("scheduled", "queued")
    assert h.run_until_done(run_id) == "success"
    assert sorted((a["step"], a["number"]) for a in store.attempts(run_id)) == [("fast", 1), ("root", 1), ("slow", 1)]


def test_what_the_statement_queued_is_published_before_the_follow_up(pg_url, open_store, tmp_path, monkeypatch):
    """A fan-out's root: the members its statement queued are committed, so they go to the
    broker at once; the follow-up that makes the rest waiters comes after (it took about
    0.1 s for 2,000 members, while no member could start)."""
    from dataclasses import replace

    (tmp_path / "dags").mkdir()
    (tmp_path / "dags" / "wide.py").write_text(WIDE)
    store = open_store(pg_url)
    store.upgrade()
    h = InlineHarness(store, str(tmp_path / "dags"))
    h.runtime.settings = replace(h.runtime.settings, fast_follow_max=7)
    run_id = h.trigger("wide")
    root = h.dispatcher.sent.pop(0)
    published_before_follow_up: list[str] = []
    settle = worker_ops._settle_after_success

    def follow_up(*args: object, **kwargs: object) -> None:
        published_before_follow_up.extend(d.step.name for d in h.dispatcher.sent)
        settle(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(worker_ops, "_settle_after_success", follow_up)
    run_attempt(h.runtime, run_id, "root", root.attempt)
    # Then the 7 members the statement queued were out before the follow-up began, once each
    assert published_before_follow_up == [f"m{i:03d}" for i in range(7)]
    assert [d.step.name for d in h.dispatcher.sent] == published_before_follow_up
    states = [r["state"] for r in store.step_runs(run_id) if r["step"].startswith("m")]
    assert states.count("queued") == 7 and states.count("scheduled") == 113
    # and once out, the worker confirmed them: the scheduler has none to publish again
    queued = [a for a in store.attempts(run_id) if a["state"] == "queued"]
    assert len(queued) == 7 and not any(a["heartbeat_at"] for a in queued)
    monkeypatch.undo()
    h.scheduler.handle(h.events.wait(0))
    h.scheduler.grant()
    assert h.run_until_done(run_id) == "success"


MAPPED = """
from flowkit import Flow

def items():
    return [1, 2, 3, 4]

def double(ctx):
    return ctx.item * 2

def total(ctx):
    return sum(ctx.upstream["each"])

flow = Flow("mapped").step("items", items).map("each", double, over="items").step("sum", total, after="each")
"""


def _mapped(pg_url, open_store, tmp_path) -> InlineHarness:  # type: ignore[no-untyped-def]
    (tmp_path / "dags").mkdir()
    (tmp_path / "dags" / "mapped.py").write_text(MAPPED)
    store = open_store(pg_url)
    store.upgrade()
    return InlineHarness(store, str(tmp_path / "dags"))


def test_a_map_instance_commits_alone_and_only_the_last_ends_its_map_step(pg_url, open_store, tmp_path, monkeypatch):
    from flowkit.store import map_ops

    h = _mapped(pg_url, open_store, tmp_path)
    run_id = h.trigger("mapped")
    _run_next(h, "items")
    # Given a machine that would fail if an instance other than the last needed it
    calls: list[tuple[int, ...]] = []
    real = map_ops.counted

    def counted(machine: object, parent: str, *counts: int) -> None:
        calls.append(counts)
        real(machine, parent, *counts)  # type: ignore[arg-type]

    monkeypatch.setattr(map_ops, "counted", counted)
    for i in range(4):
        _run_next(h, f"each[{i}]")
    # Then only the last instance's finish went on to the machine, which ended the map step
    assert [c[0] for c in calls] == [0]
    assert _state(h, run_id, "each") == "success"
    assert h.run_until_done(run_id) == "success"
    assert h.store.results(run_id, ["sum"]) == {"sum": 20}


def test_a_map_step_whose_last_instance_died_before_ending_it_is_ended_by_the_sweep(
    pg_url, open_store, tmp_path, monkeypatch
):
    from flowkit.store import map_ops

    h = _mapped(pg_url, open_store, tmp_path)
    run_id = h.trigger("mapped")
    _run_next(h, "items")
    for i in range(3):
        _run_next(h, f"each[{i}]")

    def die(*args: object, **kwargs: object) -> None:
        raise WorkerDied()

    # Given the last instance's finish committed and its worker died before ending the map step
    monkeypatch.setattr(map_ops, "counted", die)
    item = next(d for d in h.dispatcher.sent if d.step.name == "each[3]")
    h.dispatcher.sent.remove(item)
    with pytest.raises(WorkerDied):
        run_attempt(h.runtime, run_id, "each[3]", item.attempt)
    monkeypatch.undo()
    assert _state(h, run_id, "each[3]") == "success" and _state(h, run_id, "each") == "running"
    assert h.store.runs_with_followups() == [run_id]
    # Then the sweep ends the map step with the ordered results, once, and the run goes on
    h.scheduler.sweep()
    assert _state(h, run_id, "each") == "success"
    assert h.store.results(run_id, ["each"]) == {"each": [2, 4, 6, 8]}
    assert h.store.runs_with_followups() == []
    assert h.run_until_done(run_id) == "success"
    assert h.store.results(run_id, ["sum"]) == {"sum": 20}
    ends = [e for e in h.store.events(run_id) if e["step"] == "each" and e["new_state"] == "success"]
    assert len(ends) == 1
