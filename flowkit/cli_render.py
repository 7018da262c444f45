"""Rendering commands: render, lineage, report (see flowkit.render)."""

from __future__ import annotations
