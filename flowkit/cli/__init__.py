"""The ``flowkit`` command line: :data:`main` is the click group (``flowkit.cli.root``)."""

from __future__ import annotations

from .root import main

__all__ = ["main"]
