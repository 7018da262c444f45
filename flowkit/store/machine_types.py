"""The run state machine's shared types and words. Not public API.

What every path of the machine (:mod:`.machine` and its hooks, the worker's and scheduler's
ops, PostgreSQL's one-statement forms in :mod:`.pg_fast`) shares: how a step ended as its
downstream steps count it, what a transaction leaves to do after its commit, and the audit
reasons of the moves the machine decides from counters, each written once here.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ..graph import Decision
from ..spec import StepSpec

# -- how an upstream ended, as its downstream steps count it ------------------------------------
OK, SKIP, BAD = "ok", "skip", "bad"
#: The counter of step_runs each outcome bumps.
COUNTER = {OK: "ok_up", SKIP: "skip_up", BAD: "bad_up"}

#: A step that ended, for :meth:`Machine.settle`: (name, outcome, the branches it chose).
Ended = tuple[str, str, list[str] | None]

# -- audit reasons of the moves decided from counters -------------------------------------------
NOT_CHOSEN = "not chosen by its branch"
UPSTREAM_SKIPPED = "an upstream was skipped"
RULE_NOT_MET = "its trigger rule is not met by how its upstreams ended"
UPSTREAM_FAILED = "an upstream step failed"
#: A step made a waiter: it takes a slot the scheduler grants.
WAITING = "ready; waiting for a slot"


def dispatched_reason(number: int) -> str:
    """A step queued with attempt ``number``."""
    return f"attempt {number} dispatched"


def started_reason(number: int, worker: str) -> str:
    """A step running: its attempt ``number`` claimed by ``worker``."""
    return f"attempt {number} started on {worker}"


def claimed_reason(worker: str) -> str:
    """An attempt running (its own event, beside the step's)."""
    return f"on {worker}"


def succeeded_reason(number: int) -> str:
    """A step that succeeded with attempt ``number``."""
    return f"attempt {number} succeeded"


def reason_for_skip(decision: Decision, *, skipped: int, not_chosen: bool) -> str:
    """Why a pending step that its counters decide ends without running (``decision`` is
    SKIP or UPSTREAM_FAILED): the same words whichever path decides it.

    ``skipped`` is its count of skipped upstream edges; ``not_chosen``, whether a branch
    upstream of it succeeded and chose other steps.
    """
    if decision == Decision.UPSTREAM_FAILED:
        return UPSTREAM_FAILED
    if decision != Decision.SKIP:
        raise ValueError(f"{decision} is not a decision to end a step without running it")
    if not_chosen:
        return NOT_CHOSEN
    return UPSTREAM_SKIPPED if skipped else RULE_NOT_MET


# -- what a transaction leaves for after its commit --------------------------------------------
@dataclass(frozen=True)
class Dispatch:
    """One attempt queued in SQL, to publish to the broker after the commit."""

    run_id: str
    flow: str
    step: StepSpec
    attempt: int
    task_id: str


@dataclass(frozen=True)
class CallbackDue:
    """A callback written to the outbox (table ``callbacks``), to publish after the commit."""

    id: str
    run_id: str | None  # None: a notification about no run (scope notify)
    flow: str
    scope: str  # flow | step | notify (a callable notifier, flowkit.notify.calls)
    kind: str
    step: str | None
    queue: str | None


@dataclass
class Effects:
    """What a transaction of the machine leaves for its caller to do after the commit."""

    to_send: list[Dispatch] = field(default_factory=list)
    #: The scheduler has work: waiters to grant, slots freed, a run ended, a timer set.
    wake: bool = False
    ended_runs: list[str] = field(default_factory=list)
    next_timer: datetime | None = None
    #: Callbacks to publish (flowkit.callbacks); never needed to move the run on.
    callbacks: list[CallbackDue] = field(default_factory=list)

    def merge(self, other: Effects) -> None:
        self.to_send += other.to_send
        self.callbacks += other.callbacks
        self.wake = self.wake or other.wake
        self.ended_runs += other.ended_runs
        if other.next_timer and (self.next_timer is None or other.next_timer < self.next_timer):
            self.next_timer = other.next_timer


#: May this step be queued now without the scheduler (no limit applies)? The worker passes
#: its backpressure view and fast-follow budget; None means "never": make it a waiter.
Gate = Callable[[StepSpec], bool]


@dataclass
class Claim:
    """What a worker learns when it claims an attempt."""

    outcome: str  # run | done | duplicate | poison | unknown
    flow: str = ""
    version: str = ""
    params: dict[str, Any] | None = None
    upstream: dict[str, Any] | None = None  # results of the step's upstreams, when asked for
    deliveries: int = 0
    detail: str = ""
    #: What failing a poison attempt left to do after the commit (Effects), if anything.
    effects: Any = None
    item: Any = None  # an instance of a map step: its element


def task_id_for(run_id: str, step: str, attempt: int) -> str:
    """Deterministic Celery task id: a re-sent attempt keeps its id (Flower links stay)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"flowkit:{run_id}/{step}/{attempt}"))
