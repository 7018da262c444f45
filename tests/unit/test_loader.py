"""load_folder: each dags module imported in its own subprocess, errors reported per file."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from flowkit import DagLoadError
from flowkit.loading import loader
from flowkit.loading.loader import LoadReport, dag_files, load_folder, source_hash

DAGS = Path(__file__).resolve().parent.parent / "dags"
MIXED = DAGS / "mixed"
DUPS = DAGS / "dups"
HANG = DAGS / "hang"


def _line_in(path: Path, needle: str) -> int:
    """The line number of the one line of ``path`` that contains ``needle``."""
    hits = [i for i, text in enumerate(path.read_text().splitlines(), start=1) if needle in text]
    assert len(hits) == 1, f"{needle!r} found {len(hits)} times in {path}"
    return hits[0]


def _by_name(report: LoadReport) -> dict[str, loader.FileResult]:
    return {Path(r.path).name: r for r in report.files}


def _no_import(*args, **kwargs):
    raise AssertionError(f"import_file called for an unchanged file: {args[0]}")


@pytest.fixture(scope="module")
def mixed() -> LoadReport:
    return load_folder(MIXED, timeout=30)


def test_good_flows_load_alongside_the_broken_modules(mixed):
    assert sorted(mixed.flows) == ["etl", "report"]
    files = _by_name(mixed)
    assert sorted(files) == ["broken_import.py", "cycle.py", "exits.py", "good_flow.py", "syntax_error.py"]
    assert files["good_flow.py"].error is None
    assert sorted(Path(e.path).name for e in mixed.errors) == [
        "broken_import.py",
        "cycle.py",
        "exits.py",
        "syntax_error.py",
    ]
    assert all(isinstance(e, DagLoadError) for e in mixed.errors)
    for name in ("broken_import.py", "cycle.py", "exits.py", "syntax_error.py"):
        assert files[name].flows == []


@pytest.mark.parametrize(
    ("name", "needle", "message", "flow", "step"),
    [
        (
            "broken_import.py",
            "import flowkit_no_such_module_xyz",
            r"^ModuleNotFoundError: No module named 'flowkit_no_such_module_xyz'$",
            None,
            None,
        ),
        ("syntax_error.py", "return flow", r"^syntax error: 'return' outside function$", None, None),
        (
            "cycle.py",
            '.step("a"',
            r'^flow "cyclic" has a cycle: a -> b -> c -> a; remove one of these dependencies$',
            "cyclic",
            "a",
        ),
        (
            "exits.py",
            "sys.exit(3)",
            r"^the module called sys\.exit\(3\) while being imported; remove it$",
            None,
            None,
        ),
    ],
)
def test_each_error_names_its_file_and_line(mixed, name, needle, message, flow, step):
    path = MIXED / name
    err = _by_name(mixed)[name].error
    assert err is not None
    assert err.path == str(path)
    assert err.lineno == _line_in(path, needle)
    assert re.search(message, err.message), err.message
    assert str(err) == f"{path}:{err.lineno}: {err.message}"
    assert (err.flow, err.step) == (flow, step)


def test_good_module_flows_are_complete_despite_its_prints(mixed):
    path = MIXED / "good_flow.py"
    assert 'print("hello' in path.read_text()  # the module writes to stdout while imported
    etl = mixed.flows["etl"]
    assert etl.path == str(path)
    assert etl.lineno == _line_in(path, 'Flow("etl"')
    assert etl.version == source_hash(path.read_text())
    assert etl.schedule == "*/5 * * * *" and etl.owner == "data" and etl.tags == ("daily",)
    assert [(p.name, p.type, p.required) for p in etl.params] == [("day", "str", True)]
    assert [(s.name, s.upstream) for s in etl.steps] == [
        ("extract", ()),
        ("transform", ("extract",)),
        ("load", ("transform",)),
    ]
    assert etl.step("extract").fn == "flowkit_dags.good_flow:extract"
    assert etl.step("extract").doc == "Fetch the rows."
    assert etl.step("transform").retry.retries == 2
    assert etl.step("transform").timeout_seconds == 30.0
    assert etl.step("transform").lineno == _line_in(path, '.step("transform"')
    report = mixed.flows["report"]
    assert report.step_names == ["build"]
    assert report.params[0].default == 10


def test_output_that_looks_like_a_result_does_not_corrupt_it(tmp_path):
    (tmp_path / "noisy.py").write_text(
        "import sys\n"
        "from flowkit import Flow\n"
        'print(\'{"flows": [], "error": {"message": "fake"}}\')\n'
        "print('x' * 200_000)\n"
        "sys.stderr.write('noise on stderr\\n' * 1000)\n"
        "flow = Flow('noisy').step('a', lambda: None)\n"
        "print('}{ not json')\n"
    )
    report = load_folder(tmp_path, timeout=30)
    assert report.errors == []
    assert list(report.flows) == ["noisy"]
    assert report.flows["noisy"].step_names == ["a"]


def test_duplicate_flow_names_name_both_files():
    report = load_folder(DUPS, timeout=30)
    a, b = DUPS / "dup_a.py", DUPS / "dup_b.py"
    assert len(report.errors) == 1
    err = report.errors[0]
    assert err.path == str(b)
    assert err.lineno == _line_in(b, 'Flow("shared_name")')
    assert err.flow == "shared_name"
    assert f'flow "shared_name" is defined twice: here and at {a}:{_line_in(a, "Flow(")}' in err.message
    assert "must be unique across the dags folder, so rename one" in err.message
    # the first definition stays loaded, the second is dropped
    assert report.flows["shared_name"].path == str(a)
    assert report.flows["shared_name"].step_names == ["a"]
    # dup_b keeps what it imported (so a later fix elsewhere clears the clash) but is reported
    assert _by_name(report)["dup_b.py"].conflict is err


def test_fixing_a_duplicate_in_one_file_clears_the_error_of_the_other(tmp_path):
    first, second = tmp_path / "a_first.py", tmp_path / "b_second.py"
    first.write_text("from flowkit import Flow\n\nflow = Flow('shared').step('a', lambda: None)\n")
    second.write_text("from flowkit import Flow\n\nflow = Flow('shared').step('b', lambda: None)\n")
    before = load_folder(tmp_path, timeout=30)
    assert [Path(e.path).name for e in before.errors] == ["b_second.py"]
    known = {r.path: (r.hash, r.flows, r.error) for r in before.files}

    first.write_text("from flowkit import Flow\n\nflow = Flow('renamed').step('a', lambda: None)\n")
    after = load_folder(tmp_path, timeout=30, known=known)
    assert after.errors == []
    assert sorted(after.flows) == ["renamed", "shared"]
    assert after.flows["shared"].step_names == ["b"]


def test_unchanged_files_are_not_imported_again(mixed, monkeypatch):
    known = {r.path: (r.hash, r.flows, r.error) for r in mixed.files}
    monkeypatch.setattr(loader, "import_file", _no_import)
    again = load_folder(MIXED, timeout=30, known=known)
    assert again.flows == mixed.flows
    assert [(e.path, e.lineno, e.message) for e in again.errors] == [
        (e.path, e.lineno, e.message) for e in mixed.errors
    ]
    assert all(r.import_ms == 0 for r in again.files)
    assert [r.hash for r in again.files] == [r.hash for r in mixed.files]


def test_only_changed_files_are_imported_again(tmp_path, monkeypatch):
    (tmp_path / "_helpers.py").write_text("def noop(ctx):\n    return None\n")
    (tmp_path / "stable.py").write_text(
        "from _helpers import noop\nfrom flowkit import Flow\n\nflow = Flow('stable').step('a', noop)\n"
    )
    changing = tmp_path / "changing.py"
    changing.write_text("from flowkit import Flow\n\nflow = Flow('changing').step('v1', lambda: None)\n")
    first = load_folder(tmp_path, timeout=30)
    assert first.errors == []
    assert sorted(first.flows) == ["changing", "stable"]  # _helpers.py is not a dags module
    known = {r.path: (r.hash, r.flows, r.error) for r in first.files}

    changing.write_text("from flowkit import Flow\n\nflow = Flow('changing').step('v2', lambda: None)\n")
    real_import_file = loader.import_file
    imported: list[str] = []

    def recording(path, *args, **kwargs):
        imported.append(Path(path).name)
        return real_import_file(path, *args, **kwargs)

    monkeypatch.setattr(loader, "import_file", recording)
    second = load_folder(tmp_path, timeout=30, known=known)
    assert imported == ["changing.py"]
    assert second.flows["changing"].step_names == ["v2"]
    assert second.flows["stable"] == first.flows["stable"]


def test_unchanged_crlf_file_is_not_imported_again(tmp_path, monkeypatch):
    (tmp_path / "crlf.py").write_bytes(
        b"from flowkit import Flow\r\n\r\nflow = Flow('crlf').step('a', lambda: None)\r\n"
    )
    first = load_folder(tmp_path, timeout=30)
    assert list(first.flows) == ["crlf"]
    known = {r.path: (r.hash, r.flows, r.error) for r in first.files}
    monkeypatch.setattr(loader, "import_file", _no_import)
    assert list(load_folder(tmp_path, timeout=30, known=known).flows) == ["crlf"]


def test_dag_files_skips_private_modules_and_caches(tmp_path):
    (tmp_path / "a.py").write_text("")
    (tmp_path / "_private.py").write_text("")
    (tmp_path / "notes.txt").write_text("")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.py").write_text("")
    (tmp_path / "__pycache__").mkdir()
    (tmp_path / "__pycache__" / "c.py").write_text("")
    assert [p.relative_to(tmp_path).as_posix() for p in dag_files(tmp_path)] == ["a.py", "sub/b.py"]
    assert dag_files(tmp_path / "missing") == []
    assert load_folder(tmp_path / "missing").files == []


@pytest.mark.slow
def test_a_hanging_module_is_stopped_at_the_timeout_and_the_others_load():
    started = time.monotonic()
    report = load_folder(HANG, timeout=2)
    elapsed = time.monotonic() - started
    assert elapsed < 15
    assert list(report.flows) == ["quick"]
    assert len(report.errors) == 1
    err = report.errors[0]
    assert err.path == str(HANG / "hangs.py")
    # the line it was running when stopped (its stack, written on SIGUSR1 before the kill)
    assert err.lineno == _line_in(HANG / "hangs.py", "time.sleep(30)")
    assert str(err).startswith(f"{HANG / 'hangs.py'}:{err.lineno}: import took longer than 2 s")
    assert err.message.startswith("import took longer than 2 s and was stopped;")
    assert "FLOWKIT_DAG_IMPORT_TIMEOUT_SECONDS" in err.message
    assert _by_name(report)["hangs.py"].import_ms >= 2000
