"""What every ``flowkit`` command shares: the settings the root command built, the store,
the CLI's error type and one-line error handling, and output helpers (tables, JSON, times)."""

from __future__ import annotations

import getpass
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any

import click

from .. import jsonsafe
from ..config import Settings
from ..connectivity import database_error, service_error
from ..errors import FlowkitError, StoreUnavailable

if TYPE_CHECKING:
    from ..store.sql import SqlStore


class CliError(click.ClickException):
    """A FlowkitError shown as one line, exit code 1."""

    exit_code = 1

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


@contextmanager
def friendly_errors() -> Iterator[None]:
    """FlowkitErrors, and failures to reach the database or broker, as one ``error:`` line."""
    try:
        yield
    except FlowkitError as exc:
        settings = current_settings()
        if isinstance(exc, StoreUnavailable) and exc.__cause__ is not None and settings:
            # one wording for every command, with the URL as the user wrote it
            raise CliError(str(database_error(exc.__cause__, settings.database_url))) from exc
        raise CliError(str(exc)) from exc
    except (click.ClickException, click.exceptions.Exit, click.Abort):
        raise  # already one line (or a normal exit)
    except Exception as exc:
        settings = current_settings()
        err = (
            service_error(exc, database_url=settings.database_url, broker_url=settings.broker_url) if settings else None
        )
        if err is None:
            raise  # a bug: keep its traceback
        raise CliError(str(err)) from exc


def current_settings() -> Settings | None:
    """The settings of the command running now, if the root command got that far."""
    ctx = click.get_current_context(silent=True)
    obj = ctx.find_root().obj if ctx is not None else None
    return obj.get("settings") if isinstance(obj, dict) else None


def settings_of(ctx: click.Context) -> Settings:
    """The settings the root command built from its options, the environment and defaults."""
    return ctx.obj["settings"]  # type: ignore[no-any-return]


def open_store(settings: Settings, *, auto_upgrade: bool | None = None) -> SqlStore:
    """The store at ``settings.database_url``, its schema checked (SQLite: migrated)."""
    from ..store.sql import SqlStore

    store = SqlStore(settings.database_url)
    # SQLite is a single-user dev store: migrate it for the user. A shared PostgreSQL
    # database is migrated deliberately, with `flowkit db upgrade`.
    store.ensure_schema(auto_upgrade=store.is_sqlite if auto_upgrade is None else auto_upgrade)
    return store


def parse_params(pairs: tuple[str, ...]) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r} is not key=value (e.g. -p customer=42)", param_hint="-p/--param")
        out[key.strip()] = value
    return out


def format_time(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def format_duration(start: datetime | None, end: datetime | None) -> str:
    if not start or not end:
        return "-"
    seconds = (end - start).total_seconds()
    return f"{seconds * 1000:.0f}ms" if seconds < 1 else f"{seconds:.1f}s"


def format_table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    for r in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    return "\n".join(lines)


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def echo_json(data: Any) -> None:
    """Valid JSON, always: NaN or Infinity stored before flowkit refused them print as null."""
    click.echo(jsonsafe.dumps(jsonsafe.sanitize(data), indent=2, default=_json_default, sort_keys=True))


def current_user() -> str:
    """Who runs the command (kept in the audit trail)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # a container uid with no passwd entry
        return f"uid{os.getuid()}"
