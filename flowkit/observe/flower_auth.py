"""Who may open Flower, and where it may listen. Not public API.

Flower shows every task's arguments and can revoke tasks; it had no authentication by
default until CVE-2022-30034. ``flowkit flower`` therefore listens on the loopback interface
unless told otherwise, and refuses any other address without basic-auth users
(``FLOWKIT_FLOWER_BASIC_AUTH=user:password[,user2:password2]``) unless ``--insecure`` says
so explicitly.
"""

from __future__ import annotations

import ipaddress

from ..errors import ConfigError

#: The variable holding Flower's basic-auth users.
AUTH_VARIABLE = "FLOWKIT_FLOWER_BASIC_AUTH"


def basic_auth_users(raw: str | None) -> list[str]:
    """The ``user:password`` entries of ``raw`` (none when unset), or a one-line error
    naming the entry that is not of that form (the password itself is never echoed)."""
    if raw is None or not raw.strip():
        return []
    users = [entry.strip() for entry in raw.split(",")]
    for position, entry in enumerate(users, start=1):
        user, sep, password = entry.partition(":")
        if not sep or not user or not password:
            raise ConfigError(
                f"{AUTH_VARIABLE}: entry {position} ({user or 'empty'!s}{':...' if sep else ''}) is not "
                "user:password; write user:password[,user2:password2] (a password cannot contain a comma)"
            )
    return users


def is_loopback(address: str) -> bool:
    """Whether ``address`` only accepts connections from this machine ("" is every interface)."""
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False  # a host name or "": it may be reachable from elsewhere


def check_exposure(address: str, users: list[str], *, insecure: bool) -> None:
    """Refuse Flower on an address others can reach with no users, unless ``insecure``."""
    if users or insecure or is_loopback(address):
        return
    shown = address or "every interface"
    raise ConfigError(
        f"flowkit flower --address {address!r} ({shown}) would serve Flower without authentication; "
        f"set {AUTH_VARIABLE}=user:password (or listen on 127.0.0.1, or add --insecure if a proxy in "
        "front of it authenticates)"
    )
