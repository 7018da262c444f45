"""``success_when=``: a step option that decides from a step's result whether it succeeded.

``.step("count", count, success_when=lambda r: r["rows"] > 0)`` turns a returned result the
check answers falsy to into a failed attempt (retries apply), with an error showing the
result. Works on every step kind: for a shell step the result is its
``{"exit_code": ..., "last_lines": [...]}``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .. import jsonsafe

#: How much of the result a failed check's error shows.
SHOWN_RESULT_CHARS = 300


class NotSuccessful(Exception):
    """The step's success_when= check answered falsy."""


def check(success_when: Callable[[Any], Any], result: Any, *, step: str) -> None:
    """Raise :class:`NotSuccessful` if ``success_when(result)`` is falsy. An exception the
    check raises propagates as it is (the attempt fails with its traceback)."""
    if success_when(result):
        return
    name = getattr(success_when, "__qualname__", None) or repr(success_when)
    raise NotSuccessful(
        f"step {step}: success_when={name} said no to the result {show(result)}; the attempt failed (retries apply)"
    )


def show(result: Any) -> str:
    try:
        text = jsonsafe.dumps(result, sort_keys=True, default=repr)
    except Exception:  # a result that cannot be shown must not hide the verdict
        text = repr(result)
    return text if len(text) <= SHOWN_RESULT_CHARS else text[:SHOWN_RESULT_CHARS] + "… (truncated)"
