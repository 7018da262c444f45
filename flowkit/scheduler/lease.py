"""Which scheduler is active: one holds the lease, the others stand by. Not public API.

PostgreSQL: a session advisory lock on a connection the scheduler keeps open. When the
active scheduler dies, the server drops its session and the lock with it, so a standby that
polls every second takes over within a couple of seconds. If the active one loses its
connection, it stops acting at once (it may no longer hold the lock).

SQLite runs exactly one scheduler: a second one is refused with a one-line error (an
exclusive lock on a file beside the database).
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from ..errors import ConfigError
from ..store.sql import SqlStore

log = logging.getLogger(__name__)

#: pg_advisory_lock key of the active scheduler ("flowkit" in ASCII, as an integer).
ADVISORY_KEY = 0x666C6F776B6974
#: How often the active scheduler checks that its lease connection still stands.
CHECK_SECONDS = 1.0


class PostgresLease:
    def __init__(self, store: SqlStore) -> None:
        self.store = store
        self._conn: Any = None
        self._held = False
        self._checked = 0.0

    def acquire(self) -> bool:
        from sqlalchemy import text

        try:
            if self._conn is None:
                self._conn = self.store.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            got = bool(self._conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": ADVISORY_KEY}).scalar())
        except Exception as exc:  # the database is away: stand by, try again
            log.warning("scheduler lease: cannot ask the database (%s)", " ".join(str(exc).split())[:200])
            self._drop()
            return False
        self._checked = time.monotonic()
        self._held = got
        return got

    def held(self) -> bool:
        """Still ours? Checks the lease connection at most every CHECK_SECONDS."""
        from sqlalchemy import text

        if self._conn is None or not self._held:
            return False
        if time.monotonic() - self._checked < CHECK_SECONDS:
            return True
        try:
            self._conn.execute(text("SELECT 1"))
        except Exception as exc:
            log.error("scheduler lease: lost the lease connection (%s); standing by",
                      " ".join(str(exc).split())[:200])
            self._drop()
            return False
        self._checked = time.monotonic()
        return True

    def _drop(self) -> None:
        self._held = False
        if self._conn is not None:
            try:
                self._conn.invalidate()
                self._conn.close()
            except Exception:  # already broken
                pass
        self._conn = None

    def release(self) -> None:
        self._drop()  # closing the session frees the advisory lock


class SqliteLease:
    """An exclusive flock on ``<database>.scheduler.lock``; a second scheduler is refused."""

    def __init__(self, store: SqlStore) -> None:
        path = store.url.split("///", 1)[-1] or "flowkit.db"
        self.path = f"{path}.scheduler.lock"
        self._fd: int | None = None

    def acquire(self) -> bool:
        import fcntl

        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise ConfigError(
                f"another scheduler ({holder}) already runs on the SQLite database {self.path[:-15]}; "
                "SQLite runs one scheduler: stop the other one, or use PostgreSQL to run several") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}".encode(), 0)
        self._fd = fd
        return True

    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def lease_for(store: SqlStore) -> PostgresLease | SqliteLease:
    return SqliteLease(store) if store.is_sqlite else PostgresLease(store)
