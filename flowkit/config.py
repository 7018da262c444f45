"""One Settings object, built once at the edge (CLI, worker entry point) and passed down.

Precedence: CLI flag > FLOWKIT_* environment variable > default.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from .errors import ConfigError

DEFAULT_HOME = Path(".flowkit")


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
    #: A result larger than this (JSON bytes) fails the step with a clear message.
    max_result_bytes: int = 256 * 1024
    #: The scheduler's safety-net sweep (new runs, due timers, expired leases).
    sweep_seconds: float = 5.0
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
    #: (a chain hop skips the scheduler); the rest wait for the scheduler, in fair order.
    fast_follow_max: int = 16
    default_queue: str = "flowkit"
    events_queue: str = "flowkit.events"
    worker_concurrency: int = 2

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
        if self.max_in_flight < 0:
            raise ConfigError("FLOWKIT_MAX_IN_FLIGHT must be 0 (no cap) or more")
        if self.queue_high_watermark and not 0 <= self.queue_low_watermark < self.queue_high_watermark:
            raise ConfigError(
                f"FLOWKIT_QUEUE_LOW_WATERMARK={self.queue_low_watermark} must be below "
                f"FLOWKIT_QUEUE_HIGH_WATERMARK={self.queue_high_watermark} (0 turns backpressure off)")

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
        raise ConfigError(
            f"FLOWKIT_{name.upper()}={raw!r} is not a number; set it to a {kind}"
        ) from None
    return raw


_PASSWORD_RE = re.compile(r"(?P<scheme>[a-z0-9+]+://[^:/@]*:)(?P<pw>[^@]*)@", re.I)


def redact(url: str) -> str:
    """Hide the password in a connection URL: passwords never appear in logs."""
    return _PASSWORD_RE.sub(lambda m: f"{m.group('scheme')}***@", url)
