"""A sensor's wait in words, for ``flowkit runs show`` (the CLI prints it; this only formats)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any


def describe_wait(view: dict[str, Any], fmt_time: Callable[[datetime | None], str]) -> str:
    """One line: pokes so far, when it last poked and what that poke said, when it pokes
    next and when it times out (``view`` as store.sensor_ops.sensor_view gives it)."""
    pokes = int(view.get("pokes") or 0)
    if not pokes:
        return "not poked yet"
    last = fmt_time(view.get("last_poke_at"))
    parts = [f"{pokes} poke{'s' if pokes != 1 else ''}, last at {last} said {view.get('last_said')}"]
    if view.get("next_poke_at") is not None:
        parts.append(f"next poke at {fmt_time(view['next_poke_at'])}")
    if view.get("times_out_at") is not None:
        parts.append(f"times out at {fmt_time(view['times_out_at'])}")
    return "; ".join(parts)
