"""Strict JSON: what flowkit writes and reads is JSON any parser accepts. Not public API.

Python's ``json`` writes ``NaN``, ``Infinity`` and ``-Infinity`` by default; they are not
JSON (RFC 8259), and ``jq``, browsers and PostgreSQL's ``jsonb`` refuse them. flowkit
refuses them where they come in (params, step results) and replaces them with ``null``
where they go out (``sanitize``: rows stored before this check existed).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from typing import Any

__all__ = ["NonFiniteNumberError", "dumps", "find_non_finite", "loads", "sanitize"]

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class NonFiniteNumberError(ValueError):
    """A value holds NaN or Infinity; ``path`` says where (``$`` is the value itself)."""

    def __init__(self, path: str, value: object) -> None:
        self.path = path
        self.value = value
        super().__init__(f"{value!r} at {path} is not a JSON number (NaN and Infinity are not JSON)")


def _step(path: str, key: object) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    text = str(key)
    return f"{path}.{text}" if _IDENTIFIER.match(text) else f"{path}[{json.dumps(text)}]"


def find_non_finite(value: Any, path: str = "$") -> str | None:
    """The JSONPath of the first NaN or Infinity inside ``value``, or None if there is none.

    >>> find_non_finite({"metrics": [0.5, float("nan")]})
    '$.metrics[1]'
    """
    found = _first_non_finite(value, path)
    return found[0] if found else None


def _first_non_finite(value: Any, path: str) -> tuple[str, float] | None:
    stack: list[tuple[str, Any]] = [(path, value)]
    while stack:
        where, item = stack.pop()
        if isinstance(item, float):
            if not math.isfinite(item):
                return where, item
        elif isinstance(item, dict):
            stack.extend((_step(where, k), v) for k, v in reversed(list(item.items())))
        elif isinstance(item, (list, tuple)):
            stack.extend((_step(where, i), v) for i, v in reversed(list(enumerate(item))))
    return None


def dumps(value: Any, *, default: Callable[[Any], Any] | None = None, **kwargs: Any) -> str:
    """``json.dumps`` that refuses NaN and Infinity with :class:`NonFiniteNumberError`.

    Values that ``default`` converts are checked too (``allow_nan=False`` sees them).
    """
    try:
        return json.dumps(value, allow_nan=False, default=default, **kwargs)
    except ValueError as exc:
        if "Out of range float values" not in str(exc):
            raise
        found = _first_non_finite(value, "$")
        if found is None:  # the NaN came out of ``default``
            found = ("$ (in a value converted for JSON)", math.nan)
        raise NonFiniteNumberError(*found) from None


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON; use null or a string")


def loads(text: str | bytes) -> Any:
    """``json.loads`` that refuses the ``NaN``/``Infinity``/``-Infinity`` tokens (ValueError)."""
    return json.loads(text, parse_constant=_refuse_constant)


def sanitize(value: Any) -> Any:
    """A copy of ``value`` with every NaN and Infinity replaced by None (JSON ``null``).

    For output of data stored before flowkit refused them; ``JSON.stringify`` does the same.
    """
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: sanitize(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [sanitize(v) for v in value]
    return value
