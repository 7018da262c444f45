"""The SQL state store: the only module that talks SQL. Not public API.

Every state change is a compare-and-set (the old state sits in the WHERE clause) and
appends an event row in the same transaction; the events table is the audit trail.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    create_engine,
    delete,
    event,
    func,
    insert,
    literal_column,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError, OperationalError

from .. import jsonsafe
from ..config import redact
from ..errors import MigrationRequired, NotFoundError, StoreUnavailable
from ..spec import FlowSpec
from ..states import AttemptState, RunState, StepState
from . import tables as t
from .base import (
    Tx,
    as_utc,
    normalize_url,
    one_line,
    read_flow_spec,
    read_results,
    row_dict,
    upsert,
    utcnow,
)
from .machine import initial_rows
from .machine_types import Claim
from .map_ops import MapReads, counted_maps_query
from .operator_ops import OperatorOps
from .picture_reads import PictureReads
from .scheduler_ops import SchedulerOps
from .trigger_ops import TriggerOps, sync_subscriptions
from .worker_ops import WorkerOps

#: Imported from here by code outside the store (the worker, the harness, tests).
__all__ = ["Claim", "SqlStore", "SqlStoreBase", "Tx", "as_utc", "normalize_url", "utcnow"]

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).parent / "migrations"


class SqlStoreBase:
    """State store on SQLite (default) or PostgreSQL.

    The engine is created lazily per process: a forked Celery pool child must not reuse
    its parent's connections.
    """

    def __init__(self, url: str, *, fast_path: bool = True) -> None:
        self.url = normalize_url(url)
        #: The worker's claim and successful finish as PostgreSQL's one-statement forms
        #: (:mod:`.pg_fast`); off, PostgreSQL runs the generic machine as SQLite does (the
        #: equivalence test compares the two). SQLite has no fast path.
        self.fast_path = fast_path and not self.is_sqlite
        self._engine: Engine | None = None
        self._pid: int | None = None
        self._claim_engine: Engine | None = None
        self._claim_pid: int | None = None
        self._lock = threading.Lock()
        from .hot import HotConnections

        #: The worker's one-statement claims and finishes (PostgreSQL): per-thread
        #: autocommit connections of claim_engine and engine, outside their pools.
        self.hot_claims = HotConnections(lambda: self.claim_engine)
        self.hot_finishes = HotConnections(lambda: self.engine)
        #: Parsed specs by (flow, version): a version is a content hash, so it never changes;
        #: a 10,000-step spec takes ~0.1 s to parse, and the dags refresh reads every flow.
        self._parsed: dict[tuple[str, str], FlowSpec] = {}
        #: Run first in every :meth:`tx` of this store object, inside the transaction: the
        #: scheduler's lease check (flowkit/scheduler/lease.py), which raises LeaseLost to
        #: refuse the whole transaction. Only a scheduler process's store has one; workers'
        #: writes are not fenced.
        self.fence: Callable[[Connection], None] | None = None

    def _spec_from(self, name: str, version: str, load: Any) -> FlowSpec:
        key = (name, version)
        spec = self._parsed.get(key)
        if spec is None:
            spec = self._parsed[key] = load()
        return spec

    # -- engine -------------------------------------------------------------------
    @property
    def is_sqlite(self) -> bool:
        return self.url.startswith("sqlite")

    @property
    def engine(self) -> Engine:
        if self._engine is None or self._pid != os.getpid():
            with self._lock:
                if self._engine is None or self._pid != os.getpid():
                    self._engine = self._make_engine()
                    self._pid = os.getpid()
        return self._engine

    def _make_engine(self) -> Engine:
        if self.is_sqlite:
            path = self.url.split("///", 1)[-1]
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            engine = create_engine(
                self.url,
                connect_args={"check_same_thread": False, "timeout": 30},
                pool_size=5,
                max_overflow=10,
            )

            @event.listens_for(engine, "connect")
            def _pragmas(dbapi_conn: Any, _rec: Any) -> None:
                dbapi_conn.isolation_level = None  # we issue BEGIN ourselves, below
                cur = dbapi_conn.cursor()
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute("PRAGMA synchronous=NORMAL")
                cur.execute("PRAGMA busy_timeout=30000")
                cur.execute("PRAGMA foreign_keys=ON")
                cur.close()

            @event.listens_for(engine, "begin")
            def _begin(conn: Connection) -> None:
                # IMMEDIATE takes the write lock up front: a deferred transaction that
                # later upgrades to a writer can fail with "database is locked".
                conn.exec_driver_sql("BEGIN IMMEDIATE")

            return engine
        # No pre-ping: it costs a round trip per checkout on the hot path. A connection the
        # server dropped fails its statement, SQLAlchemy invalidates the pool, and the caller
        # retries (the worker retries recording an outcome until the store answers).
        return create_engine(self.url, pool_size=5, max_overflow=10, pool_recycle=1800)

    @property
    def claim_engine(self) -> Engine:
        """PostgreSQL connections whose commits do not wait for the WAL flush, for claims only.

        A claim lost in a database crash is harmless: the attempt reads as queued again, its
        message is still unacknowledged (or the scheduler publishes the queued attempt again),
        and the outcome, written on :attr:`engine` with a flushed commit, also flushes every
        claim committed before it. It saves one disk flush per step on the hot path.
        """
        if self._claim_engine is None or self._claim_pid != os.getpid():
            with self._lock:
                if self._claim_engine is None or self._claim_pid != os.getpid():
                    self._claim_engine = create_engine(
                        self.url,
                        pool_size=2,
                        max_overflow=8,
                        pool_recycle=1800,
                        connect_args={"options": "-c synchronous_commit=off"},
                    )
                    self._claim_pid = os.getpid()
        return self._claim_engine

    def dispose(self) -> None:
        self.hot_claims.close()
        self.hot_finishes.close()
        if self._engine is not None and self._pid == os.getpid():
            self._engine.dispose()
        self._engine = None
        if self._claim_engine is not None and self._claim_pid == os.getpid():
            self._claim_engine.dispose()
        self._claim_engine = None

    @contextmanager
    def _conn(self) -> Iterator[Connection]:
        try:
            with self.engine.begin() as conn:
                yield conn
        except OperationalError as exc:
            if "no such table" in str(exc) or "does not exist" in str(exc):
                raise MigrationRequired(
                    f"the database at {redact(self.url)} has no flowkit tables; run `flowkit db upgrade`"
                ) from exc
            if "could not connect" in str(exc) or "Connection refused" in str(exc):
                raise StoreUnavailable(
                    f"cannot reach the database at {redact(self.url)}: {one_line(exc.orig)}; check "
                    "FLOWKIT_DATABASE_URL and that the server runs"
                ) from exc
            raise

    @contextmanager
    def tx(self, actor: str, now: datetime | None = None) -> Iterator[Tx]:
        with self._conn() as conn:
            if self.fence is not None:
                self.fence(conn)
            tx = Tx(conn, actor, now)
            yield tx
            tx.flush()

    # -- schema -------------------------------------------------------------------
    def _alembic_config(self, conn: Connection | None = None) -> Any:
        from alembic.config import Config

        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        cfg.set_main_option("sqlalchemy.url", self.url.replace("%", "%%"))
        if conn is not None:
            cfg.attributes["connection"] = conn
        return cfg

    def upgrade(self) -> str:
        from alembic import command

        with self.engine.connect() as conn:
            if self.is_sqlite:
                conn.exec_driver_sql("COMMIT") if conn.in_transaction() else None
            command.upgrade(self._alembic_config(conn), "head")
            conn.commit()
        return self.schema_revision() or ""

    def schema_revision(self) -> str | None:
        from alembic.runtime.migration import MigrationContext

        with self.engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()

    def head_revision(self) -> str:
        from alembic.script import ScriptDirectory

        return ScriptDirectory.from_config(self._alembic_config()).get_current_head() or ""

    def ensure_schema(self, *, auto_upgrade: bool) -> None:
        """Upgrade (when allowed) or say exactly what to run when the schema is behind."""
        try:
            current = self.schema_revision()
        except OperationalError as exc:
            raise StoreUnavailable(
                f"cannot reach the database at {redact(self.url)}: {one_line(exc.orig)}; check "
                "FLOWKIT_DATABASE_URL and that the server runs"
            ) from exc
        if current == self.head_revision():
            return
        if auto_upgrade:
            self.upgrade()
            return
        raise MigrationRequired(
            f"the database at {redact(self.url)} is at schema {current or 'none'}, flowkit needs "
            f"{self.head_revision()}; run `flowkit db upgrade`"
        )

    # -- dags -------------------------------------------------------------------------
    def known_dag_files(self) -> dict[str, tuple[str, list[FlowSpec] | None, Any, dict[str, str]]]:
        from ..errors import DagLoadError

        out: dict[str, tuple[str, list[FlowSpec] | None, Any, dict[str, str]]] = {}
        with self._conn() as conn:
            files = conn.execute(select(t.dag_files)).all()
            latest = {r.name: r.version for r in conn.execute(select(t.flows.c.name, t.flows.c.version))}
            latest_specs = {
                n: self._spec_from(n, v, lambda n=n, v=v: read_flow_spec(conn, n, v)) for n, v in latest.items()
            }
        for f in files:
            names = json.loads(f.flow_names)
            err = DagLoadError(f.error, path=f.path, lineno=f.error_lineno) if f.error else None
            specs = [latest_specs[n] for n in names if n in latest_specs]
            if len(specs) != len(names) or f.helpers is None:
                continue  # incomplete, or recorded before helpers were pinned: import it again
            out[f.path] = (f.hash, specs, err, json.loads(f.helpers or "{}"))
        return out

    def record_load(self, files: Iterable[Any], *, complete: bool = True) -> None:
        """Write one load report: file hashes and errors, new flow versions with their source.

        ``complete``: the report covers the whole dags folder, so files it lacks are gone and
        flows it lacks are inactive. Otherwise (one file imported again) only the flows of
        its files are touched.
        """
        files = list(files)
        now = utcnow()
        with self._conn() as conn:
            present: set[str] = set()
            seen_paths: list[str] = []
            for r in files:
                seen_paths.append(r.path)
                problem = r.problem
                good = [] if problem else r.flows
                upsert(
                    conn,
                    t.dag_files,
                    dict(
                        # a name clash depends on other files: keep no hash, so it is re-checked
                        path=r.path,
                        hash="" if r.conflict else r.hash,
                        import_ms=r.import_ms,
                        error=problem.message if problem else None,
                        error_lineno=problem.lineno if problem else None,
                        flow_names=json.dumps([s.name for s in good]),
                        loaded_at=now,
                        helpers=json.dumps(r.helper_hashes, sort_keys=True),
                    ),
                    ["path"],
                )
                for m in r.modules if good else []:
                    upsert(
                        conn,
                        t.module_sources,
                        dict(hash=m.hash, source=m.source, created_at=now),
                        ["hash"],
                        update_columns=[],
                    )
                for spec in good:
                    present.add(spec.name)
                    # A cached file's versions are stored already: serialising a 10,000-step
                    # spec again on every refresh cost the scheduler about 0.3 s of CPU.
                    if not r.cached:
                        upsert(
                            conn,
                            t.flow_versions,
                            dict(
                                flow_name=spec.name,
                                version=spec.version,
                                path=r.path,
                                spec_json=spec.to_json(),
                                source=r.source,
                                created_at=now,
                            ),
                            ["flow_name", "version"],
                            update_columns=[],
                        )
                    for m in r.modules:
                        upsert(
                            conn,
                            t.flow_modules,
                            dict(
                                flow_name=spec.name,
                                version=spec.version,
                                name=m.name,
                                path=m.path,
                                hash=m.hash,
                                package=m.package,
                            ),
                            ["flow_name", "version", "name"],
                            update_columns=[],
                        )
                    values = dict(
                        name=spec.name,
                        version=spec.version,
                        path=r.path,
                        schedule=spec.schedule,
                        owner=spec.owner,
                        description=spec.description,
                        active=True,
                        updated_at=now,
                    )
                    # paused is the operator's choice: set on insert, never overwritten here
                    upsert(conn, t.flows, {**values, "paused": False}, ["name"], update_columns=values)
            if complete:
                conn.execute(delete(t.dag_files).where(t.dag_files.c.path.not_in(seen_paths)))
            # A flow whose file failed to import keeps its last good version, still active.
            broken = {r.path for r in files if r.problem}
            gone = update(t.flows).where(t.flows.c.name.not_in(present), t.flows.c.path.not_in(broken))
            if not complete:
                gone = gone.where(t.flows.c.path.in_(seen_paths))
            conn.execute(gone.values(active=False))
            sync_subscriptions(conn, [s for r in files if not r.problem for s in r.flows])

    def dag_file_rows(self) -> list[dict[str, Any]]:
        with self._conn() as conn:
            return [row_dict(r) for r in conn.execute(select(t.dag_files).order_by(t.dag_files.c.path))]

    def list_flows(self, *, include_inactive: bool = False) -> list[dict[str, Any]]:
        q = select(t.flows).order_by(t.flows.c.name)
        if not include_inactive:
            q = q.where(t.flows.c.active.is_(True))
        with self._conn() as conn:
            return [row_dict(r) for r in conn.execute(q)]

    def flow_spec(self, name: str, version: str | None = None) -> FlowSpec:
        with self._conn() as conn:
            if version is None:
                row = conn.execute(select(t.flows.c.version, t.flows.c.active).where(t.flows.c.name == name)).first()
                if row is None or not row.active:
                    known = [r.name for r in conn.execute(select(t.flows.c.name).where(t.flows.c.active.is_(True)))]
                    import difflib

                    close = difflib.get_close_matches(name, known, n=1)
                    hint = f' Did you mean "{close[0]}"?' if close else ""
                    raise NotFoundError(
                        f'no flow named "{name}".{hint} Known flows: {", ".join(sorted(known)) or "none"} '
                        "(see `flowkit dags list`)",
                        flow=name,
                    )
                version = row.version
            return self._spec_from(name, version, lambda: read_flow_spec(conn, name, version))

    def flow_source(self, name: str, version: str) -> tuple[str, str]:
        with self._conn() as conn:
            row = conn.execute(
                select(t.flow_versions.c.path, t.flow_versions.c.source).where(
                    t.flow_versions.c.flow_name == name, t.flow_versions.c.version == version
                )
            ).first()
        if row is None:
            raise NotFoundError(f'flow "{name}" version {version} is not in the store', flow=name)
        return row.path, row.source

    def flow_modules(self, name: str, version: str) -> list[Any]:
        """The helper modules pinned with a flow version (none for versions stored before)."""
        from ..loading.pinned import ModuleSource

        m, src = t.flow_modules.c, t.module_sources.c
        with self._conn() as conn:
            rows = conn.execute(
                select(m.name, m.path, m.package, src.source)
                .join_from(t.flow_modules, t.module_sources, m.hash == src.hash)
                .where(m.flow_name == name, m.version == version)
                .order_by(m.name)
            ).all()
        return [ModuleSource(name=r.name, path=r.path, source=r.source, package=bool(r.package)) for r in rows]

    # -- runs ---------------------------------------------------------------------------
    def create_run(
        self,
        spec: FlowSpec,
        params: dict[str, Any],
        *,
        actor: str,
        trigger: str = "manual",
        reason: str = "",
        logical_date: datetime | None = None,
        parent_run_id: str | None = None,
        backfill_id: int | None = None,
        on_created: Callable[[Tx, str], None] | None = None,
    ) -> str | None:
        """Create a queued run with every step pending. Returns None if the logical date exists.
        A ``backfill_id`` puts the run in that backfill's lane (flowkit/store/run_lanes.py).

        ``on_created(tx, run_id)`` runs in the run's transaction (a trigger consumes its
        events there; what it raises rolls the run back)."""
        run_id = str(uuid.uuid4())
        try:
            with self.tx(actor) as tx:
                tx.conn.execute(
                    insert(t.runs).values(
                        id=run_id,
                        flow_name=spec.name,
                        version=spec.version,
                        state=RunState.QUEUED.value,
                        params=jsonsafe.dumps(params, sort_keys=True),
                        trigger=trigger,
                        triggered_by=actor,
                        parent_run_id=parent_run_id,
                        backfill_id=backfill_id,
                        logical_date=logical_date,
                        created_at=tx.now,
                        updated_at=tx.now,
                        steps_left=len(spec.steps),
                        waits=0,
                    )
                )
                tx.conn.execute(insert(t.step_runs), initial_rows(spec, run_id, tx.now))
                tx.event(
                    "run_created",
                    run_id=run_id,
                    new=RunState.QUEUED.value,
                    reason=reason or f"{trigger} trigger, version {spec.version}",
                )
                if on_created is not None:
                    on_created(tx, run_id)
        except IntegrityError:
            if logical_date is not None:
                return None
            raise
        return run_id

    def resolve_run_id(self, prefix: str) -> str:
        with self._conn() as conn:
            ids = [
                r[0]
                for r in conn.execute(
                    select(t.runs.c.id).where(t.runs.c.id.startswith(prefix, autoescape=True)).limit(2)
                )
            ]
        if not ids:
            raise NotFoundError(f"no run with id {prefix!r}; see `flowkit runs list`")
        if len(ids) > 1:
            raise NotFoundError(f"run id prefix {prefix!r} is ambiguous; give more characters")
        return str(ids[0])

    def get_run(self, run_id: str) -> dict[str, Any]:
        with self._conn() as conn:
            row = conn.execute(select(t.runs).where(t.runs.c.id == run_id)).first()
        if row is None:
            raise NotFoundError(f"no run with id {run_id!r}; see `flowkit runs list`")
        out = row_dict(row)
        out["params"] = json.loads(out["params"])
        return out

    def list_runs(
        self, flow: str | None = None, limit: int = 20, states: Iterable[str] | None = None
    ) -> list[dict[str, Any]]:
        q = select(t.runs).order_by(t.runs.c.created_at.desc()).limit(limit)
        if flow:
            q = q.where(t.runs.c.flow_name == flow)
        if states:
            q = q.where(t.runs.c.state.in_(list(states)))
        with self._conn() as conn:
            rows = [row_dict(r) for r in conn.execute(q)]
        for r in rows:
            r["params"] = json.loads(r["params"])
        return rows

    def last_logical_date(self, flow: str) -> datetime | None:
        with self._conn() as conn:
            return as_utc(
                conn.execute(select(func.max(t.runs.c.logical_date)).where(t.runs.c.flow_name == flow)).scalar()
            )

    def runs_needing_attention(self) -> list[str]:
        """Running runs the counters cannot move on their own: created before the counters
        existed, counted down but not ended, or holding a step in flight whose latest attempt
        already ended. Indexed lookups, not a scan of every active run
        (docs/design-notes.md#event-driven-readiness)."""
        a, sr, r = t.attempts, t.step_runs, t.runs
        finished_unseen = (
            select(a.c.run_id)
            .join(sr, (sr.c.run_id == a.c.run_id) & (sr.c.step == a.c.step) & (sr.c.attempts == a.c.number))
            .where(
                sr.c.state.in_([StepState.QUEUED.value, StepState.RUNNING.value]),
                a.c.state.in_([s.value for s in AttemptState if s.terminal]),
            )
        )
        uncounted = select(r.c.id).where(
            r.c.state == RunState.RUNNING.value, (r.c.steps_left.is_(None)) | (r.c.steps_left <= 0)
        )
        with self._conn() as conn:
            return sorted({row[0] for row in conn.execute(uncounted.union(finished_unseen))})

    def runs_with_followups(self) -> list[str]:
        """Running runs marked by a worker's finish that committed before deciding the steps it
        made ready (``runs.followups``), or holding a map step whose instances have all ended
        (its last instance's finish commits before the map step ends): that worker's next
        transaction decides them, or, if it died, the sweep does (without rewriting the
        counters, which live finishes go on bumping)."""
        r = t.runs.c
        marked = select(r.id).where(r.followups > literal_column("0"), r.state == RunState.RUNNING.value)
        maps_left = select(counted_maps_query().subquery().c.run_id)
        with self._conn() as conn:
            return sorted({row[0] for row in conn.execute(marked.union(maps_left))})

    def step_runs(self, run_id: str) -> list[dict[str, Any]]:
        with self._conn() as conn:
            return [row_dict(r) for r in conn.execute(select(t.step_runs).where(t.step_runs.c.run_id == run_id))]

    def attempts(self, run_id: str, step: str | None = None) -> list[dict[str, Any]]:
        q = select(t.attempts).where(t.attempts.c.run_id == run_id)
        if step:
            q = q.where(t.attempts.c.step == step)
        with self._conn() as conn:
            return [row_dict(r) for r in conn.execute(q.order_by(t.attempts.c.step, t.attempts.c.number))]

    def events(self, run_id: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
        q = select(t.events).order_by(t.events.c.id)
        if run_id:
            q = q.where(t.events.c.run_id == run_id)
        if limit:
            q = q.limit(limit)
        with self._conn() as conn:
            return [row_dict(r) for r in conn.execute(q)]

    def results(self, run_id: str, steps: Iterable[str] | None = None) -> dict[str, Any]:
        with self._conn() as conn:
            return read_results(conn, run_id, steps)

    def next_retry_at(self) -> datetime | None:
        """The next timer: a retry, or an approval's timeout (both in ``next_attempt_at``)."""
        with self._conn() as conn:
            value = conn.execute(
                select(func.min(t.step_runs.c.next_attempt_at)).where(
                    t.step_runs.c.state.in_([StepState.UP_FOR_RETRY.value, StepState.AWAITING_APPROVAL.value])
                )
            ).scalar()
        return as_utc(value)

    def expired_leases(
        self, queued_before: datetime, interrupted_before: datetime | None = None, limit: int | None = None
    ) -> list[dict[str, Any]]:
        """Queued attempts published before ``queued_before`` and not started (the oldest
        ``limit``); with ``interrupted_before``, also interrupted ones put back before it
        (sent again sooner)."""
        a = t.attempts.c
        due = a.dispatched_at < queued_before
        if interrupted_before is not None:
            due = due | ((a.interruptions > 0) & (a.dispatched_at < interrupted_before))
        q = select(t.attempts).where(a.state == AttemptState.QUEUED.value, due)
        if limit is not None:
            q = q.order_by(a.dispatched_at).limit(limit)
        with self._conn() as conn:
            return [row_dict(r) for r in conn.execute(q)]

    def unconfirmed_publishes(self, taken_before: datetime) -> list[dict[str, Any]]:
        """Queued attempts a worker's finish queued before ``taken_before`` and never confirmed
        publishing: that worker died or froze between its commit and its publish."""
        a = t.attempts.c
        with self._conn() as conn:
            return [
                row_dict(r)
                for r in conn.execute(
                    select(t.attempts).where(a.state == AttemptState.QUEUED.value, a.heartbeat_at < taken_before)
                )
            ]

    def silent_attempts(
        self, heartbeat_before: datetime, dispatched_before: datetime | None = None
    ) -> list[dict[str, Any]]:
        """Running attempts whose worker has not beaten since ``heartbeat_before`` (and, with
        ``dispatched_before``, that were not published again since then)."""
        cond = [t.attempts.c.state == AttemptState.RUNNING.value, t.attempts.c.heartbeat_at < heartbeat_before]
        if dispatched_before is not None:
            cond.append(t.attempts.c.dispatched_at < dispatched_before)
        with self._conn() as conn:
            return [row_dict(r) for r in conn.execute(select(t.attempts).where(*cond))]

    def dataset_events(self, *, uri: str | None = None, run_id: str | None = None) -> list[dict[str, Any]]:
        """Which step runs read and wrote datasets, oldest first."""
        q = select(t.dataset_events).order_by(t.dataset_events.c.id)
        if uri:
            q = q.where(t.dataset_events.c.uri == uri)
        if run_id:
            q = q.where(t.dataset_events.c.run_id == run_id)
        with self._conn() as conn:
            return [row_dict(r) for r in conn.execute(q)]

    def child_runs(self, run_id: str) -> list[dict[str, Any]]:
        with self._conn() as conn:
            return [
                row_dict(r)
                for r in conn.execute(
                    select(t.runs).where(t.runs.c.parent_run_id == run_id).order_by(t.runs.c.created_at)
                )
            ]


class SqlStore(WorkerOps, SchedulerOps, OperatorOps, MapReads, PictureReads, TriggerOps, SqlStoreBase):
    """The store: reads and dags (above), the worker's claim/finish path (worker_ops), the
    scheduler's queries (scheduler_ops), operators' actions (operator_ops), reads of map
    instances (map_ops) and of run pictures (picture_reads)."""
