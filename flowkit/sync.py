"""Load the dags folder (in subprocesses) and record flows, versions and errors in the store."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

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
    store.sync_flow_caps(report.flows.values())
    for err in report.errors:
        log.warning("dags: %s", err)
    for problem in pool_problems(report.flows.values(), store.pool_sizes()):
        log.error("dags: %s", problem)
    return report


def pool_problems(flows: Iterable[FlowSpec], pools: dict[str, int | None]) -> list[DagLoadError]:
    """Steps that name a pool nobody created, or ask for more slots than it has: they could
    never run, so they are definition errors (Airflow PR #20178)."""
    problems = []
    for spec in flows:
        for step in spec.steps:
            if not step.pool:
                continue
            where: dict[str, Any] = dict(path=spec.path, lineno=step.lineno, flow=spec.name, step=step.name)
            size = pools.get(step.pool, -1)
            if size == -1:
                problems.append(DagLoadError(
                    f'flow "{spec.name}" step "{step.name}": pool "{step.pool}" does not exist; '
                    f"create it with `flowkit pools set {step.pool} SLOTS`", **where))
            elif size is not None and step.slots > size:
                problems.append(DagLoadError(
                    f'flow "{spec.name}" step "{step.name}" asks for {step.slots} slots of pool '
                    f'"{step.pool}", which has {size}; lower slots= or `flowkit pools set '
                    f"{step.pool} {step.slots}`", **where))
    return problems


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
