"""Strict JSON: what flowkit writes and reads is JSON any parser accepts. Not public API.

Python's ``json`` writes ``NaN``, ``Infinity`` and ``-Infinity`` by default; they are not
JSON (RFC 8259), and ``jq``, browsers and PostgreSQL's ``jsonb`` refuse them. flowkit
refuses them where they come in (params, step results) and replaces them with ``null``
where they go out (``sanitize``: rows stored before this check existed).

It also bounds the shape of what comes in (:func:`shape_problem`): params and step results
nested deeper than ``MAX_DEPTH`` levels, or larger than their byte cap, are refused where
they enter. Python's ``json`` recurses once per level, so a value nested ~1,000 deep
crashes every later reader (``runs show``, the worker's claim, renders) with RecursionError.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from typing import Any

__all__ = [
    "MAX_DEPTH",
    "NonFiniteNumberError",
    "dumps",
    "find_non_finite",
    "loads",
    "nesting_depth",
    "sanitize",
    "shape_problem",
    "text_nesting_depth",
]

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

#: Levels of nesting (lists and objects inside each other) a param or result may have by
#: default (FLOWKIT_MAX_JSON_DEPTH). Real data rarely passes 10; every reader of the store
#: (including the pure-Python encoder ``--json`` uses, ~4 frames a level) stays far below
#: Python's recursion limit of 1,000 frames.
MAX_DEPTH = 64
#: Bytes of JSON a run's params may take by default (FLOWKIT_MAX_PARAMS_BYTES), the same
#: as a step result's cap: params are stored in the runs row and read by every step.
MAX_PARAMS_BYTES = 256 * 1024


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


def nesting_depth(value: Any, stop_after: int | None = None) -> int:
    """How many containers (dicts, lists, tuples, sets) are nested in ``value``, at most.

    Iterative, so any depth is measured without RecursionError. With ``stop_after``, the
    walk stops descending below that depth and returns ``stop_after + 1`` (a cyclic value
    then ends too).

    >>> nesting_depth({"a": [1, [2]]}), nesting_depth(3)
    (3, 0)
    """
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, (list, tuple, set, frozenset)):
            children = item
        else:
            continue
        depth += 1
        if stop_after is not None and depth > stop_after:
            return stop_after + 1
        deepest = max(deepest, depth)
        stack.extend((child, depth) for child in children)
    return deepest


# A JSON string (skipped whole, so brackets inside it do not count) or a bracket.
_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')


def text_nesting_depth(text: str) -> int:
    """How deep the arrays and objects of JSON ``text`` nest, without parsing it (``json``
    recurses per level and raises RecursionError near 1,000). Malformed text gives a
    number too; parsing it is what says it is not JSON."""
    depth = deepest = 0
    for match in _TOKEN.finditer(text):
        token = match.group()
        if token in ("[", "{"):
            depth += 1
            deepest = max(deepest, depth)
        elif token in ("]", "}"):
            depth = max(depth - 1, 0)
    return deepest


def shape_problem(
    *, depth: int, size: int | None = None, max_depth: int = MAX_DEPTH, max_bytes: int | None = None
) -> str | None:
    """What is wrong with a JSON value of ``depth`` levels and ``size`` bytes, or None.

    The one check of params and results against their bounds; the caller says where the
    value came from and how to fix it. ``max_depth`` or ``max_bytes`` of 0 or None: no bound.
    """
    if max_depth and depth > max_depth:
        return f"nested {depth} levels deep; at most {max_depth} allowed"
    if max_bytes and size is not None and size > max_bytes:
        return f"{size:,} bytes; at most {max_bytes:,} allowed"
    return None
