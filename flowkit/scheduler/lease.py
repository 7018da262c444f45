"""Which scheduler is active: one holds the lease, the others stand by. Not public API.

PostgreSQL: one row of ``scheduler_lease`` names the holder, a fencing token and an expiry
in database time (no two machines' clocks are compared). The active scheduler renews it
every ``renew_seconds`` from a thread of its own; a standby asks every second and, once
``expires_at`` has passed, takes it over by raising the token by one (a compare-and-set).
So a scheduler that dies *or freezes* (SIGSTOP, a paused VM, a stalled disk) is replaced
within ``duration_seconds`` plus a poll.

Fencing: every transaction of the scheduler's store starts with :meth:`PostgresLease.guard`,
which reads the lease row ``FOR KEY SHARE`` and refuses the transaction (``LeaseLost``) if
the row no longer carries this scheduler's token. A frozen scheduler that wakes up after a
takeover therefore writes nothing, notices, and stands by. Why that row lock: ``token`` is
unique, so a takeover (which changes it) conflicts with KEY SHARE and waits for every guarded
transaction in flight, and every later one sees the new token: each scheduler write is
ordered wholly before or wholly after a takeover. A renewal changes only ``expires_at``,
which KEY SHARE does not block, so renewals never wait for the scheduler's own work. A
scheduler frozen *inside* a transaction would keep that lock; the guard sets
``idle_in_transaction_session_timeout`` to the lease duration for that transaction, so the
server ends it by the time the lease expires and the takeover goes on.

The session advisory lock used before is gone: it lived as long as the holder's connection,
and a frozen process keeps its connection open, so the standby waited for ever. Keeping it
beside the lease would bring that back.

SQLite runs exactly one scheduler: a second one is refused with a one-line error (an
exclusive lock on a file beside the real database file).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection, text

from ..errors import ConfigError, LeaseLost
from ..store.sql import SqlStore

log = logging.getLogger(__name__)

#: Defaults of FLOWKIT_SCHEDULER_LEASE_SECONDS / _RENEW_SECONDS: a frozen scheduler is
#: replaced within 10 s plus the standby's one-second poll, and a renewal may fail four
#: times in a row (a database hiccup) before the lease runs out.
LEASE_SECONDS = 10.0
RENEW_SECONDS = 2.0

_ENSURE_ROW = text(
    "INSERT INTO scheduler_lease (id, holder, token, expires_at) "
    "VALUES (1, NULL, 0, TIMESTAMPTZ 'epoch') ON CONFLICT (id) DO NOTHING"
)
# clock_timestamp(), not now(): a takeover may wait for a row lock, and now() is the time
# its transaction began.
_TAKE = text(
    "UPDATE scheduler_lease SET holder = :holder, token = token + 1, "
    "expires_at = clock_timestamp() + make_interval(secs => :seconds), "
    "acquired_at = clock_timestamp(), renewed_at = clock_timestamp() "
    "WHERE id = 1 AND (expires_at < clock_timestamp() OR holder = :holder) RETURNING token"
)
_RENEW = text(
    "UPDATE scheduler_lease SET expires_at = clock_timestamp() + make_interval(secs => :seconds), "
    "renewed_at = clock_timestamp() WHERE id = 1 AND holder = :holder AND token = :token"
)
_GIVE_UP = text(
    "UPDATE scheduler_lease SET expires_at = clock_timestamp() - interval '1 second' "
    "WHERE id = 1 AND holder = :holder AND token = :token"
)
_GUARD = text(
    "SELECT set_config('idle_in_transaction_session_timeout', :idle_ms, true) FROM scheduler_lease "
    "WHERE id = 1 AND holder = :holder AND token = :token FOR KEY SHARE"
)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:200]


class PostgresLease:
    """The active scheduler's lease on PostgreSQL, and the fence on its store's writes.

    Installing it sets ``store.fence``: from then on every transaction of ``store`` is
    refused unless this lease holds the current token. ``background=False`` leaves the
    renewals to the caller (:meth:`renew`), for tests that freeze a holder.
    """

    def __init__(
        self,
        store: SqlStore,
        holder: str,
        *,
        duration_seconds: float = LEASE_SECONDS,
        renew_seconds: float = RENEW_SECONDS,
        background: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.holder = holder
        self.duration_seconds = duration_seconds
        self.renew_seconds = renew_seconds
        self.background = background
        self.clock = clock
        #: Why the lease was lost, for the log line of the scheduler standing down.
        self.lost_reason = ""
        self._lock = threading.Lock()
        self._token: int | None = None
        self._valid_until = 0.0  # clock(): held at least until then (sent before the renewal)
        store.fence = self.guard

    @property
    def token(self) -> int | None:
        return self._token

    def acquire(self) -> bool:
        """Take the lease if it is free or expired (or already ours); False: stand by."""
        sent = self.clock()
        try:
            with self.store.engine.begin() as conn:
                conn.execute(_ENSURE_ROW)
                # A takeover waits for the old holder's guarded transactions; one frozen inside
                # its transaction is ended by the server after duration_seconds (see guard).
                conn.execute(
                    text("SELECT set_config('lock_timeout', :ms, true)"),
                    {"ms": f"{int(self.duration_seconds * 2000)}ms"},
                )
                token = conn.execute(_TAKE, {"holder": self.holder, "seconds": self.duration_seconds}).scalar()
        except Exception as exc:  # the database is away or the row is locked: try again later
            log.warning("scheduler lease: %s cannot ask for the lease (%s)", self.holder, _one_line(exc))
            return False
        if token is None:
            return False
        with self._lock:
            self._token, self._valid_until, self.lost_reason = int(token), sent + self.duration_seconds, ""
        if self.background:
            threading.Thread(
                target=self._renew_loop, args=(int(token),), daemon=True, name="flowkit-scheduler-lease"
            ).start()
        return True

    def held(self) -> bool:
        """Ours, as far as this process knows: acquired, not found lost, and renewed less than
        ``duration_seconds`` ago (by the local monotonic clock, which runs on while the process
        is frozen, so a resumed holder knows at once that it may have been replaced)."""
        with self._lock:
            return self._token is not None and self.clock() < self._valid_until

    def renew(self) -> bool:
        """Push the expiry forward; False if the lease was lost (the token moved on), or could
        not be renewed now (the database is away: still held until it runs out)."""
        with self._lock:
            token = self._token
        if token is None:
            return False
        sent = self.clock()
        try:
            with self.store.engine.begin() as conn:
                won = (
                    conn.execute(
                        _RENEW, {"holder": self.holder, "token": token, "seconds": self.duration_seconds}
                    ).rowcount
                    == 1
                )
        except Exception as exc:
            log.warning(
                "scheduler lease: %s cannot renew the lease (%s); it runs out in %.1f s",
                self.holder,
                _one_line(exc),
                max(self._valid_until - self.clock(), 0.0),
            )
            return False
        if not won:
            self._lose(token, f"another scheduler took the lease over; token {token} is stale")
            return False
        with self._lock:
            if self._token == token:
                self._valid_until = sent + self.duration_seconds
        return True

    def _renew_loop(self, token: int) -> None:
        """Renew until this token is lost or released (a later acquire starts its own loop)."""
        while True:
            time.sleep(self.renew_seconds)
            if self._token != token:
                return
            self.renew()

    def _lose(self, token: int, reason: str) -> None:
        with self._lock:
            if self._token == token:
                self._token, self._valid_until, self.lost_reason = None, 0.0, reason

    def guard(self, conn: Connection) -> None:
        """Run first in every transaction of the scheduler's store: refuse it unless the lease
        row still carries our token, and keep that row from being taken over until it ends."""
        token = self._token
        if token is None:
            raise LeaseLost(
                f"scheduler {self.holder}: write refused, it does not hold the scheduler "
                f"lease ({self.lost_reason or 'not acquired'})"
            )
        found = conn.execute(
            _GUARD, {"holder": self.holder, "token": token, "idle_ms": f"{int(self.duration_seconds * 1000)}ms"}
        ).first()
        if found is None:
            self._lose(token, f"another scheduler took the lease over; token {token} is stale")
            raise LeaseLost(
                f"scheduler {self.holder}: write refused, another scheduler took the lease over; token {token} is stale"
            )

    def release(self) -> None:
        """A clean stop: let a standby take over at its next poll, not after the expiry."""
        with self._lock:
            token, self._token, self._valid_until = self._token, None, 0.0
        if token is None:
            return
        try:
            with self.store.engine.begin() as conn:
                conn.execute(_GIVE_UP, {"holder": self.holder, "token": token})
        except Exception as exc:  # it runs out by itself
            log.warning(
                "scheduler lease: %s could not hand the lease back (%s); a standby takes over when it expires",
                self.holder,
                _one_line(exc),
            )

    def describe(self) -> dict[str, Any]:
        return {"lease_seconds": self.duration_seconds, "lease_renew_seconds": self.renew_seconds}


def sqlite_file(url: str) -> str | None:
    """The real path of a SQLite database URL (symlinks resolved, query dropped); None for
    an in-memory database, which no other process can share."""
    from sqlalchemy.engine import make_url

    database = make_url(url).database
    if not database or database == ":memory:" or database.startswith("file::memory:"):
        return None
    return os.path.realpath(database)


class SqliteLease:
    """An exclusive flock on ``<real database file>.scheduler.lock``: a second scheduler on
    the same file is refused, however its URL spells the path (a symlink, a relative path,
    ``?timeout=30``)."""

    def __init__(self, store: SqlStore, holder: str = "") -> None:
        self.holder = holder
        self.database = sqlite_file(store.url)
        self.path = f"{self.database}.scheduler.lock" if self.database else None
        self._fd: int | None = None

    def acquire(self) -> bool:
        import fcntl

        if self.path is None:
            self._fd = -1  # in memory: nothing to share, nothing to lock
            return True
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            other = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise ConfigError(
                f"another scheduler ({other}) already runs on the SQLite database {self.database}; "
                "SQLite runs one scheduler: stop the other one, or use PostgreSQL to run several"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{self.holder or 'scheduler'} pid {os.getpid()}".encode(), 0)
        self._fd = fd
        return True

    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        if self._fd is not None and self._fd >= 0:
            os.close(self._fd)
        self._fd = None

    def describe(self) -> dict[str, Any]:
        return {}


def lease_for(
    store: SqlStore, holder: str, *, duration_seconds: float = LEASE_SECONDS, renew_seconds: float = RENEW_SECONDS
) -> PostgresLease | SqliteLease:
    if store.is_sqlite:
        return SqliteLease(store, holder)
    return PostgresLease(store, holder, duration_seconds=duration_seconds, renew_seconds=renew_seconds)
