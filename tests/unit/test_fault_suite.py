"""The fault-injection suite's pure parts (bench/faults_metrics.py) on synthetic rows and logs."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bench.faults_metrics import (
    Execution,
    Fault,
    compute_row,
    format_table,
    in_flight_steps,
    log_highlights,
    parse_exec_log,
    pending_steps,
    percentile,
    recovery,
    soak_summary,
    ts,
)

RUN = "run-1"
T0 = 1_000_000.0  # epoch seconds of the synthetic run's start


def dt(seconds: float) -> datetime:
    return datetime.fromtimestamp(T0 + seconds, UTC)


def step(name: str, state: str, ended: float | None = None) -> dict:
    return {"step": name, "state": state, "ended_at": dt(ended) if ended is not None else None}


def attempt(
    name: str,
    number: int,
    state: str,
    dispatched: float,
    started: float | None = None,
    ended: float | None = None,
    deliveries: int = 1,
    worker: str = "vm:1",
) -> dict:
    return {
        "run_id": RUN,
        "step": name,
        "number": number,
        "state": state,
        "deliveries": deliveries,
        "worker": worker,
        "dispatched_at": dt(dispatched),
        "started_at": dt(started) if started is not None else None,
        "heartbeat_at": dt(started) if started is not None else None,
        "ended_at": dt(ended) if ended is not None else None,
        "error": None,
    }


def execution(name: str, start: float, end: float, number: int = 1, run_id: str = RUN) -> Execution:
    return Execution(run_id, name, number, 4242, T0 + start, T0 + end)


def clean_run() -> tuple[list[dict], list[dict], list[Execution]]:
    """Three steps a -> b -> c, each run once and succeeded."""
    steps = [step("a", "success", 1.0), step("b", "success", 2.0), step("c", "success", 3.0)]
    attempts = [
        attempt("a", 1, "success", 0.0, 0.1, 1.0),
        attempt("b", 1, "success", 1.1, 1.2, 2.0),
        attempt("c", 1, "success", 2.1, 2.2, 3.0),
    ]
    execs = [execution("a", 0.2, 0.9), execution("b", 1.3, 1.9), execution("c", 2.3, 2.9)]
    return steps, attempts, execs


def row_of(
    steps: list[dict],
    attempts: list[dict],
    execs: list[Execution],
    faults: list[Fault] | None = None,
    planned: int | None = None,
    state: str = "success",
):  # type: ignore[no-untyped-def]
    run = {"id": RUN, "state": state, "created_at": dt(0.0), "ended_at": dt(3.5)}
    faults = faults or []
    return compute_row(
        "scn",
        "redis",
        run,
        steps,
        attempts,
        execs,
        faults,
        faults_planned=len(faults) if planned is None else planned,
        run_id=RUN,
    )


# -- execution log -----------------------------------------------------------------------------
def test_parse_exec_log_reads_tab_separated_lines_and_counts_bad_ones():
    text = "run-1\ta\t1\t100\t1.5\t2.5\n\ngarbage line\nrun-1\tb\t2\t101\t3.0\t3.25\n"
    execs, bad = parse_exec_log(text)
    assert execs == [Execution("run-1", "a", 1, 100, 1.5, 2.5), Execution("run-1", "b", 2, 101, 3.0, 3.25)]
    assert bad == 1


def test_the_flow_body_writes_one_parseable_line_per_execution(tmp_path, monkeypatch):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "bench" / "fault_dags" / "faultflow.py"
    spec = importlib.util.spec_from_file_location("faultflow_for_test", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert len(module.flow.spec(version="t").steps) == 299

    class Ctx:
        run_id, step, attempt = RUN, "a_01", 2
        params = {"seed": 7, "log": ""}

    log = tmp_path / "exec.log"
    monkeypatch.setenv("FAULT_EXEC_LOG", str(log))
    monkeypatch.setattr(module.time, "sleep", lambda s: None)
    first = module.body(Ctx())
    module.body(Ctx())
    execs, bad = parse_exec_log(log.read_text())
    assert bad == 0 and [(e.step, e.attempt) for e in execs] == [("a_01", 2), ("a_01", 2)]
    assert 20 <= first["slept_ms"] <= 100  # seeded: the same for every execution of a step
    assert module.body(Ctx())["slept_ms"] == first["slept_ms"]
    from bench.faults_metrics import body_seconds

    assert round(body_seconds(7, "a_01") * 1000, 1) == first["slept_ms"]  # the harness's copy


# -- the row ---------------------------------------------------------------------------------------
def test_a_clean_run_without_faults_has_nothing_to_report():
    steps, attempts, execs = clean_run()
    row = row_of(steps, attempts, execs)
    assert (row.steps_lost, row.dup_after_success, row.failed_by_fault) == (0, 0, 0)
    assert row.run_state == "success" and row.run_seconds == pytest.approx(3.5)
    assert row.misses == ["recovery"]  # no fault injected: no recovery measured
    assert row.to_dict()["ok"] is False


def test_steps_that_never_ended_or_never_ran_are_lost():
    steps, attempts, execs = clean_run()
    steps[2] = step("c", "queued")  # still queued at the deadline
    attempts[2] = attempt("c", 1, "queued", 2.1)
    execs = execs[:1]  # b succeeded in the store with no execution of its body
    row = row_of(steps, attempts, execs, state="running")
    assert row.steps_lost == 2
    assert row.not_terminal == 1 and row.success_without_execution == 1
    assert row.lost_examples == ["b", "c"]
    assert [d["step"] for d in row.lost_detail] == ["b", "c"]
    assert row.lost_detail[1]["attempt_state"] == "queued"
    assert "lost" in row.misses


def test_only_an_execution_that_started_after_the_recorded_success_counts_as_a_duplicate():
    steps, attempts, execs = clean_run()
    execs += [
        execution("a", 0.5, 1.05),  # concurrent with the successful one: extra, not "after success"
        execution("b", 2.5, 2.9, number=1),  # started after b's success ended at 2.0
        execution("c", 4.0, 4.5, run_id="other-run"),  # another run's line
    ]
    row = row_of(steps, attempts, execs)
    assert row.dup_after_success == 1 and row.dup_examples == ["b#1"]
    assert row.extra_executions == 2
    assert "dup" in row.misses


def test_failed_and_upstream_failed_steps_count_as_failed_by_the_fault():
    steps, attempts, execs = clean_run()
    steps[1] = step("b", "failed", 2.0)
    steps[2] = step("c", "upstream_failed", 2.0)
    attempts[1] = attempt("b", 1, "failed", 1.1, 1.2, 2.0, deliveries=3)
    row = row_of(steps, attempts, execs[:1], state="failed")
    assert row.failed_by_fault == 2 and row.failed_examples == ["b", "c"]
    assert row.failed_attempts == 1 and row.redeliveries == 2
    assert row.steps_lost == 0  # terminal, and no success without an execution


def test_fewer_faults_than_planned_is_a_miss():
    steps, attempts, execs = clean_run()
    fault = Fault("worker_kill", T0 + 0.5, T0 + 0.5, in_flight=["a"], pending_after=["b", "c"])
    row = row_of(steps, attempts, execs, [fault], planned=3)
    assert row.faults_injected == 1 and row.misses == ["faults"]


# -- recovery --------------------------------------------------------------------------------------
def test_recovery_waits_for_in_flight_steps_and_for_the_next_new_step():
    steps = [step("a", "success", 40.0), step("b", "success", 12.0), step("c", "success", 50.0)]
    attempts = [
        attempt("a", 1, "success", 0.0, 1.0, 40.0),
        attempt("b", 1, "success", 10.5, 11.0, 12.0),
        attempt("c", 1, "success", 41.0, 42.0, 50.0),
    ]
    fault = Fault("worker_kill", T0 + 10.0, T0 + 10.2, in_flight=["a"], pending_after=["b", "c"])
    seconds, note = recovery(fault, steps, attempts)
    assert seconds == pytest.approx(30.0)  # a ended at 40; b (new work) at 12: the later one wins
    assert "in-flight" in note and "new step" in note


def test_recovery_is_the_first_new_completion_when_nothing_was_in_flight():
    steps = [step("b", "success", 25.0), step("c", "success", 30.0)]
    attempts = [attempt("b", 1, "success", 20.0, 21.0, 25.0), attempt("c", 1, "success", 26.0, 27.0, 30.0)]
    fault = Fault("scheduler_kill", T0 + 10.0, T0 + 10.1, in_flight=[], pending_after=["b", "c"])
    assert recovery(fault, steps, attempts)[0] == pytest.approx(15.0)


def test_no_recovery_when_an_in_flight_step_never_ended():
    steps = [step("a", "running"), step("b", "success", 12.0)]
    attempts = [attempt("a", 1, "running", 0.0, 1.0), attempt("b", 1, "success", 10.5, 11.0, 12.0)]
    fault = Fault("worker_kill", T0 + 10.0, T0 + 10.0, in_flight=["a"], pending_after=["b"])
    seconds, note = recovery(fault, steps, attempts)
    assert seconds is None and "a" in note
    row = row_of(steps, attempts, [execution("b", 11.0, 11.9)], [fault], state="running")
    assert row.recovery_seconds is None and "recovery" in row.misses and "lost" in row.misses


def test_no_recovery_when_no_pending_step_ever_completed():
    steps = [step("a", "success", 5.0), step("b", "pending")]
    attempts = [attempt("a", 1, "success", 0.0, 1.0, 5.0)]
    fault = Fault("scheduler_kill", T0 + 10.0, T0 + 10.0, in_flight=[], pending_after=["b"])
    assert recovery(fault, steps, attempts)[0] is None


def test_an_attempt_that_ended_before_the_fault_is_not_new_progress():
    steps = [step("b", "success", 9.0)]
    attempts = [attempt("b", 1, "success", 8.0, 8.5, 9.0)]  # the snapshot said pending: stale read
    fault = Fault("scheduler_kill", T0 + 10.0, T0 + 10.0, in_flight=[], pending_after=["b"])
    assert recovery(fault, steps, attempts)[0] is None


def test_worst_fault_sets_the_row_and_over_60_s_misses_the_target():
    steps = [step("a", "success", 20.0), step("b", "success", 90.0)]
    attempts = [attempt("a", 1, "success", 0.0, 1.0, 20.0), attempt("b", 1, "success", 21.0, 80.0, 90.0)]
    execs = [execution("a", 1.0, 19.0), execution("b", 80.0, 89.0)]
    quick = Fault("scheduler_kill", T0 + 5.0, T0 + 5.0, in_flight=["a"], pending_after=[])
    slow = Fault("worker_kill", T0 + 21.5, T0 + 21.5, in_flight=["b"], pending_after=[])
    row = row_of(steps, attempts, execs, [quick, slow])
    assert row.recovery_seconds == pytest.approx(68.5)
    assert row.misses == ["recovery"]
    assert [f["recovery_seconds"] for f in row.faults] == [pytest.approx(15.0), pytest.approx(68.5)]


def test_snapshot_helpers():
    steps = [
        step("a", "queued"),
        step("b", "running"),
        step("c", "up_for_retry"),
        step("d", "pending"),
        step("e", "success", 1.0),
    ]
    assert in_flight_steps(steps) == ["a", "b", "c"]
    assert pending_steps(steps) == ["d"]


# -- soak, table, logs -----------------------------------------------------------------------------
def test_percentile_is_nearest_rank():
    assert percentile([], 99) is None
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert percentile([float(i) for i in range(1, 101)], 99) == 99.0
    assert percentile([5.0], 99) == 5.0


def test_soak_summary_adds_up_runs():
    steps, attempts, execs = clean_run()
    runs = [
        {"id": RUN, "state": "success", "created_at": dt(0), "ended_at": dt(3)},
        {"id": "run-2", "state": "running", "created_at": dt(0), "ended_at": None},
    ]
    summary = soak_summary(
        runs,
        {RUN: steps, "run-2": [step("x", "queued")]},
        {RUN: attempts, "run-2": [attempt("x", 1, "queued", 1.0)]},
        execs + [execution("a", 5.0, 5.5)],
    )
    assert summary["runs_triggered"] == 2 and summary["runs_completed"] == 1
    assert summary["steps_lost"] == 1 and summary["duplicated_successful_attempts"] == 1
    assert summary["attempts"] == 3
    assert summary["dispatch_latency_p99_s"] == pytest.approx(0.1)


def test_format_table_marks_misses():
    steps, attempts, execs = clean_run()
    good = row_of(steps, attempts, execs, [Fault("k", T0, T0, in_flight=[], pending_after=["b"])])
    bad = row_of(
        [step("a", "running")],
        [attempt("a", 1, "running", 0.0, 0.5)],
        [],
        [Fault("k", T0, T0, in_flight=["a"])],
        state="running",
    )
    text = format_table([good, bad])
    lines = text.splitlines()
    assert lines[0].startswith("scenario") and len(lines) == 4
    assert lines[2].endswith("ok") and " 2.0 " in lines[2]  # b, new work, ended at +2.0 s
    assert "never" in lines[3] and lines[3].endswith("MISS: lost,recovery")


def test_ts_accepts_datetimes_strings_and_numbers():
    assert ts(None) is None
    assert ts(dt(1.5)) == pytest.approx(T0 + 1.5)
    assert ts(datetime(1970, 1, 1, 0, 0, 10)) == 10.0  # naive = UTC (SQLite)
    assert ts("1970-01-01T00:00:10+00:00") == 10.0
    assert ts(12) == 12.0


def test_log_highlights_groups_repeats_and_keeps_the_first_line():
    text = "\n".join(
        [
            "2026-11-23 13:02:53,145 INFO flowkit.scheduler.loop: scheduler starting",
            "2026-11-23 13:02:54,001 WARNING flowkit.worker: run 3f0c0000-0000-0000-0000-000000000001 step a: lost",
            "2026-11-23 13:02:55,002 WARNING flowkit.worker: run 3f0c0000-0000-0000-0000-000000000002 step a: lost",
            "2026-11-23 13:02:56,003 ERROR flowkit.cli: boom 42",
        ]
    )
    top = log_highlights(text)
    assert [h["count"] for h in top] == [2, 1]
    assert top[0]["line"].endswith("000000000001 step a: lost")
    assert "boom 42" in top[1]["line"]


def test_victim_outcome_tells_whether_the_killed_child_was_inside_the_body():
    from bench.faults_metrics import victim_outcome

    fault = Fault("child_kill", T0 + 10.0, T0 + 10.0, victim_pid=4242, victim_step="b")
    hit, text = victim_outcome(fault, [execution("a", 1.0, 2.0)])
    assert hit and "was running at the fault" in text
    hit, text = victim_outcome(fault, [execution("b", 9.0, 9.5)])
    assert not hit and "had returned 0.500 s before the fault" in text
    hit, text = victim_outcome(fault, [execution("b", 9.0, 10.5)])
    assert hit and "returned 0.500 s after it" in text


def test_a_fault_that_missed_its_step_body_marks_the_row():
    steps, attempts, execs = clean_run()
    fault = Fault("child_kill", T0 + 0.5, T0 + 0.5, in_flight=["a"], pending_after=["b", "c"], victim_hit=False)
    assert row_of(steps, attempts, execs, [fault]).misses == ["aim"]


def test_a_body_that_ended_but_whose_success_was_discarded_is_counted():
    # Given b's body ran to its end twice before its success was recorded (a finish thrown
    # away, the body run again), and c's body ended but its attempt 1 did not succeed
    steps, attempts, execs = clean_run()
    attempts[2] = attempt("c", 1, "cancelled", 2.1, 2.2, 2.95)
    attempts.append(attempt("c", 2, "success", 3.0, 3.05, 3.4))
    execs += [execution("b", 1.25, 1.28), execution("c", 3.1, 3.3, number=2)]
    outage = Fault("pg_crash", T0 + 0.5, T0 + 0.6, in_flight=[], pending_after=["b"])
    # Then both count as discarded bodies, and a miss where the fault killed no body
    row = row_of(steps, attempts, execs, [outage])
    assert row.bodies_discarded == 2 and row.discarded_examples == ["b#1", "c#1"]
    assert "discarded" in row.misses and row.dup_after_success == 0
    # but only context after a worker kill (a body the kill cut off before its finish)
    killed = row_of(
        steps, attempts, execs, [Fault("worker_kill", T0 + 0.5, T0 + 0.6, in_flight=[], pending_after=["b"])]
    )
    assert killed.bodies_discarded == 2 and "discarded" not in killed.misses
    # and a clean run has none
    assert row_of(*clean_run()).bodies_discarded == 0
