"""Load the dags folder (in subprocesses) and record flows, versions and errors in the store."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from .config import Settings
from .errors import DagLoadError
from .loader import LoadReport, load_folder
from .spec import FlowSpec
from .store.sql import SqlStore

log = logging.getLogger(__name__)


def sync_dags(store: SqlStore, folder: str, *, timeout: float = 30.0) -> LoadReport:
    """Import only files whose hash changed since the store last saw them."""
    report = load_folder(folder, timeout=timeout, known=store.known_dag_files())
    store.record_load(report.files)
    for err in report.errors:
        log.warning("dags: %s", err)
    return report


def settings_problems(flows: Iterable[FlowSpec], settings: Settings) -> list[DagLoadError]:
    """Flows that load but cannot run safely with these settings."""
    problems = []
    for spec in flows:
        for step in spec.steps:
            if step.timeout_seconds and step.timeout_seconds >= settings.visibility_timeout_seconds:
                problems.append(DagLoadError(
                    f'flow "{spec.name}" step "{step.name}": timeout {step.timeout_seconds:g} s is not '
                    f"below FLOWKIT_VISIBILITY_TIMEOUT_SECONDS={settings.visibility_timeout_seconds:g}; "
                    "Redis would deliver the step again while it runs, so raise the visibility "
                    "timeout or shorten the step",
                    path=spec.path, lineno=step.lineno, flow=spec.name, step=step.name))
    return problems
