"""Can flowkit reach its database and broker, and is a failure worth waiting for? Not public API.

:func:`classify_url_problem` tells a mistake that can never work (a malformed URL, an unknown
scheme or host name, refused credentials, a missing driver) from a server that may answer
later (connection refused, timeouts). Daemons call :func:`wait_for_services` at startup: an
impossible URL fails at once with one line, a down server is retried with backoff and one
log line per retry, never a traceback. :func:`service_error` turns a raw driver exception
into the one-line :class:`~flowkit.errors.FlowkitError` the CLI prints.

>>> retry_with_backoff(lambda: probe_database(url), what="scheduler")  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from .config import redact
from .errors import ConfigError, DispatchError, FlowkitError, StoreUnavailable

if TYPE_CHECKING:
    from .config import Settings

log = logging.getLogger(__name__)

T = TypeVar("T")

#: How long one probe waits for a server to answer.
PROBE_TIMEOUT_SECONDS = 5.0
#: Waits between startup retries: 1, 2, 4 ... seconds, never more than this.
MAX_RETRY_DELAY_SECONDS = 30.0

# Lower-case fragments of driver messages. Checked in this order: "temporary failure in name
# resolution" is a DNS hiccup, though "resolve" also appears in the unknown-host messages.
_TRANSIENT_TEXT = (
    "temporary failure in name resolution",
    "connection refused",
    "timed out",
    "timeout expired",
    "connection reset",
    "broken pipe",
    "the database system is starting up",
    "the database system is shutting down",
    "the database system is in recovery mode",
    "too many connections",
    "server closed the connection",
    "loading the dataset in memory",  # Redis restarting
    "no route to host",
    "network is unreachable",
)
_PERMANENT_TEXT = (
    "name or service not known",
    "nodename nor servname",
    "no address associated with hostname",
    "failed to resolve host",
    "could not translate host name",
    "password authentication failed",
    "authentication failed",
    "no pg_hba.conf entry",
    "access_refused",
    "login was refused",
    "wrongpass",
    "invalid username-password",
    "noauth",
    "not_allowed",  # AMQP: no such virtual host, or no rights on it
    "certificate verify failed",
    "no such transport",
    "unable to open database file",
    "db index is out of range",  # Redis: /N past its `databases` setting
    "invalid db index",
    "file is not a database",  # SQLite: the file holds something else
    "file is encrypted or is not a database",
)
_PERMANENT_RE = re.compile(r'(database|role) "[^"]*" does not exist')
# A TLS client (rediss://, amqps://) talking to a server that does not speak TLS: the server
# answers something that is not a TLS record, or nothing at all until the socket times out.
_PLAIN_SERVER_TEXT = (
    "wrong version number",
    "record layer failure",
    "packet length too long",
    "unknown protocol",
    "handshake operation timed out",
)
_PLAIN_SERVER_REASON = (
    "the TLS handshake failed ({}): the server does not speak TLS there; use "
    "redis:// or amqp:// for a plain server, or the port where it serves TLS"
)
_PERMANENT_CLASSES = ("AccessRefused", "NotAllowed", "AuthenticationError", "AuthenticationWrongNumberOfArgsError")


@dataclass(frozen=True)
class UrlProblem:
    """Why a connection failed: ``permanent`` if it can never work without a config change."""

    permanent: bool
    reason: str  # one line, passwords redacted


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc``, then what caused it, outermost first (each exception once)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _first_line(exc: BaseException) -> str:
    if isinstance(exc, KeyError) and exc.args:
        text = str(exc.args[0])  # str(KeyError) adds quotes
    else:
        orig = getattr(exc, "orig", None)  # SQLAlchemy wraps the driver's error
        text = str(orig if isinstance(orig, BaseException) else exc)
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    line = lines[0] if lines else type(exc).__name__
    return redact(line.rstrip("."))


def _reason(exc: BaseException) -> str:
    """The most telling line: the outermost message that is not one of flowkit's own."""
    for e in _chain(exc):
        if not isinstance(e, FlowkitError):
            return _first_line(e)
    return exc.message if isinstance(exc, FlowkitError) else _first_line(exc)


def classify_url_problem(exc: BaseException) -> UrlProblem:
    """Tell a connection failure that can never work from one that may pass later.

    Permanent: a :class:`ConfigError` (malformed URL, unknown scheme), a missing driver or
    transport package, a host name that does not resolve, refused credentials, a missing
    database, role or virtual host, a Redis database index past the server's ``databases``,
    a failed TLS verification, TLS to a server that does not speak it, a file that cannot
    be opened or created or is not a database (SQLite). Transient: refused connections,
    timeouts, resets, a server starting up, a DNS hiccup, and anything not recognised (a
    retry costs little; giving up on a server that would have come back costs an outage).

    >>> classify_url_problem(ConnectionRefusedError(111, "Connection refused")).permanent
    False
    """
    for e in _chain(exc):
        if isinstance(e, ConfigError):
            return UrlProblem(True, e.message)
        if isinstance(e, OSError) and any(t in _first_line(e).lower() for t in _PLAIN_SERVER_TEXT):
            return UrlProblem(True, _PLAIN_SERVER_REASON.format(_first_line(e)))
        if isinstance(e, ImportError):
            return UrlProblem(True, f"a package it needs is not installed ({_first_line(e)})")
        if isinstance(e, socket.gaierror):
            return UrlProblem(e.errno != socket.EAI_AGAIN, _reason(exc))
        if isinstance(e, (ConnectionRefusedError, TimeoutError, ConnectionResetError, BrokenPipeError)):
            return UrlProblem(False, _reason(exc))
        if (isinstance(e, OSError) and e.filename) or any(c.__name__ in _PERMANENT_CLASSES for c in type(e).__mro__):
            return UrlProblem(True, _reason(exc))
        text = _first_line(e).lower() if not isinstance(e, FlowkitError) else ""
        if any(fragment in text for fragment in _TRANSIENT_TEXT):
            return UrlProblem(False, _reason(exc))
        if any(fragment in text for fragment in _PERMANENT_TEXT) or _PERMANENT_RE.search(text):
            return UrlProblem(True, _reason(exc))
    return UrlProblem(False, _reason(exc))


# -- one-line errors ------------------------------------------------------------------------
def _service_error(
    exc: BaseException, url: str, variable: str, noun: str, transient: type[FlowkitError]
) -> FlowkitError:
    problem = classify_url_problem(exc)
    if isinstance(exc, ConfigError):
        return exc
    if problem.permanent:
        return ConfigError(f"cannot connect to the {noun} at {redact(url)}: {problem.reason}; check {variable}")
    return transient(
        f"cannot reach the {noun} at {redact(url)}: {problem.reason}; check {variable} and that the server runs"
    )


def database_error(exc: BaseException, url: str, *, variable: str = "FLOWKIT_DATABASE_URL") -> FlowkitError:
    """The one-line error for a failure to connect to the database at ``url``.

    :class:`StoreUnavailable` when the server may come back, :class:`ConfigError` when only a
    change of ``variable`` (or of the server's setup) can help.
    """
    if any(_not_a_sqlite_file(e) for e in _chain(exc)):
        return ConfigError(
            f"{redact(url)} is not a SQLite database (file is not a database); point "
            f"{variable} at a flowkit store or remove the file"
        )
    return _service_error(exc, url, variable, "database", StoreUnavailable)


def _not_a_sqlite_file(e: BaseException) -> bool:
    """SQLite's answer when the file at the URL holds something else (text, another format)."""
    if not any(c.__module__ in ("sqlite3", "_sqlite3") and c.__name__ == "DatabaseError" for c in type(e).__mro__):
        return False
    return "is not a database" in str(e)


def broker_error(exc: BaseException, url: str, *, variable: str = "FLOWKIT_BROKER_URL") -> FlowkitError:
    """The one-line error for a failure to connect to the broker at ``url`` (see database_error)."""
    return _service_error(exc, url, variable, "broker", DispatchError)


def _is_database_failure(e: BaseException) -> bool:
    if _not_a_sqlite_file(e):
        return True
    return any(
        (c.__module__.startswith("sqlalchemy") and c.__name__ in ("OperationalError", "InterfaceError"))
        or (c.__module__ in ("sqlite3", "_sqlite3") and c.__name__ == "OperationalError")
        for c in type(e).__mro__
    )


def _is_broker_failure(e: BaseException) -> bool:
    module = type(e).__module__.split(".")[0]
    if module not in ("kombu", "redis", "amqp", "librabbitmq"):
        return False
    return isinstance(e, OSError) or any(
        c.__name__ in ("OperationalError", "ConnectionError", *_PERMANENT_CLASSES) for c in type(e).__mro__
    )


def service_error(exc: BaseException, *, database_url: str, broker_url: str) -> FlowkitError | None:
    """The one-line error for ``exc`` if it is a failure to reach the database or the broker,
    else None (a bug keeps its traceback)."""
    chain = list(_chain(exc))
    if any(_is_database_failure(e) for e in chain):
        return database_error(exc, database_url)
    if any(_is_broker_failure(e) for e in chain):
        return broker_error(exc, broker_url)
    if database_url.startswith("sqlite") and any(isinstance(e, OSError) and e.filename for e in chain):
        return database_error(exc, database_url)  # e.g. the store could not create the file's folder
    return None


# -- probes ---------------------------------------------------------------------------------
def probe_database(url: str, *, timeout_seconds: float = PROBE_TIMEOUT_SECONDS) -> None:
    """Open one connection to the database and close it; raise ``database_error`` if that fails.

    SQLite is a local file, created on first use: there is no server to wait for.
    """
    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool

    from .store.sql import normalize_url

    normalized = normalize_url(url)
    if normalized.startswith("sqlite"):
        _probe_sqlite_file(normalized, url)
        return
    # libpq takes whole seconds; without a limit an unreachable host blocks for minutes
    engine = create_engine(
        normalized, poolclass=NullPool, connect_args={"connect_timeout": max(1, round(timeout_seconds))}
    )
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
    except Exception as exc:
        raise database_error(exc, url) from exc
    finally:
        engine.dispose()


def _probe_sqlite_file(normalized: str, url: str) -> None:
    """An existing SQLite file must be a database (a missing one is created on first use)."""
    import sqlite3
    from pathlib import Path
    from urllib.parse import quote

    path = normalized.split("///", 1)[-1].split("?", 1)[0]
    if not path or path == ":memory:" or not Path(path).is_file():
        return
    try:
        conn = sqlite3.connect(f"file:{quote(path)}?mode=ro", uri=True, timeout=PROBE_TIMEOUT_SECONDS)
        try:
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        if _not_a_sqlite_file(exc):
            raise database_error(exc, url) from exc


def bounded_transport_options(url: str, timeout_seconds: float) -> dict[str, float]:
    """Broker transport options that bound every socket wait, the TLS handshake included.

    On Redis the connect timeout covers only the TCP connect: a ``rediss://`` URL pointed at
    a plain Redis then waits for ever for the server's half of the handshake. py-amqp's
    connect timeout covers its handshake already.
    """
    if url.split("://", 1)[0].split("+", 1)[0].lower() in ("redis", "rediss", "sentinel"):
        return {"socket_timeout": timeout_seconds, "socket_connect_timeout": timeout_seconds}
    return {}


def probe_broker(url: str, *, timeout_seconds: float = PROBE_TIMEOUT_SECONDS) -> None:
    """Connect to the broker once and close; raise ``broker_error`` if that fails.

    The in-memory transport lives in this process: nothing to reach.
    """
    if url.startswith("memory"):
        return
    from kombu.connection import Connection

    try:
        with Connection(
            url, connect_timeout=timeout_seconds, transport_options=bounded_transport_options(url, timeout_seconds)
        ) as conn:
            conn.ensure_connection(max_retries=0)  # one try: retrying is the caller's choice
    except Exception as exc:
        raise broker_error(exc, url) from exc


# -- retry ----------------------------------------------------------------------------------
def retry_with_backoff(
    fn: Callable[[], T],
    *,
    what: str,
    stop: threading.Event | None = None,
    give_up_after_seconds: float | None = None,
    first_delay_seconds: float = 1.0,
    max_delay_seconds: float = MAX_RETRY_DELAY_SECONDS,
    logger: logging.Logger = log,
    clock: Callable[[], float] = time.monotonic,
    wait: Callable[[float], bool] | None = None,
) -> T:
    """Call ``fn`` until it returns, and return what it returns.

    A permanent problem (:func:`classify_url_problem`) is raised at once. A transient one is
    logged as one warning line starting with ``what`` (no traceback) and retried after 1, 2,
    4 ... seconds, at most ``max_delay_seconds`` apart, until it works, ``stop`` is set or
    ``give_up_after_seconds`` have passed (None: never give up); then the last error is
    raised. ``clock`` and ``wait`` (returns True to stop) are injectable for tests.
    """
    if wait is None:
        wait = stop.wait if stop is not None else _sleep
    deadline = None if give_up_after_seconds is None else clock() + give_up_after_seconds
    delay = first_delay_seconds
    attempt = 1
    while True:
        try:
            return fn()
        except Exception as exc:
            problem = classify_url_problem(exc)
            if problem.permanent or (stop is not None and stop.is_set()):
                raise
            if deadline is not None and clock() + delay > deadline:
                raise
            message = str(exc) if isinstance(exc, FlowkitError) else problem.reason
            logger.warning("%s: %s; retrying in %.0f s (attempt %d)", what, message, delay, attempt)
            if wait(delay):
                raise
            delay = min(delay * 2, max_delay_seconds)
            attempt += 1


def _sleep(seconds: float) -> bool:
    time.sleep(seconds)
    return False


def wait_for_services(
    settings: Settings,
    *,
    what: str,
    database: bool = True,
    broker: bool = True,
    stop: threading.Event | None = None,
    give_up_after_seconds: float | None = None,
    logger: logging.Logger = log,
) -> None:
    """Return once the database and/or broker of ``settings`` answer (see retry_with_backoff).

    What a daemon calls before it starts: a down server is waited for, an impossible URL
    raises a one-line FlowkitError at once.
    """
    if database:
        retry_with_backoff(
            lambda: probe_database(settings.database_url),
            what=what,
            stop=stop,
            give_up_after_seconds=give_up_after_seconds,
            logger=logger,
        )
    if broker:
        retry_with_backoff(
            lambda: probe_broker(settings.broker_url),
            what=what,
            stop=stop,
            give_up_after_seconds=give_up_after_seconds,
            logger=logger,
        )
