"""Secrets for steps, and masking them wherever flowkit shows or logs values.

:func:`secret` is public (``flowkit.secret``); the masking helpers are for flowkit's own
output (CLI, renders, the worker's error records) and not public API.

Where a secret comes from, first match wins:

1. the environment variable ``FLOWKIT_SECRET_<NAME>`` (the name upper-cased), so a
   secret set for flowkit never collides with an unrelated variable of the same name;
2. the key ``<name>`` (as written) in the TOML file that ``FLOWKIT_SECRETS_FILE`` names::

       # /etc/flowkit/secrets.toml, readable by the worker's user only
       warehouse_password = "..."

Both are read in the process that calls :func:`secret`: the worker, for a step.

Masking: a param declared ``Param(str, secret=True)`` shows as ``***`` in ``runs show``,
``runs list``, the audit trail, renders and the HTML report. Every known secret value (what
:func:`secret` returned in the process, every secret param value a worker runs with, and
every value ``FLOWKIT_SECRET_*`` and the secrets file hold) is replaced by ``***`` in the
log records of the worker and in everything it stores: results, errors, tracebacks and a
shell step's output (:func:`mask_stored`, the one function the worker writes through). The
real value still reaches the step (``ctx.params``, the return value of ``secret()``).
Secret params are stored in the runs table as given: keep real credentials in ``secret()``.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from .errors import ConfigError

if TYPE_CHECKING:
    from .spec import FlowSpec

__all__ = ["MASK", "secret"]

MASK = "***"
ENV_PREFIX = "FLOWKIT_SECRET_"
FILE_VARIABLE = "FLOWKIT_SECRETS_FILE"
#: Shorter values are not searched for in free text (log lines, errors): they occur in
#: ordinary words and numbers by chance, and masking them would garble output while
#: hiding little. A secret *param* is masked whatever its length.
MIN_MASKED_LENGTH = 4

_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_lock = threading.Lock()
_registered: set[str] = set()
_pattern: re.Pattern[str] | None = None
_factory_installed = False
#: (path, mtime_ns, size) of the secrets file whose values are registered already.
_file_seen: tuple[str, int, int] | None = None


def secret(name: str) -> str:
    """The secret ``name``, from ``FLOWKIT_SECRET_<NAME>`` or else the secrets file.

    The value is masked as ``***`` in the log records of this process from now on.
    Raises :class:`~flowkit.errors.ConfigError` (one line naming both places) if neither has it.

    >>> password = flowkit.secret("warehouse_password")  # doctest: +SKIP
    """
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ConfigError(
            f"secret name {name!r} is not valid; use letters, digits and '_' "
            "(it becomes part of an environment variable name)"
        )
    variable = ENV_PREFIX + name.upper()
    value = os.environ.get(variable) or None
    if value is None:
        value = _from_file(name)
    if value is None:
        path = os.environ.get(FILE_VARIABLE)
        where = f"the file {FILE_VARIABLE} names ({path})" if path else f"a TOML file named by {FILE_VARIABLE}"
        raise ConfigError(
            f'secret "{name}" is not set; set {variable} in the environment of the worker '
            f'or add {name} = "..." to {where}'
        )
    register_secret(value)
    return value


def _from_file(name: str) -> str | None:
    path = os.environ.get(FILE_VARIABLE)
    if not path:
        return None
    import tomllib

    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{FILE_VARIABLE}={path!r} does not exist; create it or unset the variable") from None
    except OSError as exc:
        raise ConfigError(
            f"{FILE_VARIABLE}={path!r} cannot be read ({exc.strerror}); check its permissions for the worker's user"
        ) from None
    except tomllib.TOMLDecodeError as exc:  # the message names line and column, never the content
        raise ConfigError(f"{FILE_VARIABLE}={path!r} is not valid TOML ({exc}); fix the file") from None
    value = data.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ConfigError(f'secret "{name}" in {path} must be a non-empty string; write {name} = "..."')
    return value


# -- masking -------------------------------------------------------------------------------
def register_secret(value: object) -> None:
    """Mask ``value`` in this process's log records and stored errors from now on."""
    global _pattern
    text = str(value)
    if len(text) < MIN_MASKED_LENGTH:
        return
    with _lock:
        if text not in _registered:
            _registered.add(text)
            _pattern = None
    install_log_masking()


def _compiled(extra: Iterable[str]) -> re.Pattern[str] | None:
    global _pattern
    extra = [v for v in extra if len(v) >= MIN_MASKED_LENGTH and v not in _registered]
    with _lock:
        if _pattern is None and _registered:
            _pattern = _alternation(_registered)
        base = _pattern
    if not extra:
        return base
    return _alternation([*_registered, *extra])


def _alternation(values: Iterable[str]) -> re.Pattern[str]:
    # Longest first, so a secret that contains another is masked whole.
    return re.compile("|".join(re.escape(v) for v in sorted(values, key=len, reverse=True)))


def mask_text(text: str | None, values: Iterable[str] = ()) -> str | None:
    """``text`` with every registered secret, and each of ``values``, replaced by ``***``."""
    if not text:
        return text
    pattern = _compiled([str(v) for v in values])
    return pattern.sub(MASK, text) if pattern is not None else text


def mask_data(value: Any, values: Iterable[str] = ()) -> Any:
    """A copy of JSON-like ``value`` with secrets masked inside every string (keys too);
    ``value`` itself when there is nothing to mask."""
    pattern = _compiled([str(v) for v in values])
    if pattern is None:
        return value
    return _mask_with(pattern, value)


def _mask_with(pattern: re.Pattern[str], value: Any) -> Any:
    if isinstance(value, str):
        return pattern.sub(MASK, value) if value else value
    if isinstance(value, dict):
        return {(pattern.sub(MASK, k) if isinstance(k, str) else k): _mask_with(pattern, v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_mask_with(pattern, v) for v in value]
    return value


def any_registered() -> bool:
    """Whether this process knows a secret to mask (a cheap test before costly masking)."""
    return bool(_registered)


def register_configured_secrets() -> None:
    """Register every value ``FLOWKIT_SECRET_*`` and the secrets file hold, so they are
    masked even in a process where no step called :func:`secret` (a shell step that echoes
    ``$FLOWKIT_SECRET_TOKEN``, another pool process). The file is read again only when it
    changes; a file that cannot be read registers nothing here (``secret()`` reports it)."""
    global _file_seen
    for key, value in os.environ.items():
        if key.startswith(ENV_PREFIX) and value:
            register_secret(value)
    path = os.environ.get(FILE_VARIABLE)
    if not path:
        return
    try:
        st = os.stat(path)
    except OSError:
        return
    seen = (path, st.st_mtime_ns, st.st_size)
    if seen == _file_seen:
        return
    import tomllib

    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError):
        return
    for value in data.values():
        if isinstance(value, str) and value:
            register_secret(value)
    _file_seen = seen


def mask_stored(value: Any) -> Any:
    """``value`` (a result, an error, a traceback, a shell step's output) with every known
    secret masked: what the worker writes to the store goes through this one function."""
    register_configured_secrets()
    return mask_data(value)


def secret_param_names(spec: FlowSpec | None) -> frozenset[str]:
    """Names of the params ``spec`` declares with ``secret=True``."""
    if spec is None:
        return frozenset()
    return frozenset(p.name for p in spec.params if getattr(p, "secret", False))


def mask_params(spec: FlowSpec | None, params: Mapping[str, Any] | None) -> dict[str, Any]:
    """``params`` with the value of every secret param replaced by ``***`` (None stays None)."""
    names = secret_param_names(spec)
    return {k: (MASK if k in names and v is not None else v) for k, v in (params or {}).items()}


def secret_values(spec: FlowSpec | None, params: Mapping[str, Any] | None) -> list[str]:
    """The values of ``params`` that ``spec`` declares secret, as strings (for mask_text)."""
    names = secret_param_names(spec)
    return [str(v) for k, v in (params or {}).items() if k in names and v not in (None, "")]


def register_secret_params(spec: FlowSpec, params: Mapping[str, Any] | None) -> None:
    """Mask the secret param values of a run in this process's logs (a worker calls this)."""
    for value in secret_values(spec, params):
        register_secret(value)


# -- logging ---------------------------------------------------------------------------------
class SecretMaskFilter(logging.Filter):
    """Replaces registered secrets in a record's message, traceback and stack by ``***``.

    :func:`install_log_masking` applies it to every record of the process; add it to a
    handler yourself only for records created before that.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if not _registered:
            return True
        try:
            message = record.getMessage()
        except Exception:  # a broken format: logging reports it when the record is emitted
            return True
        masked = mask_text(message)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = mask_text(record.exc_text)
        if record.stack_info:
            record.stack_info = mask_text(record.stack_info)
        return True


_FILTER = SecretMaskFilter()


def install_log_masking() -> None:
    """Mask registered secrets in every log record this process creates (idempotent).

    A record factory rather than a handler filter, so handlers added later (Celery's
    worker installs its own) and records of every logger are covered.
    """
    global _factory_installed
    with _lock:
        if _factory_installed:
            return
        previous = logging.getLogRecordFactory()

        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = previous(*args, **kwargs)
            _FILTER.filter(record)
            return record

        logging.setLogRecordFactory(factory)
        _factory_installed = True
