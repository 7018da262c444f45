"""Whether a process the tests started has exited."""

from __future__ import annotations

import time


def pid_gone(pid: int, within: float = 5.0) -> bool:
    """``pid`` has exited within ``within`` seconds (a zombie not yet reaped by init has
    exited too: this container's init reaps slowly)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                if fh.read().rsplit(")", 1)[1].split()[0] in ("Z", "X"):
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.05)
    return False
