"""The fields every scheduler and worker log line carries (flow, run_id, step, attempt), and
the JSON line format for log systems. Not public API.

Fields come from two places, so no log call has to pass them:

- the context: a worker sets run, step and attempt around an attempt (and the flow once its
  claim names it), in a :class:`~contextvars.ContextVar`, so each thread of a threads pool
  has its own;
- the line's subject: flowkit's log lines start with what they are about
  (``"run %s step %s: attempt %s ..."``, ``"flow %s: ..."``), so the scheduler's lines
  about a run carry its id without the loop having to say so.

:class:`FieldsFilter` puts them on every record a handler sees (``None`` where they do not
apply); :class:`JsonFormatter` writes one JSON object per line. ``install`` adds both to a
logger's handlers: text stays the default, and its format is unchanged.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

FIELDS = ("flow", "run_id", "step", "attempt")
FORMATS = ("text", "json")

_current: ContextVar[dict[str, Any] | None] = ContextVar("flowkit_log_fields", default=None)
#: A message's subject, as flowkit writes it: each group names which argument is which field.
_SUBJECTS = (
    (re.compile(r"run %s step %s: attempt %s\b"), ("run_id", "step", "attempt")),
    (re.compile(r"run %s step %s\b"), ("run_id", "step")),
    (re.compile(r"run %s\b"), ("run_id",)),
    (re.compile(r"flow %s\b"), ("flow",)),
)


@contextmanager
def attempt_fields(run_id: str, step: str, attempt: int) -> Iterator[dict[str, Any]]:
    """Log lines in this block (in this thread) carry the attempt; set ``["flow"]`` on the
    returned dict once it is known."""
    fields: dict[str, Any] = {"flow": None, "run_id": run_id, "step": step, "attempt": attempt}
    token = _current.set(fields)
    try:
        yield fields
    finally:
        _current.reset(token)


def note_flow(flow: str | None) -> None:
    """The flow of the attempt this thread runs, once its claim tells."""
    fields = _current.get()
    if fields is not None and flow:
        fields["flow"] = flow


class FieldsFilter(logging.Filter):
    """Sets flow, run_id, step and attempt on each record (None where they do not apply)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "run_id", None) is not None:
            return True  # already set (an earlier handler's filter, or extra=)
        values = dict(_current.get() or {}) or _from_subject(record)
        for name in FIELDS:
            setattr(record, name, values.get(name))
        return True


def _from_subject(record: logging.LogRecord) -> dict[str, Any]:
    msg, args = record.msg, record.args
    if not isinstance(msg, str) or not isinstance(args, tuple):
        return {}
    for pattern, names in _SUBJECTS:
        if pattern.match(msg) and len(args) >= len(names):
            return dict(zip(names, args, strict=False))
    return {}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, flow, run_id, step, attempt
    (null where they do not apply), and exc (the traceback) when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in FIELDS:
            value = getattr(record, name, None)
            line[name] = value if value is None or isinstance(value, (int, str)) else str(value)
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exc"] = record.exc_text
        return json.dumps(line, default=str)


def install(log_format: str, logger: logging.Logger | None = None) -> None:
    """Add the fields filter to ``logger``'s handlers (the root logger's by default), and
    the JSON formatter when ``log_format`` is "json"."""
    target = logger if logger is not None else logging.getLogger()
    for handler in target.handlers:
        if not any(isinstance(f, FieldsFilter) for f in handler.filters):
            handler.addFilter(FieldsFilter())
        if log_format == "json":
            handler.setFormatter(JsonFormatter())
