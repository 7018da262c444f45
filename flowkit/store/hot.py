"""The worker's own PostgreSQL connections for its one-statement claim and finish. Not public API.

Through SQLAlchemy's pool every statement paid a checkout, a switch to autocommit and back,
and a reset on return: about 50 us of the worker's CPU per statement, two statements a step
(docs/design-notes.md#low-per-step-overhead). These connections are opened by an engine
(so they take its URL and connect arguments), detached from its pool, kept one per thread,
and used in autocommit. A lost one is closed and the next statement opens another; the
caller retries as it would after any store error.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError

log = logging.getLogger(__name__)

#: Reopen a connection this old (seconds), as the engines' pool_recycle does: a server or a
#: proxy in between may drop connections idle for long.
RECYCLE_SECONDS = 1800.0


class HotConnection:
    """One autocommit psycopg connection, with what pg_fast needs to report its errors."""

    def __init__(self, engine: Engine) -> None:
        try:
            fairy = engine.raw_connection()
        except Exception as exc:
            # raw_connection() hands on the driver's own error, which the worker's retry loop
            # does not know: as SQLAlchemy's, a refused connection is retried until the
            # database is back (unwrapped, a claim during a restart failed its task)
            dbapi = engine.dialect.loaded_dbapi
            if isinstance(exc, dbapi.Error):
                raise DBAPIError.instance(
                    None, None, exc, dbapi.Error, connection_invalidated=True, dialect=engine.dialect
                ) from exc
            raise
        raw = fairy.driver_connection
        if raw is None:  # only a closed fairy has none
            raise RuntimeError("the engine gave a closed connection")
        self.raw: Any = raw
        fairy.detach()  # ours from now on: the pool neither resets nor reuses it
        self.raw.autocommit = True
        self.dialect = engine.dialect
        self.pid = os.getpid()
        self.opened = time.monotonic()
        self.broken = False

    def lost(self, exc: BaseException) -> bool:
        """Whether ``exc`` means the connection is gone (it is then closed)."""
        gone = bool(self.raw.closed) or self.dialect.is_disconnect(exc, self.raw, None)  # type: ignore[arg-type]
        if gone:
            self.close()
        return gone

    def close(self) -> None:
        self.broken = True
        try:
            self.raw.close()
        except Exception:  # already broken
            pass


class HotConnections:
    """Per-thread :class:`HotConnection` of one engine (made by ``engine``, on first use)."""

    def __init__(self, engine: Callable[[], Engine]) -> None:
        self._engine = engine
        self._local = threading.local()
        self._all: list[HotConnection] = []
        self._lock = threading.Lock()

    @contextmanager
    def connection(self) -> Iterator[HotConnection]:
        conn: HotConnection | None = getattr(self._local, "conn", None)
        if conn is None or conn.broken or conn.pid != os.getpid() or time.monotonic() - conn.opened > RECYCLE_SECONDS:
            if conn is not None and conn.pid == os.getpid():
                conn.close()
            conn = HotConnection(self._engine())
            self._local.conn = conn
            with self._lock:
                self._all = [c for c in self._all if not c.broken and c.pid == os.getpid()] + [conn]
        yield conn

    def close(self) -> None:
        """Close this process's connections (another process's are its own to close)."""
        with self._lock:
            mine, self._all = [c for c in self._all if c.pid == os.getpid()], []
        for conn in mine:
            conn.close()
