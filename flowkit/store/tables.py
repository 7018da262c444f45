"""SQLAlchemy Core tables of the flowkit store (Alembic migrations mirror these)."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
    text,
)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_name)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

TS = DateTime(timezone=True)

dag_files = Table(
    "dag_files",
    metadata,
    Column("path", String(500), primary_key=True),
    Column("hash", String(64), nullable=False),
    Column("import_ms", Float, nullable=False, default=0.0),
    Column("error", Text),
    Column("error_lineno", Integer),
    Column("flow_names", Text, nullable=False, default="[]"),  # JSON list
    Column("loaded_at", TS, nullable=False),
    # JSON {path: hash} of the helper modules the file imported: editing one re-imports it.
    Column("helpers", Text),
)

flows = Table(
    "flows",
    metadata,
    Column("name", String(100), primary_key=True),
    Column("version", String(64), nullable=False),
    Column("path", String(500), nullable=False),
    Column("schedule", String(100)),
    Column("owner", String(100)),
    Column("description", Text, nullable=False, default=""),
    Column("active", Boolean, nullable=False, default=True),
    Column("paused", Boolean, nullable=False, default=False),
    Column("updated_at", TS, nullable=False),
)

flow_versions = Table(
    "flow_versions",
    metadata,
    Column("flow_name", String(100), primary_key=True),
    Column("version", String(64), primary_key=True),
    Column("path", String(500), nullable=False),
    Column("spec_json", Text, nullable=False),
    # The module source, so that every worker runs the exact code a run was pinned to
    # (docs/design-notes.md#pinned-code-per-run).
    Column("source", Text, nullable=False),
    Column("created_at", TS, nullable=False),
)

#: Helper module sources from the dags folder, once per content hash (see flowkit.pinned).
module_sources = Table(
    "module_sources",
    metadata,
    Column("hash", String(64), primary_key=True),
    Column("source", Text, nullable=False),
    Column("created_at", TS, nullable=False),
)

#: Which helper modules a flow version imports, under which names. Versions stored before
#: helpers were pinned have no rows here and import helpers from the dags folder.
flow_modules = Table(
    "flow_modules",
    metadata,
    Column("flow_name", String(100), primary_key=True),
    Column("version", String(64), primary_key=True),
    Column("name", String(300), primary_key=True),
    Column("path", String(1000), nullable=False),
    Column("hash", String(64), nullable=False),
    Column("package", Boolean, nullable=False, default=False),
    ForeignKeyConstraint(["flow_name", "version"], ["flow_versions.flow_name", "flow_versions.version"]),
    ForeignKeyConstraint(["hash"], ["module_sources.hash"]),
)

runs = Table(
    "runs",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("flow_name", String(100), nullable=False),
    Column("version", String(64), nullable=False),
    Column("state", String(20), nullable=False),
    Column("params", Text, nullable=False, default="{}"),  # JSON
    Column("trigger", String(20), nullable=False, default="manual"),
    Column("triggered_by", String(200), nullable=False, default=""),
    Column("parent_run_id", String(36)),
    Column("logical_date", TS),
    Column("created_at", TS, nullable=False),
    Column("started_at", TS),
    Column("ended_at", TS),
    Column("updated_at", TS, nullable=False),
    # Steps not yet in a terminal state: the run ends when it reaches 0. NULL for runs
    # created before the readiness counters existed (the scheduler recounts those).
    Column("steps_left", Integer),
    # Steps of this run that have waited for a slot so far (orders waiters fairly).
    Column("waits", Integer, nullable=False, default=0),
    # How a failed run ended its compensation (store/saga.py): "compensating" while they
    # run, then "compensated" or "compensation failed"; NULL when there was none.
    Column("outcome", String(30)),
    # Worker finishes that made a downstream step ready and committed without deciding it
    # (their follow-up transaction decides it next; a worker may die in between): the
    # sweep reconciles such runs, deciding every pending step, and resets this to 0.
    Column("followups", Integer, nullable=False, default=0, server_default="0"),
    # The backfill whose lane this run is in (its run cap, not the flow's): flowkit/backfill.
    Column("backfill_id", Integer),
    ForeignKeyConstraint(["flow_name", "version"], ["flow_versions.flow_name", "flow_versions.version"]),
    # A scheduled interval exists once, so catch-up can never create it twice
    # (docs/design-notes.md#one-run-per-interval).
    UniqueConstraint("flow_name", "logical_date", name="uq_runs_flow_logical_date"),
    Index("ix_runs_state", "state"),
    Index("ix_runs_flow_created", "flow_name", "created_at"),
    Index("ix_runs_backfill_state", "backfill_id", "state"),
    Index("ix_runs_followups", "id", postgresql_where=text("followups > 0"), sqlite_where=text("followups > 0")),
)

step_runs = Table(
    "step_runs",
    metadata,
    Column("run_id", String(36), primary_key=True),
    Column("step", String(100), primary_key=True),
    Column("state", String(20), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    # retry timer, held in SQL so a restart loses none (docs/design-notes.md#retry-timers-in-sql)
    Column("next_attempt_at", TS),
    Column("started_at", TS),
    Column("ended_at", TS),
    Column("updated_at", TS, nullable=False),
    # Readiness counters (docs/design-notes.md#event-driven-readiness): upstream edges, and
    # how many of them ended in success, failure (failed/upstream_failed/cancelled) or skip.
    # Written in the transaction that ends the upstream, so a step is decided when its own
    # counters change, never by a rescan.
    Column("n_up", Integer, nullable=False, default=0),
    Column("ok_up", Integer, nullable=False, default=0),
    Column("bad_up", Integer, nullable=False, default=0),
    Column("skip_up", Integer, nullable=False, default=0),
    # Order among steps waiting for a slot (state scheduled): the k-th waiter of each run
    # gets k, so runs take turns (fairness) within a priority.
    Column("wait_seq", Integer),
    Column("priority", Integer, nullable=False, default=0),
    # Attempts made before an operator's latest retry of the step: the retry budget counts
    # from there, while attempt numbers go on (task ids never collide).
    Column("retry_base", Integer, nullable=False, default=0),
    # Map steps (see store.map_ops). An instance row ("notify[3]") names its map step, its
    # index and its element (JSON). The map step's own row counts its instances: in all,
    # not yet ended, failed, and the next index to start (when max_parallel holds some back).
    Column("map_parent", String(100)),
    Column("map_index", Integer),
    Column("map_item", Text),
    Column("map_total", Integer),
    Column("map_left", Integer),
    Column("map_failed", Integer),
    Column("map_next", Integer),
    # Sensors (store.sensor_ops): the current wait's first poke (its time and attempt number;
    # the timeout counts from it), pokes so far, the last poke's time and what it said, and
    # when the wait times out. The next poke is next_attempt_at (state up_for_retry).
    Column("sensor_first_poke_at", TS),
    Column("sensor_first_attempt", Integer),
    Column("sensor_pokes", Integer),
    Column("sensor_last_poke_at", TS),
    Column("sensor_last_said", Text),
    Column("sensor_timeout_at", TS),
    ForeignKeyConstraint(["run_id"], ["runs.id"], ondelete="CASCADE"),
    Index("ix_step_runs_state_next", "state", "next_attempt_at"),
    Index("ix_step_runs_waiting", "state", "priority", "wait_seq"),
)

attempts = Table(
    "attempts",
    metadata,
    Column("run_id", String(36), primary_key=True),
    Column("step", String(100), primary_key=True),
    Column("number", Integer, primary_key=True),
    Column("task_id", String(36), nullable=False, unique=True),
    Column("state", String(20), nullable=False),
    Column("deliveries", Integer, nullable=False, default=0),
    Column("worker", String(200)),
    Column("dispatched_at", TS, nullable=False),
    Column("started_at", TS),
    # Running: the worker's last heartbeat. Queued by a worker's finish (fast-follow): when
    # that worker took it on, until it confirms the publish (then NULL); a queued attempt
    # whose publisher stays silent this long is published again by the scheduler.
    Column("heartbeat_at", TS),
    Column("ended_at", TS),
    Column("error", Text),
    Column("traceback", Text),
    Column("retry_delay", Float),  # set by Retry(delay=...) raised from the step
    # The slot ledger entries this attempt holds, as JSON [[key, amount], ...]: taken in the
    # transaction that queues the attempt, given back in the one that ends it (docs/design-notes.md#slot-ledger).
    Column("holds", Text),
    # Times a worker shutdown, broker or database loss interrupted this attempt (not failures).
    Column("interruptions", Integer, nullable=False, default=0),
    # The end of a shell step's output (at most flowkit.shell.OUTPUT_TAIL_BYTES); NULL otherwise.
    Column("output", Text),
    ForeignKeyConstraint(["run_id"], ["runs.id"], ondelete="CASCADE"),
    Index("ix_attempts_state", "state"),
)

#: The slot ledger: one row per limit (the global cap, a pool, a lock, a flow's step cap).
#: ``used`` always equals the sum of the holds of live attempts (see SqlStore.ledger_balance).
limits = Table(
    "limits",
    metadata,
    Column("key", String(200), primary_key=True),  # global | pool:NAME | lock:NAME | flow:NAME
    Column("capacity", Integer),  # NULL: unlimited
    Column("used", Integer, nullable=False, default=0),
    Column("updated_at", TS, nullable=False),
)

#: Scheduler membership and the active scheduler's lease (high availability).
schedulers = Table(
    "schedulers",
    metadata,
    Column("name", String(200), primary_key=True),
    Column("started_at", TS, nullable=False),
    Column("heartbeat_at", TS, nullable=False),
    Column("last_loop_at", TS),
    Column("stats", Text, nullable=False, default="{}"),  # JSON, for `flowkit status`
    Column("stopped_at", TS),  # set by a clean stop; NULL while it runs (or if it died)
    Column("config", Text),  # JSON: the settings it runs with (watermarks, cap), for `status`
)

#: One row (id 1): which scheduler is active. ``token`` goes up by one at every takeover and
#: fences the scheduler's writes (see flowkit/scheduler/lease.py); ``expires_at`` is database
#: time, pushed forward by the holder's renewals.
scheduler_lease = Table(
    "scheduler_lease",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("holder", String(200)),
    Column("token", BigInteger, nullable=False, unique=True),
    Column("expires_at", TS, nullable=False),
    Column("acquired_at", TS),
    Column("renewed_at", TS),
)

results = Table(
    "results",
    metadata,
    Column("run_id", String(36), primary_key=True),
    Column("step", String(100), primary_key=True),
    Column("value", Text, nullable=False),  # JSON
    Column("size", Integer, nullable=False),
    Column("created_at", TS, nullable=False),
    ForeignKeyConstraint(["run_id"], ["runs.id"], ondelete="CASCADE"),
)

events = Table(
    "events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", String(36)),
    # Set on a flow's own events (run_id NULL): an operator paused or unpaused it.
    Column("flow_name", String(100)),
    Column("step", String(100)),
    Column("attempt", Integer),
    Column("at", TS, nullable=False),
    Column("actor", String(200), nullable=False),
    Column("action", String(50), nullable=False),
    Column("old_state", String(20)),
    Column("new_state", String(20)),
    Column("reason", Text, nullable=False, default=""),
    Index("ix_events_run", "run_id", "id"),
    Index("ix_events_flow", "flow_name", "id"),
)

#: Callbacks to run (an outbox): written in the transaction that recorded the outcome,
#: published after it commits, marked done by the worker that ran it; the scheduler's
#: sweep publishes again the ones not done in time (at-least-once).
callbacks = Table(
    "callbacks",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("run_id", String(36)),  # NULL: a notification about no run (a missed scheduled interval)
    Column("step", String(100)),  # the step it is about (NULL: the run ended)
    Column("scope", String(10), nullable=False),  # flow | step | notify: whose callback to call
    Column("kind", String(20), nullable=False),  # on_success | on_failure | on_retry
    Column("state", String(20), nullable=False),  # the outcome: success, failed, up_for_retry
    Column("attempt", Integer),
    Column("error", Text),
    Column("queue", String(200)),
    Column("created_at", TS, nullable=False),
    Column("dispatched_at", TS, nullable=False),
    Column("done_at", TS),
    # scope notify: the notification (JSON) a flow's callable notifier receives (flowkit.notify.calls)
    Column("payload", Text),
    ForeignKeyConstraint(["run_id"], ["runs.id"], ondelete="CASCADE"),
    Index("ix_callbacks_pending", "done_at", "dispatched_at"),
)

dataset_events = Table(
    "dataset_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("uri", String(1000), nullable=False),
    Column("run_id", String(36), nullable=False),
    Column("step", String(100), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("direction", String(5), nullable=False),  # read | write
    Column("at", TS, nullable=False),
    ForeignKeyConstraint(["run_id"], ["runs.id"], ondelete="CASCADE"),
    Index("ix_dataset_events_uri", "uri"),
    Index("ix_dataset_events_run", "run_id"),
)

#: Notifications to deliver (an outbox): one row per notifiable audit event, written by
#: ``Tx.flush`` in the transaction of the event; a sender claims a row with a lease
#: (compare-and-set on ``lease_until``), so two senders never deliver one row at once.
notification_outbox = Table(
    "notification_outbox",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("kind", String(30), nullable=False),  # run_failed, retries_exhausted, ...
    Column("run_id", String(36)),
    Column("flow_name", String(100)),
    Column("step", String(100)),
    Column("reason", Text, nullable=False, default=""),
    Column("created_at", TS, nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", TS, nullable=False),
    Column("lease_holder", String(200)),
    Column("lease_until", TS),
    Column("done_at", TS),
    Column("outcome", String(20)),  # delivered | gave_up (NULL: pending)
    Index("ix_notification_outbox_pending", "done_at", "next_attempt_at"),
)

#: Every delivery attempt of a notification and its outcome.
notification_attempts = Table(
    "notification_attempts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("notification_id", Integer, nullable=False),
    Column("notifier", String(200), nullable=False),
    Column("number", Integer, nullable=False),
    Column("at", TS, nullable=False),
    Column("ok", Integer, nullable=False),  # 1 delivered, 0 failed
    Column("detail", Text, nullable=False, default=""),
    ForeignKeyConstraint(["notification_id"], ["notification_outbox.id"], ondelete="CASCADE"),
    Index("ix_notification_attempts_notification", "notification_id"),
)

#: Recent successful durations per (flow, step) for deadline prediction (flowkit.sla): a
#: fixed window (JSON lists, oldest first), so folding in a success never rescans history.
step_duration_stats = Table(
    "step_duration_stats",
    metadata,
    Column("flow_name", String(100), primary_key=True),
    Column("step", String(100), primary_key=True),
    Column("durations", Text, nullable=False, default="[]"),
    Column("queue_waits", Text, nullable=False, default="[]"),
    Column("updated_at", TS, nullable=False),
)

#: SLA actions already raised, one row each: the key (action, flow, run, step, logical date)
#: makes sla_at_risk/sla_missed once-only across restarts and schedulers.
sla_marks = Table(
    "sla_marks",
    metadata,
    Column("key", String(400), primary_key=True),
    Column("action", String(50), nullable=False),
    Column("flow_name", String(100), nullable=False),
    Column("run_id", String(36)),
    Column("step", String(100)),
    Column("at", TS, nullable=False),
)

Index("ix_attempts_ended_at", attempts.c.ended_at, attempts.c.task_id)

#: Whether the deadline sweep has folded this ended attempt into step_duration_stats: the
#: sweep reads the unfolded ones through a partial index, so a late commit is never skipped.
attempts.append_column(Column("sla_folded", Boolean, nullable=False, default=False, server_default=false()))
Index(
    "ix_attempts_unfolded",
    attempts.c.ended_at,
    postgresql_where=text("ended_at IS NOT NULL AND sla_folded = false"),
    sqlite_where=text("ended_at IS NOT NULL AND sla_folded = 0"),
)

#: Backfills (flowkit/backfill): a range of a flow's schedule intervals whose runs the
#: scheduler creates lazily, at most ``max_active_runs`` active at once, in its own lane.
#: ``handed`` intervals have been dealt with so far (created, re-run or left alone), the
#: last of them at ``cursor`` (its logical date); ``total`` is the range's interval count.
backfills = Table(
    "backfills",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("flow_name", String(100), nullable=False),
    Column("range_start", TS, nullable=False),
    Column("range_end", TS, nullable=False),
    Column("reprocess", String(10), nullable=False),  # none | failed | all
    Column("max_active_runs", Integer, nullable=False),
    Column("backwards", Boolean, nullable=False, default=False),
    Column("params", Text, nullable=False, default="{}"),  # JSON
    Column("state", String(20), nullable=False),  # running | paused | cancelled | done
    Column("total", Integer, nullable=False),
    Column("handed", Integer, nullable=False, default=0),
    Column("cursor", TS),
    Column("created_at", TS, nullable=False),
    Column("updated_at", TS, nullable=False),
    Column("ended_at", TS),
    Column("actor", String(200), nullable=False),
    Column("reason", Text, nullable=False, default=""),
    Index("ix_backfills_state", "state"),
)

#: Scheduled intervals an ``overlap="skip"`` policy dropped (the previous run was still
#: going): the sweep plans after them as after a created run, so one is never skipped twice
#: nor created later (flowkit/store/overlap_ops.py).
schedule_skips = Table(
    "schedule_skips",
    metadata,
    Column("flow_name", String(100), primary_key=True),
    Column("logical_date", TS, primary_key=True),
    Column("at", TS, nullable=False),
    Column("reason", Text, nullable=False, default=""),
)

#: Which flows wait for which events (flowkit.triggers): one row per condition of a loaded
#: flow's ``trigger_on``, rewritten by the loader. Keyed by (kind, source) first: the
#: transaction that commits an event looks its subscribers up by source.
trigger_subscriptions = Table(
    "trigger_subscriptions",
    metadata,
    Column("kind", String(10), primary_key=True),  # flow | dataset
    Column("source", String(1000), primary_key=True),  # the flow name or the dataset URI
    Column("target_flow", String(100), primary_key=True),
    Column("states", String(100), nullable=False, default=""),  # "|success|failed|" for flow
)

#: Trigger events to consume (an inbox): one row per (target flow, event), written in the
#: transaction that committed the event (a run's end: ``Tx.flush``; a dataset write: the
#: finish, generic path and PostgreSQL fast path). The scheduler's sweep consumes a row by
#: compare-and-set on ``consumed_at`` in the transaction that creates the run, never by an
#: id cursor (PostgreSQL commits serial ids out of order).
trigger_inbox = Table(
    "trigger_inbox",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("target_flow", String(100), nullable=False),
    Column("kind", String(10), nullable=False),
    Column("source", String(1000), nullable=False),
    # run:<run id>:<end state> or ds:<dataset_events id>: once per target and event
    Column("event_key", String(200), nullable=False),
    Column("source_run_id", String(36), nullable=False),
    Column("source_step", String(100)),
    Column("created_at", TS, nullable=False),
    Column("consumed_at", TS),
    # the run it started; NULL with consumed_at set: dropped (the flow no longer declares it)
    Column("consumed_run_id", String(36)),
    UniqueConstraint("target_flow", "event_key", name="uq_trigger_inbox_target_event"),
    Index(
        "ix_trigger_inbox_pending",
        "target_flow",
        "id",
        postgresql_where=text("consumed_at IS NULL"),
        sqlite_where=text("consumed_at IS NULL"),
    ),
    Index("ix_trigger_inbox_source_run", "source_run_id"),
    Index("ix_trigger_inbox_consumed_run", "consumed_run_id"),
)
