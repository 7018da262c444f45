"""Deadlines and predicted SLAs: a deadline per flow or step, per-step duration statistics,
the critical path through what remains of a run, and the checks that decide when a run is
at risk or has missed its deadline (see README "Deadlines and predicted SLAs")."""

from __future__ import annotations

from flowkit.sla.deadline import Deadline

__all__ = ["Deadline"]
