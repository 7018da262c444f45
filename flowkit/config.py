"""One Settings object, built once at the edge (CLI, worker entry point) and passed down.

Precedence: CLI flag > FLOWKIT_* environment variable > default. Building it checks every
value, including the shape of the database and broker URLs, so a typo fails at once with
a one-line :class:`~flowkit.errors.ConfigError` naming the variable. Whether the servers
behind the URLs answer is :mod:`flowkit.connectivity`'s business.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .jsonsafe import MAX_DEPTH, MAX_PARAMS_BYTES

DEFAULT_HOME = Path(".flowkit")
#: The deepest FLOWKIT_MAX_JSON_DEPTH may go: ``--json`` output takes ~4 frames a level,
#: and Python stops at 1,000.
MAX_JSON_DEPTH_LIMIT = 200


@dataclass(frozen=True)
class Settings:
    database_url: str = ""
    broker_url: str = "redis://127.0.0.1:6379/0"
    dags_folder: str = "dags"
    #: Redis redelivers an unacked message after this many seconds; keep it above the
    #: longest step timeout, or a running step is delivered again (celery#2599, #5935).
    visibility_timeout_seconds: float = 3600.0
    #: A running attempt writes a heartbeat this often; three missed ones mean "worker lost".
    heartbeat_seconds: float = 10.0
    #: A worker lost this many times while running one attempt fails it as poison.
    max_deliveries: int = 3
    #: A worker that cannot reach the store to claim an attempt keeps retrying this long
    #: (the message stays unacknowledged), then hands the message back to the broker.
    store_retry_seconds: float = 300.0
    #: A result larger than this (JSON bytes) fails the step with a clear message.
    max_result_bytes: int = 256 * 1024
    #: Params larger than this (JSON bytes, each and all together) are refused at trigger.
    max_params_bytes: int = MAX_PARAMS_BYTES
    #: Params and results nested deeper than this (lists and objects inside each other) are
    #: refused where they come in: Python's json recurses per level, so a value ~1,000 deep
    #: would crash every later reader (the worker's claim, ``runs show``, renders).
    max_json_depth: int = MAX_DEPTH
    #: The scheduler's safety-net sweep (new runs, due timers, expired leases).
    sweep_seconds: float = 5.0
    #: PostgreSQL: the active scheduler's lease runs out this long after its last renewal;
    #: a standby then takes over (so a frozen or dead scheduler is replaced within this
    #: plus one second), and the frozen one's later writes are refused.
    scheduler_lease_seconds: float = 10.0
    #: ... and the active scheduler renews it this often (at most half the lease).
    scheduler_lease_renew_seconds: float = 2.0
    #: An attempt published but not started after this long is published again.
    queued_lease_seconds: float = 300.0
    #: A dags/ module may take this long to import before it is reported as hung.
    dag_import_timeout_seconds: float = 30.0
    #: How often the scheduler re-reads the dags folder (only changed files are imported).
    dag_refresh_seconds: float = 30.0
    #: Attempts queued or running at once, over every flow (0: no cap). Each one holds a
    #: slot of the global cap from dispatch to its end.
    max_in_flight: int = 0
    #: Backpressure: stop dispatching to a broker queue holding this many messages ...
    queue_high_watermark: int = 1000
    #: ... until it falls to this many (0 for both turns backpressure off).
    queue_low_watermark: int = 500
    #: A worker that finishes a step queues at most this many ready downstream steps itself
    #: (a chain hop skips the scheduler), and no more than keep each queue at or below the
    #: low watermark; the rest wait for the scheduler, in fair order.
    fast_follow_max: int = 1000
    default_queue: str = "flowkit"
    events_queue: str = "flowkit.events"
    worker_concurrency: int = 2
    #: A step's captured output (its ctx.log records, prints, a shell step's output) keeps
    #: its last this many characters per attempt (the tail; about bytes for ASCII text).
    log_cap_bytes: int = 64 * 1024
    #: How the scheduler and workers write their log lines: "text" (for people) or "json"
    #: (one object per line, with flow, run_id, step and attempt, for log systems).
    log_format: str = "text"

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, **overrides: Any) -> Settings:
        env = dict(os.environ if env is None else env)
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(f"FLOWKIT_{f.name.upper()}")
            if raw is None or raw == "":
                continue
            values[f.name] = _convert(f.name, f.type, raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        settings = cls(**values)
        if not settings.database_url:
            settings = replace(settings, database_url=f"sqlite:///{DEFAULT_HOME / 'flowkit.db'}")
        settings.check()
        return settings

    def check(self) -> None:
        if self.visibility_timeout_seconds <= 3 * self.heartbeat_seconds:
            raise ConfigError(
                f"FLOWKIT_VISIBILITY_TIMEOUT_SECONDS={self.visibility_timeout_seconds:g} must be more "
                f"than three heartbeats ({3 * self.heartbeat_seconds:g} s); raise it or lower "
                "FLOWKIT_HEARTBEAT_SECONDS"
            )
        if self.max_deliveries < 1:
            raise ConfigError("FLOWKIT_MAX_DELIVERIES must be at least 1")
        if self.max_params_bytes < 0:
            raise ConfigError("FLOWKIT_MAX_PARAMS_BYTES must be 0 (no cap) or more")
        if not 1 <= self.max_json_depth <= MAX_JSON_DEPTH_LIMIT:
            raise ConfigError(
                f"FLOWKIT_MAX_JSON_DEPTH={self.max_json_depth} is outside 1-{MAX_JSON_DEPTH_LIMIT}: "
                "deeper values crash flowkit's own readers (Python's json recurses per "
                "level); set it within that range"
            )
        if self.log_cap_bytes < 1024:
            raise ConfigError(
                f"FLOWKIT_LOG_CAP_BYTES={self.log_cap_bytes} is too small to keep a useful tail; set 1024 or more"
            )
        if self.log_format not in ("text", "json"):
            raise ConfigError(f"FLOWKIT_LOG_FORMAT={self.log_format!r} is not a log format; use text or json")
        if self.max_in_flight < 0:
            raise ConfigError("FLOWKIT_MAX_IN_FLIGHT must be 0 (no cap) or more")
        if self.queue_high_watermark and not 0 <= self.queue_low_watermark < self.queue_high_watermark:
            raise ConfigError(
                f"FLOWKIT_QUEUE_LOW_WATERMARK={self.queue_low_watermark} must be below "
                f"FLOWKIT_QUEUE_HIGH_WATERMARK={self.queue_high_watermark} (0 turns backpressure off)"
            )
        if not 0 < 2 * self.scheduler_lease_renew_seconds <= self.scheduler_lease_seconds:
            raise ConfigError(
                f"FLOWKIT_SCHEDULER_LEASE_RENEW_SECONDS={self.scheduler_lease_renew_seconds:g} must be "
                f"above 0 and at most half of FLOWKIT_SCHEDULER_LEASE_SECONDS={self.scheduler_lease_seconds:g}, "
                "so one failed renewal does not lose the lease; lower it or raise the lease"
            )
        check_database_url(self.database_url)
        check_broker_url(self.broker_url)

    @property
    def lost_after_seconds(self) -> float:
        return 3 * self.heartbeat_seconds


def _convert(name: str, type_name: Any, raw: str) -> Any:
    kind = str(type_name)
    try:
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
    except ValueError:
        raise ConfigError(f"FLOWKIT_{name.upper()}={raw!r} is not a number; set it to a {kind}") from None
    return raw


# The password runs to the last "@" of its URL (an unescaped "@" in a password is common);
# ";" separates the URLs of a broker failover list.
_PASSWORD_RE = re.compile(r"(?P<head>[a-z0-9+.-]+://[^:/@;\s]*:)(?P<pw>[^;\s]*)@", re.I)
_SCHEMELESS_PASSWORD_RE = re.compile(r"^(?P<head>[^:/@;\s]*:)(?P<pw>[^;\s]*)@")


def redact(url: str) -> str:
    """Hide the password in a connection URL: passwords never appear in output or logs.

    Also hides it in a malformed URL without a scheme (``user:password@host/db``).
    """
    pattern = _PASSWORD_RE if "://" in url else _SCHEMELESS_PASSWORD_RE
    return pattern.sub(lambda m: f"{m.group('head')}***@", url)


# -- URL checks ---------------------------------------------------------------------------
#: Database URL schemes flowkit runs on. ``postgresql://`` and ``postgres://`` mean psycopg 3
#: (the store rewrites them); other drivers (psycopg2, asyncpg) are not installed with flowkit.
DATABASE_SCHEMES = ("sqlite", "sqlite+pysqlite", "postgresql", "postgres", "postgresql+psycopg")
_DATABASE_EXAMPLES = "postgresql://user:password@host:5432/flowkit or sqlite:///.flowkit/flowkit.db"
_BROKER_EXAMPLES = "redis://host:6379/0 or amqp://user:password@host:5672//"


def check_database_url(url: str, *, variable: str = "FLOWKIT_DATABASE_URL") -> None:
    """Raise ConfigError unless SQLAlchemy parses ``url`` and flowkit supports its dialect.

    Connects to nothing.
    """
    from sqlalchemy.engine import make_url  # here: building Settings must stay cheap to import
    from sqlalchemy.exc import ArgumentError

    def bad(why: str, fix: str = f"use e.g. {_DATABASE_EXAMPLES}") -> ConfigError:
        return ConfigError(f"{variable}={redact(url)!r} {why}; {fix}")

    if "://" not in url:
        raise bad("is not a URL (it has no scheme://)")
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise bad("is not a URL SQLAlchemy can parse") from None
    except ValueError:  # make_url's int(port)
        raise bad("has a port that is not a number") from None
    scheme = parsed.drivername.lower()
    if scheme not in DATABASE_SCHEMES:
        backend, _, driver = scheme.partition("+")
        if backend in ("postgresql", "postgres", "sqlite"):
            raise bad(
                f"asks for the {driver} driver, which flowkit does not use",
                "write postgresql:// (flowkit uses psycopg 3) or sqlite:///",
            )
        raise bad(
            f"uses {backend}, which flowkit does not support (it runs on PostgreSQL and SQLite)",
            _did_you_mean(backend, ("postgresql", "sqlite")) or f"use e.g. {_DATABASE_EXAMPLES}",
        )
    if parsed.port is not None and not 0 < parsed.port < 65536:
        raise bad(f"has port {parsed.port}, outside 1-65535")
    if scheme.startswith("sqlite") and parsed.host:
        raise bad(
            f"names a host ({parsed.host}), but SQLite opens a file",
            "write three slashes before a relative path (sqlite:///flowkit.db) or four "
            "before an absolute one (sqlite:////var/lib/flowkit/flowkit.db)",
        )


#: Transports every kombu has; accepted without importing kombu (which costs ~60 ms per command).
COMMON_TRANSPORTS = frozenset({"redis", "rediss", "sentinel", "amqp", "amqps", "pyamqp", "memory"})


def broker_transports() -> frozenset[str]:
    """The URL schemes kombu has a transport for (redis, rediss, amqp, pyamqp, memory, ...)."""
    from kombu.transport import TRANSPORT_ALIASES  # kombu's own table: new transports count

    return frozenset(TRANSPORT_ALIASES)


def check_broker_url(url: str, *, variable: str = "FLOWKIT_BROKER_URL") -> None:
    """Raise ConfigError unless every URL of ``url`` (Celery takes a ``;`` failover list)
    names a kombu transport and, if it has one, a numeric port. Connects to nothing."""
    from urllib.parse import urlsplit

    def bad(why: str, fix: str = f"use e.g. {_BROKER_EXAMPLES}") -> ConfigError:
        return ConfigError(f"{variable}={redact(url)!r} {why}; {fix}")

    parts = [p.strip() for p in url.split(";")]
    if not any(parts):
        raise bad("is empty")
    for part in parts:
        scheme, sep, _rest = part.partition("://")
        if not sep or not scheme:
            raise bad(("has a part that is not" if len(parts) > 1 else "is not") + " a URL (it has no scheme://)")
        # kombu reads "sqla+postgresql://" and "redis+socket://" as transport "sqla"/"redis"
        transport = scheme.split("+", 1)[0]
        if transport.lower() not in COMMON_TRANSPORTS:
            transports = broker_transports()
            if transport not in transports and transport.lower() not in transports:
                raise bad(
                    f"uses scheme {transport!r}, which no kombu transport handles",
                    _did_you_mean(transport.lower(), sorted(transports)) or f"use e.g. {_BROKER_EXAMPLES}",
                )
        try:
            _port = urlsplit(part).port  # parses it: a word or 99999 raises
        except ValueError as exc:  # "Port could not be cast to integer value as 'x'", "Port out of range"
            raise bad(
                "has a port outside 1-65535" if "range" in str(exc) else "has a port that is not a number"
            ) from None


def _did_you_mean(word: str, choices: Iterable[str]) -> str:
    import difflib

    close = difflib.get_close_matches(word, list(choices), n=1)
    return f"did you mean {close[0]}://?" if close else ""
