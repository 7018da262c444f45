"""Test helpers for flowkit users and flowkit's own tests: run flows in-process, no broker.

>>> harness = InlineHarness(store, dags_folder="dags")
>>> run_id = harness.trigger("orders", {"customer": 7})
>>> harness.run_until_done(run_id)
'success'
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import threading
from collections.abc import Callable, Iterable
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

from .config import Settings
from .dispatch.base import Backpressure, Dispatch
from .dispatch.events import MemoryEvents
from .execution.attempt import run_attempt
from .execution.callbacks import run_callback
from .execution.runtime import WorkerRuntime
from .loading.sync import sync_dags
from .scheduler.loop import Scheduler
from .spec import resolve_params
from .store.machine import CallbackDue
from .store.operator_ops import ActionResult, notify
from .store.sql import SqlStore, utcnow


class InlineDispatcher:
    """Collects dispatches; the harness runs them on an in-process worker.

    ``depths`` stands in for the broker's queue depths (for backpressure tests).
    """

    def __init__(self) -> None:
        self.sent: list[Dispatch] = []
        self.callbacks: list[CallbackDue] = []
        self.depths: dict[str, int] = {}
        self.revoked: list[str] = []

    def queue_name(self, queue: str | None) -> str:
        return queue or "flowkit"

    def queue_for(self, item: Dispatch) -> str:
        return self.queue_name(item.step.queue)

    def queue_depth(self, queue: str) -> int:
        return self.depths.get(queue, 0) + sum(1 for d in self.sent if self.queue_for(d) == queue)

    def dispatch_many(self, items: Iterable[Dispatch]) -> list[Dispatch]:
        self.sent.extend(items)
        return []

    def dispatch_callbacks(self, items: Iterable[CallbackDue]) -> None:
        self.callbacks.extend(items)

    def revoke(self, task_ids: list[str]) -> None:
        """Drop the revoked attempts' messages, as a worker does with a revoked task id."""
        self.revoked += task_ids
        self.sent = [d for d in self.sent if d.task_id not in task_ids]


class FakeClock:
    """A clock the test moves by hand (retry timers become instant)."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or utcnow()

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class SqliteTemplates:
    """Migrated SQLite databases built once and copied, for a test suite that opens a fresh
    store in every test.

    ``store(path)`` copies a migrated empty database instead of running the migrations again.
    With ``InlineHarness.templates`` set, the first harness on a fresh store syncs its dags
    folder as usual (the loader imports each dags file in a subprocess, about a second a
    folder) and the result is kept; later harnesses on a fresh store get a copy of it, then
    sync (which imports nothing that did not change). A template is keyed by the folder's
    path and the content of every file under it: a changed file gets a template of its own.

    >>> InlineHarness.templates = SqliteTemplates(tmp_dir)   # once, e.g. in a session fixture
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._empty: Path | None = None
        self._empty_counts: dict[str, int] = {}
        self._synced: dict[str, Path | None] = {}
        self._pending: dict[int, str] = {}  # id(store) -> key: synced from scratch, to be kept

    def store(self, path: str | Path) -> SqlStore:
        """A store on a copy of the migrated empty database, at ``path``."""
        shutil.copyfile(self._empty_template(), path)
        return SqlStore(f"sqlite:///{path}")

    def restore(self, store: SqlStore, dags_folder: str) -> bool:
        """Copy the synced ``dags_folder`` into ``store`` if the store is still as migrated
        (nothing written yet) and a template of the folder is kept; False if not done."""
        with self._lock:
            self._pending.pop(id(store), None)
        if not store.is_sqlite or store.url.endswith(":memory:") or not self._pristine(store):
            return False
        key = self._folder_key(dags_folder)
        with self._lock:
            if key not in self._synced:
                self._pending[id(store)] = key
                return False
            template = self._synced[key]
        if template is None:
            return False
        source = sqlite3.connect(template)
        raw = store.engine.raw_connection()
        try:
            source.backup(raw.driver_connection)  # type: ignore[arg-type]
        finally:
            raw.close()
            source.close()
        return True

    def remember(self, store: SqlStore, dags_folder: str) -> None:
        """Keep what ``store`` holds as the template of ``dags_folder``, if ``restore`` found
        it fresh and had no template of the folder (call it right after the sync)."""
        with self._lock:
            key = self._pending.pop(id(store), None)
            if key is None or key in self._synced or key != self._folder_key(dags_folder):
                return
            # Cron catch-up starts from when a flow was stored: a copy made later would find
            # its flows older than a fresh sync does. Flows with a schedule sync each time.
            if any(f["schedule"] for f in store.list_flows()):
                self._synced[key] = None
                return
            path = self.root / f"synced-{key[:16]}.db"
            target = sqlite3.connect(path)
            raw = store.engine.raw_connection()
            try:
                raw.driver_connection.backup(target)  # type: ignore[union-attr]
            finally:
                raw.close()
                target.close()
            self._synced[key] = path

    def _empty_template(self) -> Path:
        with self._lock:
            if self._empty is None:
                path = self.root / "empty.db"
                store = SqlStore(f"sqlite:///{path}")
                try:
                    store.upgrade()
                    self._empty_counts = self._counts(store)
                finally:
                    store.dispose()  # the last connection's close folds the WAL into the file
                self._empty = path
            return self._empty

    def _pristine(self, store: SqlStore) -> bool:
        self._empty_template()
        try:
            return self._counts(store) == self._empty_counts
        except Exception:  # not a database of ours
            return False

    @staticmethod
    def _counts(store: SqlStore) -> dict[str, int]:
        with store.engine.connect() as conn:
            names = [
                r[0]
                for r in conn.exec_driver_sql(
                    "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
                )
            ]
            return {n: int(conn.exec_driver_sql(f'SELECT count(*) FROM "{n}"').scalar() or 0) for n in names}

    @staticmethod
    def _folder_key(dags_folder: str) -> str:
        folder = Path(dags_folder).resolve()
        digest = hashlib.sha256(str(folder).encode())
        for path in sorted(folder.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                digest.update(str(path.relative_to(folder)).encode() + b"\0" + path.read_bytes())
        return digest.hexdigest()


class InlineHarness:
    """A scheduler and a worker in this thread, over a real SqlStore, with no broker."""

    #: Set (e.g. once per test session) to start each harness on a fresh SQLite store from a
    #: copy of its dags folder already synced, rather than importing every dags file again.
    templates: ClassVar[SqliteTemplates | None] = None

    def __init__(
        self,
        store: SqlStore,
        dags_folder: str,
        *,
        settings: Settings | None = None,
        clock: Callable[[], datetime] | None = None,
        sync: bool = True,
    ) -> None:
        """``sync=False``: the caller has recorded the dags folder's flows in ``store`` already
        (a test suite that loads each folder once and records the same load in every test's
        store, instead of importing it in a subprocess per test)."""
        restored = self.templates is not None and self.templates.restore(store, dags_folder)
        base = settings or Settings(database_url=store.url)
        self.settings = replace(base, dags_folder=dags_folder)
        self.store = store
        self.events = MemoryEvents()
        self.dispatcher = InlineDispatcher()
        self.clock = clock or utcnow
        self.backpressure = (
            Backpressure(
                self.dispatcher.queue_depth,
                ttl_seconds=0.05,
                high=self.settings.queue_high_watermark,
                low=self.settings.queue_low_watermark,
            )
            if self.settings.queue_high_watermark
            else None
        )
        self.scheduler = Scheduler(
            store,
            self.dispatcher,
            self.events,
            clock=self.clock,
            sweep_seconds=3600,
            name="scheduler@test",
            global_cap=self.settings.max_in_flight or None,
            backpressure=self.backpressure,
        )
        self.scheduler.store.set_global_cap(self.scheduler.global_cap)
        self.runtime = WorkerRuntime(
            settings=self.settings,
            store=store,
            events=self.events,
            name="worker@test",
            dispatcher=self.dispatcher,
            backpressure=self.backpressure,
        )
        # Claim this process's identity now, so no heartbeat thread starts and the
        # worker keeps the name "worker@test" in the audit trail.
        self.runtime._hb_pid = os.getpid()
        if sync:
            sync_dags(store, dags_folder)
        if self.templates is not None and not restored:
            self.templates.remember(store, dags_folder)

    def trigger(self, flow: str, params: dict[str, Any] | None = None) -> str:
        spec = self.store.flow_spec(flow)
        run_id = self.store.create_run(spec, resolve_params(spec, params or {}), actor="test")
        assert run_id is not None
        self.scheduler.start_run(run_id)
        return run_id

    def act(self, result: ActionResult) -> ActionResult:
        """Carry out what an operator's action left to do after its commit, as the CLI does:
        revoke the attempts it stopped, wake the scheduler (which grants what became ready).

        >>> harness.act(store.cancel_run(run_id, by="ann", reason="wrong input"))
        """
        notify(result, dispatcher=self.dispatcher, events=self.events)
        self.scheduler.handle(self.events.wait(0))
        self.scheduler.grant()
        return result

    def work(self) -> int:
        """Run every dispatched attempt (and callback) once and feed the completions back.
        Returns how many attempts ran."""
        ran = 0
        while self.dispatcher.sent or self.dispatcher.callbacks:
            if not self.dispatcher.sent:
                run_callback(self.runtime, self.dispatcher.callbacks.pop(0).id)
                continue
            item = self.dispatcher.sent.pop(0)
            run_attempt(self.runtime, item.run_id, item.step.name, item.attempt)
            ran += 1
            self.scheduler.handle(self.events.wait(0))
            self.scheduler.grant()
        return ran

    def run_until_done(
        self, run_id: str, *, advance: Callable[[float], None] | None = None, max_rounds: int = 1000
    ) -> str:
        """Work until the run ends; ``advance`` moves a FakeClock past retry timers."""
        for _ in range(max_rounds):
            self.work()
            state: str = self.store.get_run(run_id)["state"]
            if state in ("success", "failed", "cancelled"):
                return state
            due = self.store.next_retry_at()
            if due is not None and advance is not None:
                advance(max((due - self.clock()).total_seconds(), 0) + 0.001)
            self.scheduler.step_once(max_wait=0)
        raise AssertionError(f"run {run_id} did not finish in {max_rounds} rounds")
