"""What a worker stores of an attempt: its result as JSON, its error, traceback and output,
each with every known secret masked. Not public API."""

from __future__ import annotations

import traceback as tb_module
from typing import Any, TypeVar

from .. import jsonsafe, refs, secrets
from ..errors import ResultTooLarge

_V = TypeVar("_V")


def encode_result(value: Any, *, run_id: str, step: str, cap: int, max_depth: int = jsonsafe.MAX_DEPTH) -> str:
    """The JSON a step's result is stored as, with every known secret masked (:func:`masked`);
    raises a one-line error for a result that is not JSON, nested too deep or too large."""
    where = f"run {run_id} step {step}"
    # Before dumps: json recurses per level, and a value ~1,000 deep raises RecursionError
    # here or, stored, in every reader of the downstream steps.
    depth = jsonsafe.nesting_depth(value, stop_after=MAX_RESULT_DEPTH_WALK)
    problem = jsonsafe.shape_problem(depth=depth, max_depth=max_depth)
    if problem is not None:
        raise ResultTooLarge(
            f"{where}: result {problem} (FLOWKIT_MAX_JSON_DEPTH); flatten it, or write the data "
            'elsewhere and return flowkit.Ref("s3://...") to it',
            step=step,
        )
    try:
        text = jsonsafe.dumps(value, sort_keys=True, default=_json_default)
    except jsonsafe.NonFiniteNumberError as exc:
        raise ValueError(
            f"{where}: result contains NaN/Infinity at {exc.path}; return None or a string instead"
        ) from None
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"{where}: the result is not JSON-serialisable ({exc}); return "
            "dicts, lists, strings, numbers, booleans or None"
        ) from None
    text = _masked_json(text)
    size = len(text.encode())
    if size > cap:
        raise ResultTooLarge(
            f"{where}: result is {size:,} bytes, over the {cap:,}-byte cap "
            "(FLOWKIT_MAX_RESULT_BYTES); write the data elsewhere (a file, an object store) and "
            'return flowkit.Ref("s3://...") to it',
            step=step,
        )
    return text


#: encode_result measures a result's depth down to this many levels (a cyclic value ends there).
MAX_RESULT_DEPTH_WALK = 10_000


def masked(value: _V) -> _V:
    """What the worker stores (result, error, traceback, output) with every known secret as
    ``***``: the one masking function all of them go through."""
    masked: _V = secrets.mask_stored(value)
    return masked


def _masked_json(text: str) -> str:
    """A result's JSON text, masked as data, never as text (a secret matching part of a
    number must not make it invalid JSON, and an escaped one must still be found). Parsed
    again only in a process that knows a secret."""
    secrets.register_configured_secrets()
    if not secrets.any_registered():
        return text
    parsed = jsonsafe.loads(text)
    hidden = masked(parsed)
    return text if hidden == parsed else jsonsafe.dumps(hidden, sort_keys=True)


def _json_default(value: Any) -> Any:
    import datetime as dt
    import decimal
    import pathlib

    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    if isinstance(value, (pathlib.PurePath, decimal.Decimal)):
        return str(value)
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if isinstance(value, refs.Ref):
        return value.to_json()
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def describe_exception(exc: BaseException) -> str:
    """``Type: message``, even when the exception's ``__str__`` itself raises."""
    try:
        message = str(exc)
    except Exception as broken:  # a user exception whose __str__ fails must still be recorded
        message = f"<str() of the exception raised {type(broken).__name__}>"
    return f"{type(exc).__name__}: {message}"


def format_traceback() -> str:
    try:
        return tb_module.format_exc(limit=30)
    except Exception:  # formatting calls __str__ too
        return "<the traceback could not be formatted>"


def storable(text: str | None) -> str | None:
    """PostgreSQL text cannot hold NUL bytes: keep them visible, escaped."""
    return text.replace("\x00", "\\x00") if text and "\x00" in text else text
