"""Load the dags folder (in subprocesses) and record flows, versions and errors in the store."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from typing import Any

from ..config import Settings
from ..errors import DagLoadError
from ..spec import FlowSpec
from ..store.sql import SqlStore
from ..triggers.conditions import unknown_sources
from .loader import LoadReport, load_folder

log = logging.getLogger(__name__)


def sync_dags(store: SqlStore, folder: str, *, timeout: float = 30.0, log_problems: bool = True) -> LoadReport:
    """Import only files whose hash changed since the store last saw them.

    ``log_problems``: log load errors and pool problems (a caller that prints them itself,
    such as `flowkit dags list`, passes False so each is shown once).
    """
    report = load_folder(folder, timeout=timeout, known=store.known_dag_files())
    store.record_load(report.files)
    store.sync_flow_caps(report.flows.values())
    if log_problems:
        for err in report.errors:
            log.warning("dags: %s", err)
        for problem in pool_problems(report.flows.values(), store.pool_sizes()):
            log.error("dags: %s", problem)
        # a warning, not an error: the flow a FlowDone names may load later (flowkit.triggers)
        for warning in unknown_sources(report.flows.values(), (f["name"] for f in store.list_flows())):
            log.warning("dags: %s", warning)
    return report


def spec_for_trigger(store: SqlStore, folder: str, flow: str, *, timeout: float = 30.0) -> FlowSpec:
    """The spec a new run of ``flow`` gets, importing as little as possible.

    A trigger must not wait on other modules' imports (a slow or hanging one costs up to
    the import timeout). If the flow is stored and its own file (and the helpers it
    imports) is unchanged, the stored spec is the file's: nothing is imported. If that file
    changed, only it is imported again. An unknown flow, or one whose file moved, was
    deleted or now clashes with another file's flow, falls back to syncing the folder.
    """
    from pathlib import Path

    from .loader import dag_files, helpers_unchanged, import_file, source_hash

    row = next((f for f in store.list_flows() if f["name"] == flow), None)
    path = row["path"] if row else None
    in_folder = {str(p) for p in dag_files(folder)}
    if path is None or path not in in_folder:
        sync_dags(store, folder, timeout=timeout)
        return store.flow_spec(flow)
    stored = next((r for r in store.dag_file_rows() if r["path"] == path), None)
    raw = Path(path).read_bytes()
    if (
        stored is not None
        and stored["helpers"] is not None
        and stored["hash"] == source_hash(raw)
        and helpers_unchanged(json.loads(stored["helpers"]))
    ):
        return store.flow_spec(flow)
    result = import_file(Path(path), Path(folder).resolve(), timeout)
    elsewhere = {f["name"] for f in store.list_flows() if f["path"] != path}
    if result.error is None and (
        any(s.name in elsewhere for s in result.flows) or len({s.name for s in result.flows}) != len(result.flows)
    ):
        sync_dags(store, folder, timeout=timeout)  # a clash: the full load names both sides
        return store.flow_spec(flow)
    store.record_load([result], complete=False)
    store.sync_flow_caps(result.flows)
    if result.error is not None:
        log.warning("dags: %s", result.error)
    elif flow not in {s.name for s in result.flows}:
        sync_dags(store, folder, timeout=timeout)  # the flow left its file: moved, or gone
    return store.flow_spec(flow)


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
                problems.append(
                    DagLoadError(
                        f'flow "{spec.name}" step "{step.name}": pool "{step.pool}" does not exist; '
                        f"create it with `flowkit pools set {step.pool} SLOTS`",
                        **where,
                    )
                )
            elif size is not None and step.slots > size:
                problems.append(
                    DagLoadError(
                        f'flow "{spec.name}" step "{step.name}" asks for {step.slots} slots of pool '
                        f'"{step.pool}", which has {size}; lower slots= or `flowkit pools set '
                        f"{step.pool} {step.slots}`",
                        **where,
                    )
                )
    return problems


def settings_problems(flows: Iterable[FlowSpec], settings: Settings) -> list[DagLoadError]:
    """Flows that load but cannot run safely with these settings."""
    problems = []
    for spec in flows:
        for step in spec.steps:
            if step.timeout_seconds and step.timeout_seconds >= settings.visibility_timeout_seconds:
                problems.append(
                    DagLoadError(
                        f'flow "{spec.name}" step "{step.name}": timeout {step.timeout_seconds:g} s is not '
                        f"below FLOWKIT_VISIBILITY_TIMEOUT_SECONDS={settings.visibility_timeout_seconds:g}; "
                        "Redis would deliver the step again while it runs, so raise the visibility "
                        "timeout or shorten the step",
                        path=spec.path,
                        lineno=step.lineno,
                        flow=spec.name,
                        step=step.name,
                    )
                )
    return problems
