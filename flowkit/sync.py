"""Load the dags folder (in subprocesses) and record flows, versions and errors in the store."""

from __future__ import annotations

import logging

from .loader import LoadReport, load_folder
from .store.sql import SqlStore

log = logging.getLogger(__name__)


def sync_dags(store: SqlStore, folder: str, *, timeout: float = 30.0) -> LoadReport:
    """Import only files whose hash changed since the store last saw them."""
    report = load_folder(folder, timeout=timeout, known=store.known_dag_files())
    store.record_load(report.files)
    for err in report.errors:
        log.warning("dags: %s", err)
    return report
