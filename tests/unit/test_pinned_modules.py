"""Helper modules a flow imports from the dags folder are stored and pinned with its version."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from flowkit.loading.loader import load_folder, source_hash
from flowkit.loading.pinned import ModuleSource, importable, version_for
from flowkit.loading.sync import sync_dags
from flowkit.store.sql import SqlStore
from flowkit.testing import InlineHarness

FLOW = """
import helpers
from lib.db import table

from flowkit import Flow


def read(ctx):
    return {"helper": helpers.VALUE, "table": table()}


flow = Flow("pinned").step("read", read)
"""


def _write_dags(folder: Path, value: int = 1) -> None:
    (folder / "lib").mkdir(parents=True, exist_ok=True)
    (folder / "pinned_flow.py").write_text(FLOW)
    (folder / "helpers.py").write_text(f"VALUE = {value}\n")
    (folder / "lib" / "__init__.py").write_text("")
    (folder / "lib" / "db.py").write_text("from . import names\n\ndef table():\n    return names.TABLE\n")
    (folder / "lib" / "names.py").write_text('TABLE = "orders"\n')


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    dags = tmp_path / "dags"
    _write_dags(dags)
    return dags


def test_the_loader_finds_the_helpers_under_the_dags_folder_and_hashes_them_into_the_version(folder):
    report = load_folder(folder, timeout=30)
    result = {Path(r.path).name: r for r in report.files}["pinned_flow.py"]
    assert result.error is None, result.error
    assert [m.name for m in result.modules] == ["helpers", "lib", "lib.db", "lib.names"]
    assert all(Path(m.path).is_relative_to(folder.resolve()) for m in result.modules)
    assert not any(m.name.startswith(("flowkit", "json")) for m in result.modules)  # not site-packages
    assert {m.name: m.package for m in result.modules}["lib"] is True
    version = report.flows["pinned"].version
    assert version == version_for(source_hash((folder / "pinned_flow.py").read_text()), result.modules)
    assert version != source_hash((folder / "pinned_flow.py").read_text())

    (folder / "helpers.py").write_text("VALUE = 2\n")
    known = {r.path: (r.hash, r.flows, r.error, r.helper_hashes) for r in report.files}
    again = load_folder(folder, timeout=30, known=known)
    assert again.flows["pinned"].version != version, "an edited helper must make a new version"


def test_a_flow_without_helpers_keeps_the_hash_of_its_module_alone(tmp_path):
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "plain.py").write_text("from flowkit import Flow\nflow = Flow('plain').step('a', lambda: 1)\n")
    report = load_folder(dags, timeout=30)
    assert report.flows["plain"].version == source_hash((dags / "plain.py").read_text())
    assert report.files[0].modules == []


def test_a_virtualenv_inside_the_dags_folder_is_not_pinned(tmp_path):
    project = tmp_path / "project"
    venv_pkg = project / ".venv" / "lib" / "site-packages" / "vendored"
    venv_pkg.mkdir(parents=True)
    (venv_pkg / "__init__.py").write_text("X = 1\n")
    (project / "helpers.py").write_text("VALUE = 3\n")
    site = str(venv_pkg.parent)
    (project / "flow.py").write_text(
        f"import sys\nsys.path.append({site!r})\nimport vendored\nimport helpers\n"
        "from flowkit import Flow\nflow = Flow('whole').step('a', lambda: helpers.VALUE)\n"
    )
    report = load_folder(project, timeout=30)
    result = {Path(r.path).name: r for r in report.files}["flow.py"]
    assert result.error is None, result.error
    assert [m.name for m in result.modules] == ["helpers"]


def test_underscore_files_stay_helper_only_and_are_pinned_when_imported(tmp_path):
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "_shared.py").write_text("raise RuntimeError('imported as a dags file')\n")
    (dags / "_util.py").write_text("X = 5\n")
    (dags / "uses.py").write_text(
        "import _util\nfrom flowkit import Flow\nflow = Flow('uses').step('a', lambda: _util.X)\n"
    )
    report = load_folder(dags, timeout=30)
    assert [Path(r.path).name for r in report.files] == ["uses.py"]
    assert [m.name for m in report.files[0].modules] == ["_util"]


def test_each_content_is_stored_once_and_old_versions_keep_their_own_helpers(tmp_path, folder):
    store = SqlStore(f"sqlite:///{tmp_path}/s.db")
    store.upgrade()
    harness = InlineHarness(store, str(folder))
    first_version = store.flow_spec("pinned").version
    first = harness.trigger("pinned")

    (folder / "helpers.py").write_text("VALUE = 2\n")
    sync_dags(store, str(folder))
    second_version = store.flow_spec("pinned").version
    assert second_version != first_version
    second = harness.trigger("pinned")

    # The worker has no dags folder: only the store's sources can be imported.
    shutil.rmtree(folder)
    assert harness.run_until_done(first) == "success"
    assert harness.run_until_done(second) == "success"
    assert store.results(first)["read"] == {"helper": 1, "table": "orders"}
    assert store.results(second)["read"] == {"helper": 2, "table": "orders"}
    assert "helpers" not in sys.modules and "lib.db" not in sys.modules

    from sqlalchemy import func, select

    from flowkit.store import tables as t

    with store.engine.connect() as conn:
        sources = conn.execute(select(func.count()).select_from(t.module_sources)).scalar()
        links = conn.execute(select(func.count()).select_from(t.flow_modules)).scalar()
    assert sources == 5, "helpers.py twice (two contents), lib/__init__, lib/db, lib/names once each"
    assert links == 8
    store.dispose()


def test_a_version_stored_before_helpers_were_pinned_still_imports_from_the_dags_folder(tmp_path, folder):
    store = SqlStore(f"sqlite:///{tmp_path}/s.db")
    store.upgrade()
    harness = InlineHarness(store, str(folder))
    from sqlalchemy import delete

    from flowkit.store import tables as t

    with store.engine.begin() as conn:  # what an older flowkit left: the module source only
        conn.execute(delete(t.flow_modules))
    run_id = harness.trigger("pinned")
    assert harness.run_until_done(run_id) == "success"
    assert store.results(run_id)["read"]["helper"] == 1
    for name in ("helpers", "lib", "lib.db", "lib.names"):  # imported the old way, from sys.path
        sys.modules.pop(name, None)
    store.dispose()


def test_a_namespace_package_of_helpers_is_pinned_too(tmp_path):
    dags = tmp_path / "dags"
    (dags / "shared").mkdir(parents=True)  # no __init__.py
    (dags / "shared" / "names.py").write_text("NAME = 'ns'\n")
    (dags / "ns_flow.py").write_text(
        "from shared.names import NAME\nfrom flowkit import Flow\nflow = Flow('ns').step('a', lambda: NAME)\n"
    )
    store = SqlStore(f"sqlite:///{tmp_path}/s.db")
    store.upgrade()
    harness = InlineHarness(store, str(dags))
    assert [(m.name, m.package) for m in store.flow_modules("ns", store.flow_spec("ns").version)] == [
        ("shared", True),
        ("shared.names", False),
    ]
    run_id = harness.trigger("ns")
    shutil.rmtree(dags)
    assert harness.run_until_done(run_id) == "success"
    assert store.results(run_id)["a"] == "ns"
    store.dispose()


def test_a_file_recorded_before_helpers_were_pinned_is_imported_again(tmp_path, folder):
    store = SqlStore(f"sqlite:///{tmp_path}/s.db")
    store.upgrade()
    sync_dags(store, str(folder))
    from sqlalchemy import update

    from flowkit.store import tables as t

    with store.engine.begin() as conn:  # as an older flowkit left the row
        conn.execute(update(t.dag_files).values(helpers=None))
    assert store.known_dag_files() == {}
    sync_dags(store, str(folder))
    assert all(len(v) == 4 for v in store.known_dag_files().values())
    store.dispose()


def test_importable_sets_other_versions_aside_and_puts_them_back():
    sys.modules.pop("pin_probe", None)
    old = [ModuleSource(name="pin_probe", path="/nowhere/pin_probe.py", source="V = 'old'\n")]
    new = [ModuleSource(name="pin_probe", path="/nowhere/pin_probe.py", source="V = 'new'\n")]
    with importable(old):
        import pin_probe  # type: ignore[import-not-found]

        assert pin_probe.V == "old"
        with importable(new):
            import pin_probe as inner  # type: ignore[import-not-found]

            assert inner.V == "new"
        assert sys.modules["pin_probe"].V == "old"
    assert "pin_probe" not in sys.modules


def test_a_refresh_of_unchanged_files_stores_no_version_again(tmp_path, folder, monkeypatch):
    # Given the folder synced once
    store = SqlStore(f"sqlite:///{tmp_path}/s.db")
    store.upgrade()
    sync_dags(store, str(folder))
    version = store.flow_spec("pinned").version

    # When it is synced again unchanged: no spec is serialised (a 10,000-step flow's cost)
    from flowkit.spec import FlowSpec

    def refuse(self: FlowSpec) -> str:
        raise AssertionError(f"{self.name} serialised again")

    monkeypatch.setattr(FlowSpec, "to_json", refuse)
    report = sync_dags(store, str(folder))
    assert all(r.cached for r in report.files)
    assert store.flow_spec("pinned").version == version
    monkeypatch.undo()

    # And an edited helper still makes (and stores) a new version
    (folder / "helpers.py").write_text("VALUE = 3\n")
    report = sync_dags(store, str(folder))
    assert store.flow_spec("pinned").version != version
    store.dispose()
