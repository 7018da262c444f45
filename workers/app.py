"""Celery entry point for worker machines: ``celery -A workers.app worker -Q flowkit``.

Reads FLOWKIT_* settings from the environment; equivalent to ``flowkit worker``.
"""

from __future__ import annotations

from flowkit.config import Settings
from flowkit.execution.celery_app import make_app

settings = Settings.from_env()
app = make_app(settings)
app.flowkit_settings = settings  # type: ignore[attr-defined]
