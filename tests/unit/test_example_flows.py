"""The example flows in dags/: what the loader finds there, and the file helpers the three
examples share through dags/_files.py, pinned with each flow's version."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from flowkit.loading.loader import LoadReport, dag_files, load_folder, source_hash
from flowkit.loading.pinned import version_for
from flowkit.store.sql import SqlStore
from flowkit.testing import InlineHarness

ROOT = Path(__file__).resolve().parents[2]
DAGS = ROOT / "dags"
EXAMPLES = ("ml_training", "orders", "telematics")


@pytest.fixture(scope="module")
def report() -> LoadReport:
    return load_folder(DAGS, timeout=60)


def test_the_dags_folder_holds_the_examples_and_the_starter_not_the_helper(report: LoadReport) -> None:
    assert [p.name for p in dag_files(DAGS)] == ["ml_training.py", "orders.py", "starter.py", "telematics.py"]
    assert [r.error for r in report.files] == [None] * 4
    assert sorted(report.flows) == ["fleet_report", "ml_training", "orders", "starter", "telematics"]


def test_each_example_pins_the_shared_file_helpers(report: LoadReport) -> None:
    files = {Path(r.path).stem: r for r in report.files}
    for name in EXAMPLES:
        assert [m.name for m in files[name].modules] == ["_files"], name
        source = (DAGS / f"{name}.py").read_text()
        assert report.flows[name].version == version_for(source_hash(source), files[name].modules)
    assert files["starter"].modules == []  # needs no helper: its version is its own source's hash
    assert report.flows["starter"].version == source_hash((DAGS / "starter.py").read_text())


def copy_dags(folder: Path, *names: str) -> Path:
    folder.mkdir()
    for name in names:
        shutil.copy(DAGS / name, folder / name)
    return folder


def test_an_edit_to_the_helper_makes_new_versions_of_the_flows_that_import_it(tmp_path: Path) -> None:
    folder = copy_dags(tmp_path / "dags", "orders.py", "starter.py", "_files.py")
    before = load_folder(folder, timeout=60)
    with (folder / "_files.py").open("a") as fh:
        fh.write("\n# an edit\n")
    known = {r.path: (r.hash, r.flows, r.error, r.helper_hashes) for r in before.files}
    after = load_folder(folder, timeout=60, known=known)
    assert after.flows["orders"].version != before.flows["orders"].version
    assert after.flows["starter"].version == before.flows["starter"].version


def test_a_run_keeps_its_pinned_helper_when_the_file_is_gone(sqlite_store: SqlStore, tmp_path: Path) -> None:
    # Given the ML example synced with its helper, and a run of it
    folder = copy_dags(tmp_path / "dags", "ml_training.py", "_files.py")
    harness = InlineHarness(sqlite_store, str(folder))
    run_id = harness.trigger("ml_training", {"workdir": str(tmp_path / "work")})
    # When the helper file disappears before any step runs
    (folder / "_files.py").unlink()
    # Then the worker imports the helper's stored source, and the run writes its files
    assert harness.run_until_done(run_id) == "success"
    assert (tmp_path / "work" / "runs" / run_id / "metrics.json").exists()
