"""How the builder checks what it is given: every misuse becomes a DefinitionError that names
the flow, the step and the file:line of the user's call. Used by :mod:`flowkit.dsl` only.

``checks_arguments`` turns a malformed call of a builder method (an unknown keyword, a missing
or extra argument) into that error, with the closest known keyword; the helpers below check
one argument each.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import os
import re
import sys
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from .errors import DefinitionError
from .spec import LOCK_MODES

NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,99}$")
NAME_RULE = "use letters, digits, '_' and '-' (at most 100, starting with a letter or '_')"
_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
#: The builder's own files: frames in them are skipped when looking for the user's call.
_BUILDER_FILES = frozenset({__file__, os.path.join(os.path.dirname(__file__), "dsl.py")})

_P = typing.ParamSpec("_P")
_R = TypeVar("_R")


def caller_location(depth: int = 2) -> tuple[str | None, int | None]:
    """File and line of the user's code that called into the builder."""
    frame = sys._getframe(depth)
    while frame is not None and frame.f_code.co_filename in _BUILDER_FILES:
        frame = frame.f_back  # type: ignore[assignment]
    if frame is None:
        return None, None
    return frame.f_code.co_filename, frame.f_lineno


def suggest(name: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(choices), n=1)
    return f' Did you mean "{close[0]}"?' if close else ""


def parse_duration(value: str | float | int | None) -> float | None:
    """``"30s"``, ``"5m"``, ``"1h30m"``, ``"250ms"`` or a number of seconds -> seconds."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError("a boolean is not a duration")
    if isinstance(value, (int, float)):
        if not value > 0 or value == float("inf"):  # also refuses NaN
            raise ValueError("a duration must be positive")
        return float(value)
    text = str(value).strip().replace(" ", "")
    pos, total = 0, 0.0
    for m in _DURATION_RE.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
        pos = m.end()
    if pos != len(text) or not text or total <= 0:
        raise ValueError(f"{value!r} is not a duration")
    return total


# -- turning malformed calls into definition errors ---------------------------------------------


@functools.cache
def _keywords(method: Callable[..., Any]) -> tuple[frozenset[str], tuple[str, ...]]:
    """Every keyword ``method`` accepts, and the options among them in declaration order,
    read from its signature; ``**options: Unpack[StepOptions]`` contributes the TypedDict's keys."""
    names: set[str] = set()
    options: list[str] = []
    for p in inspect.signature(method).parameters.values():
        if p.name == "self":
            continue
        if p.kind is p.POSITIONAL_OR_KEYWORD:
            names.add(p.name)
        elif p.kind is p.KEYWORD_ONLY:
            options.append(p.name)
        elif p.kind is p.VAR_KEYWORD:
            hint = typing.get_type_hints(method, include_extras=True)[p.name]
            (typed_dict,) = typing.get_args(hint)  # Unpack[SomeTypedDict]
            options += typing.get_type_hints(typed_dict)
    return frozenset(names | set(options)), tuple(options)


def checks_arguments(*, hints: Mapping[str, str] | None = None) -> Callable[[Callable[_P, _R]], Callable[_P, _R]]:
    """Make a builder method raise a DefinitionError, not a TypeError, when it is called
    wrongly: an unknown keyword (with the closest known one), a missing or an extra
    positional argument. ``hints`` maps a keyword the method refuses to the advice to give."""

    def decorate(method: Callable[_P, _R]) -> Callable[_P, _R]:
        @functools.wraps(method)
        def checked(*args: _P.args, **kwargs: _P.kwargs) -> _R:
            if kwargs:
                unknown = kwargs.keys() - _keywords(method)[0]
                if unknown:
                    raise _call_error(method, args, kwargs, hints or {}, sorted(unknown)[0])
            try:
                return method(*args, **kwargs)
            except TypeError:
                try:
                    inspect.signature(method).bind(*args, **kwargs)
                except TypeError:
                    raise _call_error(method, args, kwargs, hints or {}, None) from None
                raise  # the call was well formed: a bug in the method itself

        return checked

    return decorate


def _call_error(
    method: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    hints: Mapping[str, str],
    unknown: str | None,
) -> DefinitionError:
    path, lineno = caller_location()
    flow_obj, args = args[0], args[1:]
    given_name = args[0] if args else kwargs.get("name")
    if method.__name__ == "__init__":
        call = "Flow()"
        flow = given_name if isinstance(given_name, str) else None
        step = None
        who = f'flow "{flow}"' if flow is not None else "Flow()"
    else:
        call = f"{method.__name__}()"
        flow = flow_obj.name
        step = given_name if isinstance(given_name, str) else None
        who = f'flow "{flow}" step "{step}"' if step is not None else f'flow "{flow}"'
    where: dict[str, Any] = {"flow": flow, "step": step, "path": path, "lineno": lineno}

    names, options = _keywords(method)
    if unknown is not None:
        if unknown in hints:
            return DefinitionError(f"{who}: {hints[unknown]}", **where)
        return DefinitionError(
            f"{who}: unknown option {unknown!r}.{suggest(unknown, names)} Options are: {', '.join(sorted(options))}",
            **where,
        )
    params = [p for p in inspect.signature(method).parameters.values() if p.name != "self"]
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    required = [p.name for p in positional if p.default is p.empty]
    usage = f"{'Flow' if call == 'Flow()' else '.' + method.__name__}({', '.join(required)}, ...)"
    if len(args) > len(positional):
        return DefinitionError(
            f"{who}: {call} takes {len(positional)} positional argument"
            f"{'s' if len(positional) != 1 else ''} ({', '.join(p.name for p in positional)}) "
            f"but was given {len(args)}; pass the options by keyword, e.g. "
            f"{options[0]}=...",
            **where,
        )
    twice = [p.name for p in positional[: len(args)] if p.name in kwargs]
    if twice:
        return DefinitionError(
            f"{who}: {call} got {twice[0]} twice, by position and as {twice[0]}=; give it once",
            **where,
        )
    missing = [name for name in required[len(args) :] if name not in kwargs]
    prefix = "" if who == call else f"{who}: "
    return DefinitionError(
        f"{prefix}{call} is missing its {' and '.join(missing)} argument{'s' if len(missing) > 1 else ''}; "
        f"call it as {usage}",
        **where,
    )


# -- argument checks shared by the flow and its steps --------------------------------------------


def display_name(fn: Any) -> str:
    return f"{getattr(fn, '__module__', '?')}:{getattr(fn, '__qualname__', repr(fn))}"


def as_strings(value: Any, label: str, one: str, who: str, where: dict[str, Any]) -> tuple[str, ...]:
    """``value`` as a tuple of strings: None is none, a string is one, a list (or any iterable
    but a mapping) is each of its items; a set is sorted so that the spec is reproducible."""
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, (bytes, Mapping)) or not isinstance(value, Iterable):
        raise DefinitionError(
            f"{who}: {label}= takes {one} or a list of them, not {type(value).__name__} {value!r}", **where
        )
    items = tuple(value)
    for item in items:
        if not isinstance(item, str):
            raise DefinitionError(
                f"{who}: {label}= takes {one} or a list of them (strings), not {item!r} in {value!r}", **where
            )
    return tuple(sorted(items)) if isinstance(value, (set, frozenset)) else items


def with_article(noun: str) -> str:
    return f"an {noun}" if noun[:1] in "aeiou" else f"a {noun}"


def optional_str(value: Any, label: str, who: str, where: dict[str, Any]) -> str | None:
    if value is not None and not isinstance(value, str):
        raise DefinitionError(f"{who}: {label}= takes a string, not {type(value).__name__} {value!r}", **where)
    return value


def check_limit(value: Any, label: str, who: str, where: dict[str, Any]) -> int | None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise DefinitionError(f"{who}: {label}={value!r} must be a whole number >= 1, or None for no limit", **where)
    return value


def check_lock(value: Any, who: str, where: dict[str, Any]) -> tuple[str | None, str]:
    """``lock=`` as ``(name, mode)``: a string is an exclusive lock, a tuple names the mode."""
    if value is None:
        return None, "exclusive"
    if isinstance(value, str):
        name, mode = value, "exclusive"
    elif isinstance(value, tuple) and len(value) == 2:
        name, mode = value
    else:
        raise DefinitionError(
            f'{who}: lock={value!r} is not a lock; pass a lock name ("ledger") or a (name, mode) '
            'tuple such as ("ledger", "shared")',
            **where,
        )
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise DefinitionError(f"{who}: lock name {name!r} is not valid; {NAME_RULE}", **where)
    if mode not in LOCK_MODES:
        raise DefinitionError(
            f"{who}: lock mode {mode!r} is not a lock mode.{suggest(str(mode), LOCK_MODES)} "
            f'Use "exclusive" (alone) or "shared" (beside other shared holders)',
            **where,
        )
    return name, mode


def check_callbacks(given: dict[str, Any], who: str, where: dict[str, Any]) -> dict[str, Callable[..., Any]]:
    """The callbacks given (None: not set), each a callable that takes the callback context."""
    out: dict[str, Callable[..., Any]] = {}
    for kind, fn in given.items():
        if fn is None:
            continue
        if not callable(fn):
            raise DefinitionError(
                f"{who}: {kind}={fn!r} is not callable; pass a function that takes the callback "
                f"context, e.g. {kind}=notify with def notify(ctx): ...",
                **where,
            )
        try:
            signature = inspect.signature(fn)
        except (TypeError, ValueError):
            out[kind] = fn  # builtins and C callables: nothing to check
            continue
        try:
            signature.bind(None)
        except TypeError:
            name = getattr(fn, "__name__", repr(fn))
            raise DefinitionError(
                f"{who}: {kind}={name}{signature} cannot be called with one argument; a callback "
                f"takes the callback context: def {name}(ctx): ...",
                **where,
            ) from None
        out[kind] = fn
    return out
