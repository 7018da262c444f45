"""The worker's path through the store: claim an attempt, beat, record the outcome.

Not public API. Each of these is one transaction; ``finish_attempt`` also moves the run
forward (the run state machine in :mod:`.machine`), so a chain hop needs no scheduler.
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import insert, select, update
from sqlalchemy.exc import DBAPIError

from ..graph import Decision, decide_counts
from ..spec import FlowSpec
from ..states import FINISHABLE_ATTEMPT, RUN_TERMINAL, AttemptState, StepState
from . import map_ops, saga
from . import tables as t
from .base import as_utc, read_flow_spec, read_results, upsert, utcnow
from .ledger import holds_for
from .machine_types import Claim, Dispatch, Effects, Gate, claimed_reason, started_reason, task_id_for
from .trigger_ops import write_dataset_inbox

if TYPE_CHECKING:
    from .sql import SqlStoreBase as _Base
else:
    _Base = object

log = logging.getLogger(__name__)

#: Runs whose flow and version a worker process remembers (a few hundred bytes each).
RUN_KEY_CACHE_SIZE = 4096


class WorkerOps(_Base):
    def claim_attempt(
        self,
        run_id: str,
        step: str,
        number: int,
        *,
        worker: str,
        lost_after: float,
        max_deliveries: int,
        specs: dict[tuple[str, str], FlowSpec] | None = None,
    ) -> Claim:
        """Mark an attempt running for ``worker``, or say why this delivery must not run it.

        With ``specs`` (a cache the worker keeps), the same transaction also reads the
        results of the step's upstreams: the worker's hot path is two transactions.
        """
        known = self._run_keys.get(run_id) if specs is not None and self.fast_path else None
        if known is not None and specs is not None and known in specs:
            claimed = self._claim_in_one_statement(run_id, step, number, worker, specs[known])
            if claimed is not None:
                return claimed
        a = t.attempts
        pk = (a.c.run_id == run_id, a.c.step == step, a.c.number == number)
        with self.tx(worker) as tx:
            row = tx.conn.execute(
                update(a)
                .where(*pk, a.c.state == AttemptState.QUEUED.value)
                .values(
                    state=AttemptState.RUNNING.value,
                    deliveries=a.c.deliveries + 1,
                    worker=worker,
                    started_at=tx.now,
                    heartbeat_at=tx.now,
                )
                .returning(a.c.deliveries, a.c.state, a.c.heartbeat_at, a.c.worker)
            ).first()
            won = row is not None
            if not won:
                row = tx.conn.execute(select(a).where(*pk)).first()
            if row is None:
                return Claim("unknown", detail="no such attempt in the store")
            if won:
                tx.cas_step(
                    run_id,
                    step,
                    [StepState.QUEUED],
                    StepState.RUNNING,
                    reason=started_reason(number, worker),
                    started_at=tx.now,
                )
                tx.event(
                    "attempt_started",
                    run_id=run_id,
                    step=step,
                    attempt=number,
                    old="queued",
                    new="running",
                    reason=claimed_reason(worker),
                )
            elif AttemptState(row.state).terminal:
                return Claim("done", deliveries=row.deliveries, detail=f"attempt already {row.state}")
            else:  # running: another worker holds it, or held it and was lost
                refused = self._take_over(
                    tx,
                    row,
                    run_id,
                    step,
                    number,
                    worker=worker,
                    lost_after=lost_after,
                    max_deliveries=max_deliveries,
                    specs=specs,
                )
                if refused is not None:
                    return refused
            deliveries = row.deliveries if won else row.deliveries + 1
            return self._claimed(tx, run_id, step, deliveries, specs)

    def _take_over(
        self,
        tx: Any,
        row: Any,
        run_id: str,
        step: str,
        number: int,
        *,
        worker: str,
        lost_after: float,
        max_deliveries: int,
        specs: dict[tuple[str, str], FlowSpec] | None,
    ) -> Claim | None:
        """A delivery of an attempt that is running (``row``): take it over from a worker
        that stopped beating (None), or say why not (a live duplicate, a poison attempt)."""
        a = t.attempts
        hb = as_utc(row.heartbeat_at)
        if hb and hb > tx.now - timedelta(seconds=lost_after):
            return Claim(
                "duplicate", deliveries=row.deliveries, detail=f"running on {row.worker}, heartbeat {hb.isoformat()}"
            )
        if row.deliveries >= max_deliveries:
            reason = (
                f"poison: the worker running this attempt was lost {row.deliveries} "
                f"times (last: {row.worker}); failing it instead of crash-looping. "
                "Look for OOM kills or crashes in that step, or raise FLOWKIT_MAX_DELIVERIES"
            )
            effects = self._end_lost(tx, run_id, step, number, row.heartbeat_at, reason, specs)
            return Claim("poison", deliveries=row.deliveries, detail=reason, effects=effects)
        took = (
            tx.conn.execute(
                update(a)
                .where(
                    a.c.run_id == run_id,
                    a.c.step == step,
                    a.c.number == number,
                    a.c.state == AttemptState.RUNNING.value,
                    a.c.heartbeat_at == row.heartbeat_at,
                )
                .values(deliveries=a.c.deliveries + 1, worker=worker, heartbeat_at=tx.now, started_at=tx.now)
            ).rowcount
            == 1
        )
        if not took:
            return Claim("duplicate", detail="another worker took the attempt over")
        tx.event(
            "attempt_redelivered",
            run_id=run_id,
            step=step,
            attempt=number,
            old="running",
            new="running",
            reason=f"worker {row.worker} lost; delivery {row.deliveries + 1} on {worker}",
        )
        return None

    def _claimed(
        self, tx: Any, run_id: str, step: str, deliveries: int, specs: dict[tuple[str, str], FlowSpec] | None
    ) -> Claim:
        """What the worker needs to run the attempt it claimed in ``tx``: the run's flow and
        params, with ``specs``, its upstreams' results, and a map instance's element."""
        run = tx.conn.execute(
            select(t.runs.c.flow_name, t.runs.c.version, t.runs.c.params).where(t.runs.c.id == run_id)
        ).one()
        self._note_run(run_id, (run.flow_name, run.version))
        upstream: dict[str, Any] | None = None
        if specs is not None:
            key = (run.flow_name, run.version)
            if key not in specs:
                specs[key] = read_flow_spec(tx.conn, *key)
            names = specs[key].step(step).upstream
            upstream = every_upstream(tx.conn, run_id, names, read_results(tx.conn, run_id, names) if names else {})
        item = map_ops.read_item(tx.conn, run_id, step) if map_ops.is_instance(step) else None
        return Claim(
            "run",
            flow=run.flow_name,
            version=run.version,
            params=json.loads(run.params),
            upstream=upstream,
            deliveries=deliveries,
            item=item,
        )

    def _claim_in_one_statement(self, run_id: str, step: str, number: int, worker: str, spec: FlowSpec) -> Claim | None:
        """PostgreSQL, a run this process has seen: the claim in one statement, no
        transaction around it; None when the attempt was not queued (the generic path
        tells a redelivery from a takeover)."""
        from . import pg_fast

        names = spec.step(step).upstream
        with self.hot_claims.connection() as hot:
            got = pg_fast.claim(
                hot, run_id=run_id, step=step, number=number, worker=worker, now=utcnow(), upstream=list(names)
            )
        if got is None:
            return None
        results = got[4]
        if any(n not in results for n in names):  # no connection taken on the hot path
            with self._conn() as conn:
                results = every_upstream(conn, run_id, names, results)
        return Claim(
            "run", flow=got[1], version=got[2], params=got[3], upstream=results, deliveries=got[0], item=got[5]
        )

    @property
    def _run_keys(self) -> dict[str, tuple[str, str]]:
        """run id -> (flow, version) of runs this process claimed steps of (bounded)."""
        cache: dict[str, tuple[str, str]] | None = getattr(self, "_run_key_cache", None)
        if cache is None:
            cache = {}
            self._run_key_cache = cache
        return cache

    def _note_run(self, run_id: str, key: tuple[str, str]) -> None:
        cache = self._run_keys
        if len(cache) >= RUN_KEY_CACHE_SIZE:
            cache.pop(next(iter(cache)))
        cache[run_id] = key

    def _end_lost(
        self,
        tx: Any,
        run_id: str,
        step: str,
        number: int,
        heartbeat_at: Any,
        reason: str,
        specs: dict[tuple[str, str], FlowSpec] | None,
        global_cap: int | None = None,
        action: str = "attempt_lost",
    ) -> Effects | None:
        """Fail a running attempt whose worker is gone (poison, a pool child killed at the hard
        time limit) and move the run on. ``heartbeat_at`` (unless ``...``) guards the
        compare-and-set: a worker that beat meanwhile keeps its attempt."""
        holds = tx.end_attempt(run_id, step, number, state=AttemptState.FAILED, heartbeat_at=heartbeat_at, error=reason)
        if holds is None:
            return None
        tx.event(action, run_id=run_id, step=step, attempt=number, old="running", new="failed", reason=reason)
        machine = tx.machine(self._spec_in(tx, run_id, specs), run_id, global_cap=global_cap)
        machine.attempt_ended(step, number, AttemptState.FAILED, error=reason)
        effects: Effects = machine.effects
        effects.wake = True
        return effects

    def _spec_in(self, tx: Any, run_id: str, specs: dict[tuple[str, str], FlowSpec] | None) -> FlowSpec:
        run = tx.conn.execute(select(t.runs.c.flow_name, t.runs.c.version).where(t.runs.c.id == run_id)).one()
        key = (run.flow_name, run.version)
        if specs is None:
            return read_flow_spec(tx.conn, *key)
        if key not in specs:
            specs[key] = read_flow_spec(tx.conn, *key)
        return specs[key]

    def heartbeat(self, keys: Iterable[tuple[str, str, int]], worker: str) -> list[tuple[str, str, int]]:
        """Mark these attempts alive; returns those no longer running on ``worker`` (an
        operator cancelled them, or another worker took them over): the worker stops what
        it can of them."""
        a = t.attempts
        keys = list(keys)
        lost: list[tuple[str, str, int]] = []
        if not keys:
            return lost
        now = utcnow()
        with self._conn() as conn:
            for run_id, step, number in keys:
                if (
                    conn.execute(
                        update(a)
                        .where(
                            a.c.run_id == run_id,
                            a.c.step == step,
                            a.c.number == number,
                            a.c.state == AttemptState.RUNNING.value,
                            a.c.worker == worker,
                        )
                        .values(heartbeat_at=now)
                    ).rowcount
                    == 0
                ):
                    lost.append((run_id, step, number))
        return lost

    def confirm_published(self, task_ids: Iterable[str]) -> None:
        """These queued attempts, which this worker's finishes queued, are with the broker:
        clear the mark that would have the scheduler publish them again."""
        ids = list(task_ids)
        if not ids:
            return
        a = t.attempts.c
        with self._conn() as conn:
            for start in range(0, len(ids), 1000):
                conn.execute(
                    update(t.attempts)
                    .where(
                        a.task_id.in_(ids[start : start + 1000]),
                        a.state == AttemptState.QUEUED.value,
                    )
                    .values(heartbeat_at=None)
                )

    def finish_attempt(
        self,
        run_id: str,
        step: str,
        number: int,
        *,
        worker: str,
        state: AttemptState,
        result_json: str | None = None,
        error: str | None = None,
        traceback: str | None = None,
        retry_delay: float | None = None,
        datasets: Iterable[tuple[str, str]] = (),
        spec: FlowSpec | None = None,
        chosen: list[str] | None = None,
        gate: Gate | None = None,
        global_cap: int | None = None,
        output: str | None = None,
        publish: Publish | None = None,
    ) -> Effects | None:
        """Record an attempt's outcome and move the run forward, in one transaction.

        ``output`` is the tail of a shell step's output, kept on the attempt. Returns what to
        do after the commit (attempts to publish, whether to wake the scheduler), or None if
        this worker no longer holds the attempt. ``publish``, if given, is called with
        attempts that are already committed while the finish still has work to do (see
        ``_finish_success_pg``); what it could not publish makes the effects wake the scheduler.
        """
        datasets = list(datasets)
        fast = self._finish_success_fast(
            run_id,
            step,
            number,
            worker=worker,
            state=state,
            result_json=result_json,
            datasets=datasets,
            spec=spec,
            gate=gate,
            global_cap=global_cap,
            output=output,
            publish=publish,
        )
        if fast is not None:
            return fast
        # Here too when the one-statement form did not find the attempt running on this
        # worker: the rare case (a lost claim, a takeover, a cancel) takes the generic path,
        # which holds the rule for all of them (_end_claimed_attempt).
        try:
            with self.tx(worker) as tx:
                extra: dict[str, Any] = {"output": output} if output is not None else {}
                holds = _end_claimed_attempt(
                    tx,
                    run_id,
                    step,
                    number,
                    worker=worker,
                    state=state,
                    error=error,
                    traceback=traceback,
                    retry_delay=retry_delay,
                    **extra,
                )
                if holds is None:
                    return None
                effects = self._record_outcome(
                    tx,
                    run_id,
                    step,
                    number,
                    state=state,
                    holds=holds,
                    result_json=result_json,
                    error=error,
                    retry_delay=retry_delay,
                    datasets=datasets,
                    spec=spec,
                    chosen=chosen,
                    gate=gate,
                    global_cap=global_cap,
                )
        except _NotClaimable:
            return None
        return effects

    def _finish_success_fast(
        self,
        run_id: str,
        step: str,
        number: int,
        *,
        worker: str,
        state: AttemptState,
        result_json: str | None,
        datasets: list[tuple[str, str]],
        spec: FlowSpec | None,
        gate: Gate | None,
        global_cap: int | None,
        output: str | None,
        publish: Publish | None,
    ) -> Effects | None:
        """A success in one statement on PostgreSQL (:mod:`.pg_fast`); None when this outcome
        does not take that form or the statement did not find the attempt running here."""
        # The one-statement form records no output: shell steps take the generic path. So
        # do branches, sensors (store.sensor_ops records each poke on the step row), and the
        # instances of a map step's compensation: each one's end starts the next (saga), a
        # rule the machine keeps in one place.
        if state != AttemptState.SUCCESS or spec is None or not self.fast_path or output is not None:
            return None
        instance = map_ops.is_instance(step)
        if instance and spec.step(step).kind == "compensation":
            return None
        if instance:  # counts down its map step instead of settling
            return map_ops.finish_success_pg(
                self,
                run_id,
                step,
                number,
                worker=worker,
                result_json=result_json,
                datasets=datasets,
                spec=spec,
                gate=gate,
                global_cap=global_cap,
            )
        if spec.step(step).kind in ("branch", "sensor"):  # a sensor's poke is recorded on its row
            return None
        return self._finish_success_pg(
            run_id,
            step,
            number,
            worker=worker,
            result_json=result_json,
            datasets=datasets,
            spec=spec,
            gate=gate,
            global_cap=global_cap,
            publish=publish,
        )

    def _record_outcome(
        self,
        tx: Any,
        run_id: str,
        step: str,
        number: int,
        *,
        state: AttemptState,
        holds: list[Any],
        result_json: str | None,
        error: str | None,
        retry_delay: float | None,
        datasets: list[tuple[str, str]],
        spec: FlowSpec | None,
        chosen: list[str] | None,
        gate: Gate | None,
        global_cap: int | None,
    ) -> Effects:
        """The rest of a generic finish, once the attempt is ended: result, datasets, audit
        event, and the run moved on by the machine."""
        if result_json is not None:
            self._store_result(tx, run_id, step, result_json)
        if state == AttemptState.SUCCESS:
            rows = [
                {"uri": uri, "run_id": run_id, "step": step, "attempt": number, "direction": direction, "at": tx.now}
                for uri, direction in datasets
            ]
            if rows:
                tx.conn.execute(insert(t.dataset_events), rows)
                if any(direction == "write" for _, direction in datasets):
                    # the trigger inbox rows, in the write's transaction (store/trigger_ops.py)
                    write_dataset_inbox(tx.conn, run_id, step, number, tx.now)
        tx.event(
            "attempt_finished",
            run_id=run_id,
            step=step,
            attempt=number,
            old="running",
            new=state.value,
            reason=(error or "")[:500],
        )
        machine = tx.machine(
            spec or self._spec_in(tx, run_id, None), run_id, global_cap=global_cap, gate=gate, worker_publishes=True
        )
        machine.attempt_ended(step, number, state, error=error, retry_delay=retry_delay, chosen=chosen)
        effects: Effects = machine.effects
        if holds:
            effects.wake = True  # slots freed: waiters can go now
        return effects

    def _finish_success_pg(
        self,
        run_id: str,
        step: str,
        number: int,
        *,
        worker: str,
        result_json: str | None,
        datasets: list[tuple[str, str]],
        spec: FlowSpec,
        gate: Gate | None,
        global_cap: int | None,
        publish: Publish | None = None,
    ) -> Effects | None:
        """The common case in one statement (:mod:`.pg_fast`); the machine finishes anything
        the statement leaves undecided.

        The statement commits on its own (no BEGIN/COMMIT round trips around it) unless this
        step has an on_success callback (its outbox row shares the outcome's transaction) or
        a one_success downstream step (which one success can decide while its other
        upstreams run). A downstream step it made ready and could not queue itself (a
        waiter, a skip, a map step) is then decided in a second transaction, and the run
        ended there if this was its last step. The statement marks the run for the first
        (``runs.followups``), and ``steps_left`` at 0 tells the second: if the worker dies in
        between, the scheduler's sweep reconciles the run (``runs_needing_attention``).

        What the statement queued is committed at once, so with ``publish`` it goes to the
        broker before that second transaction: a fan-out's first members start while the
        rest become waiters.
        """
        from . import pg_fast

        plan = _SuccessPlan.of(spec, run_id, step, gate, global_cap)

        def statement(conn: Any, now: Any) -> dict[str, Any] | None:
            return pg_fast.finish_success(
                conn,
                run_id=run_id,
                step=step,
                number=number,
                worker=worker,
                now=now,
                result_json=result_json,
                datasets=datasets,
                downstream=plan.downs,
                eligible=plan.eligible,
                task_ids=plan.task_ids,
                track_followup=plan.alone,
            )

        if plan.alone:
            with self.hot_finishes.connection() as hot:
                out = statement(hot, utcnow())
            if out is None:
                return None
            effects = self._follow_up_success(
                out,
                plan,
                run_id,
                step,
                number,
                worker=worker,
                spec=spec,
                gate=gate,
                global_cap=global_cap,
                publish=publish,
            )
        else:
            with self.tx(worker) as tx:
                out = statement(tx.conn, tx.now)
                if out is None:
                    return None
                machine = tx.machine(spec, run_id, global_cap=global_cap, gate=gate, worker_publishes=True)
                machine.callback("step", "on_success", step, StepState.SUCCESS.value, number)
                _settle_after_success(
                    tx,
                    machine,
                    spec,
                    run_id,
                    _undecided(spec, out),
                    run_may_end=out["stepped"] and out["steps_left"] == 0,
                )
            effects = machine.effects
        effects.to_send += plan.queued_by(out)
        if out["holds"]:
            effects.wake = True  # slots freed: waiters can go now
        return effects

    def _follow_up_success(
        self,
        out: dict[str, Any],
        plan: _SuccessPlan,
        run_id: str,
        step: str,
        number: int,
        *,
        worker: str,
        spec: FlowSpec,
        gate: Gate | None,
        global_cap: int | None,
        publish: Publish | None,
    ) -> Effects:
        """After a finish statement that committed alone: publish what it queued (with
        ``publish``, and then clears ``out["queued"]``), and decide in a second transaction
        the downstream steps it made ready but left undecided, and the run's end."""
        effects = Effects()
        undecided = _undecided(spec, out)
        if undecided and publish is not None and out["queued"]:
            # committed: out to the broker now, not after the second transaction
            effects.wake = bool(publish(plan.queued_by(out)))
            out["queued"] = []
        run_may_end = out["stepped"] and out["steps_left"] == 0
        if not undecided and not run_may_end:
            return effects
        try:
            with self.tx(worker) as tx:
                machine = tx.machine(spec, run_id, global_cap=global_cap, gate=gate, worker_publishes=True)
                _settle_after_success(tx, machine, spec, run_id, undecided, run_may_end=run_may_end)
        except DBAPIError as exc:
            # The outcome is committed: retrying the finish would lose the steps its
            # statement queued (they must still be published). The run is marked, so the
            # sweep decides the rest; wake the scheduler for it.
            log.warning(
                "run %s step %s: deciding what attempt %s made ready failed (%s); the scheduler's sweep decides it",
                run_id,
                step,
                number,
                " ".join(str(exc.orig).split())[:200],
            )
            effects.wake = True
            return effects
        machine.effects.wake = machine.effects.wake or effects.wake
        return machine.effects

    def _store_result(self, tx: Any, run_id: str, step: str, result_json: str) -> None:
        upsert(
            tx.conn,
            t.results,
            dict(run_id=run_id, step=step, value=result_json, size=len(result_json.encode()), created_at=tx.now),
            ["run_id", "step"],
        )

    def interrupt_attempt(self, run_id: str, step: str, number: int, *, worker: str, reason: str) -> bool:
        """Running -> queued for an attempt this worker was stopped in: not a failure, no retry
        used up; it keeps its slots, and is published again (by the broker's redelivery or
        the scheduler's sweep, whichever comes first). Never for a run that has ended: a
        cancel ends the attempt itself (and a terminated step is interrupted after it)."""
        a = t.attempts.c
        live_run = select(t.runs.c.id).where(
            t.runs.c.id == run_id, t.runs.c.state.not_in([s.value for s in RUN_TERMINAL])
        )
        with self.tx(worker) as tx:
            won = (
                tx.conn.execute(
                    update(t.attempts)
                    .where(
                        a.run_id == run_id,
                        a.step == step,
                        a.number == number,
                        a.state == AttemptState.RUNNING.value,
                        a.worker == worker,
                        a.run_id.in_(live_run),
                    )
                    .values(
                        state=AttemptState.QUEUED.value,
                        worker=None,
                        dispatched_at=tx.now,
                        heartbeat_at=None,
                        interruptions=a.interruptions + 1,
                    )
                ).rowcount
                == 1
            )
            if won:
                tx.cas_step(run_id, step, [StepState.RUNNING], StepState.QUEUED, reason=reason)
                tx.event(
                    "attempt_interrupted",
                    run_id=run_id,
                    step=step,
                    attempt=number,
                    old="running",
                    new="queued",
                    reason=reason,
                )
        return won

    def fail_running_attempt(
        self, run_id: str, step: str, number: int, *, actor: str, reason: str, global_cap: int | None = None
    ) -> Effects | None:
        """Fail an attempt whose process is known dead (e.g. killed at the hard time limit)."""
        with self.tx(actor) as tx:
            return self._end_lost(tx, run_id, step, number, ..., reason, None, global_cap, action="attempt_finished")


def every_upstream(conn: Any, run_id: str, names: Iterable[str], found: dict[str, Any]) -> dict[str, Any]:
    """``found`` (the stored results of upstreams ``names``) with None for every upstream that
    did not skip and has no stored result (it failed, or an operator marked it success
    before marks stored one), so ``ctx.upstream[name]`` holds for every direct upstream that
    did not skip. Reads step states only when a result is missing: the hot path pays nothing."""
    missing = [n for n in names if n not in found]
    if not missing:
        return found
    c = t.step_runs.c
    skipped = {
        r.step
        for r in conn.execute(
            select(c.step).where(c.run_id == run_id, c.step.in_(missing), c.state == StepState.SKIPPED.value)
        )
    }
    return {**found, **{n: None for n in missing if n not in skipped}}


class _NotClaimable(Exception):
    """The attempt a finish found queued is not this worker's to record: roll back."""


def _end_claimed_attempt(
    tx: Any, run_id: str, step: str, number: int, *, worker: str, state: AttemptState, **values: Any
) -> list[Any] | None:
    """End the attempt this worker ran, by the rule of :data:`flowkit.states.FINISHABLE_ATTEMPT`:
    running on this worker, or queued with no claimant. Returns its holds (given back), or
    None if another actor has it (a takeover, a cancel, a timeout).

    Queued: this worker's claim, committed without waiting for the disk (``claim_engine``),
    was lost in a database crash while the body ran, and no other worker has claimed the
    attempt since. Its outcome is recorded with the claim it lost: the audit trail reads
    queued -> running -> outcome, as after any claim, and the body does not run again.
    """
    claimed, unclaimed = FINISHABLE_ATTEMPT
    holds: list[Any] | None = tx.end_attempt(
        run_id, step, number, state=state, from_states=(claimed,), worker=worker, **values
    )
    if holds is not None:
        return holds
    a = t.attempts.c
    holds = tx.end_attempt(
        run_id,
        step,
        number,
        state=state,
        from_states=(unclaimed,),
        unclaimed_or=worker,
        started_at=tx.now,
        deliveries=a.deliveries + 1,
        **values,
    )
    if holds is None:
        return None
    why = "its claim was lost in a database crash; recorded with its outcome"
    tx.event(
        "attempt_started",
        run_id=run_id,
        step=step,
        attempt=number,
        old="queued",
        new="running",
        reason=f"{claimed_reason(worker)}; {why}",
    )
    if not tx.cas_step(
        run_id,
        step,
        [StepState.QUEUED],
        StepState.RUNNING,
        started_at=tx.now,
        reason=f"{started_reason(number, worker)}; {why}",
    ):
        raise _NotClaimable(f"run {run_id} step {step}: attempt {number} is queued but its step is not")
    log.warning("run %s step %s: attempt %s finished on %s after %s", run_id, step, number, worker, why)
    return holds


#: Dispatches attempts that are already committed; returns those it could not publish.
Publish = Callable[[list[Any]], list[Any]]


@dataclass(frozen=True)
class _SuccessPlan:
    """What the one-statement finish of ``step`` bumps and may queue itself."""

    run_id: str
    spec: FlowSpec
    downs: list[str]
    #: Downstream steps this worker may queue itself if this success makes them ready (no
    #: slot to take, a rule that runs when every upstream succeeded), with the gate's consent.
    eligible: list[str]
    task_ids: list[str]
    #: The statement commits on its own: no on_success callback (its outbox row shares the
    #: outcome's transaction) and no one_success downstream step (one success decides it).
    alone: bool

    @classmethod
    def of(cls, spec: FlowSpec, run_id: str, step: str, gate: Gate | None, global_cap: int | None) -> _SuccessPlan:
        downs = list(spec.downstream_of(step))
        eligible = (
            [] if gate is None or global_cap else [d for d in queueable_after_success(spec, step) if gate(spec.step(d))]
        )
        alone = "on_success" not in spec.step(step).callbacks and not any(
            spec.step(d).trigger == "one_success" for d in downs
        )
        return cls(run_id, spec, downs, eligible, [task_id_for(run_id, d, 1) for d in eligible], alone)

    def queued_by(self, out: dict[str, Any]) -> list[Dispatch]:
        """The attempts the statement queued (its ``out``), to publish."""
        queued = set(out["queued"])
        return [
            Dispatch(self.run_id, self.spec.name, self.spec.step(d), 1, task_id)
            for d, task_id in zip(self.eligible, self.task_ids, strict=True)
            if d in queued
        ]


#: Per spec (by identity; the spec is kept so its id is not reused): step -> what
#: ``queueable_after_success`` found. Workers keep one spec per flow version.
_QUEUEABLE: OrderedDict[int, tuple[FlowSpec, dict[str, tuple[str, ...]]]] = OrderedDict()
_QUEUEABLE_SPECS = 256


def queueable_after_success(spec: FlowSpec, step: str) -> tuple[str, ...]:
    """The downstream steps of ``step`` that a worker may queue itself when this success
    makes them ready (when no global cap applies, and with its gate's consent): no slot to
    take, and a rule that runs when every upstream succeeded. An approval waits for a
    person; a map step, or a map step's compensation, expands first (map_ops, saga).
    Built once per spec and step: a fan-out's root has thousands of downstream steps, and
    every member asks for its join."""
    entry = _QUEUEABLE.get(id(spec))
    if entry is None or entry[0] is not spec:
        entry = _QUEUEABLE[id(spec)] = (spec, {})
        if len(_QUEUEABLE) > _QUEUEABLE_SPECS:
            _QUEUEABLE.popitem(last=False)
    per_step = entry[1]
    found = per_step.get(step)
    if found is None:
        found = per_step[step] = tuple(
            d
            for d in spec.downstream_of(step)
            if spec.step(d).kind not in ("approval", "map")
            and not saga.undoes_a_map(spec, d)
            and not holds_for(spec, spec.step(d), None)
            and decide_counts(spec.step(d).trigger, 1, 1, 0, 0) == Decision.RUN
        )
    return found


def _undecided(spec: FlowSpec, out: dict[str, Any]) -> list[str]:
    """Downstream steps the finish statement bumped that are pending and that their counters
    decide (run, skip or upstream_failed), and that it did not queue itself."""
    queued = set(out["queued"])
    return [
        name
        for name, state, n_up, ok, bad, skipped in out["downs"]
        if name not in queued
        and state == StepState.PENDING.value
        and decide_counts(spec.step(name).trigger, n_up, ok, bad, skipped) != Decision.WAIT
    ]


def _settle_after_success(
    tx: Any, machine: Any, spec: FlowSpec, run_id: str, names: list[str], *, run_may_end: bool
) -> None:
    """Start, skip or fail the downstream steps ``names`` as their counters decide, and end the
    run if this was its last step. The rows are read again under a lock: after a finish that
    committed on its own, another actor (the sweep, an operator) may have moved them."""
    c = t.step_runs.c
    rows = (
        tx.conn.execute(
            select(c.step, c.state, c.n_up, c.ok_up, c.bad_up, c.skip_up)
            .where(c.run_id == run_id, c.step.in_(names))
            .order_by(c.step)
            .with_for_update()
        ).all()
        if names
        else []
    )
    to_start, ended = machine.decide_rows(rows)
    if to_start:
        machine.start(to_start, StepState.PENDING)
    if ended:
        machine.settle(ended)
    elif (
        run_may_end
        and tx.conn.execute(select(t.runs.c.steps_left).where(t.runs.c.id == run_id).with_for_update()).scalar() == 0
    ):
        machine.finish_run()
