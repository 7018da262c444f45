"""flowkit.secret(), Param(secret=True), and masking secrets wherever flowkit shows or logs them."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import update

import flowkit
from flowkit import Flow, InvalidParamError, Param
from flowkit import secrets as fs
from flowkit.cli import main
from flowkit.errors import ConfigError
from flowkit.spec import FlowSpec, resolve_params
from flowkit.store import tables as t
from flowkit.testing import InlineHarness

TOKEN = "tok-3f9a1c77"  # a secret param value
API_KEY = "key-b41d0e55"  # what flowkit.secret("api_key") returns

FLOW_MODULE = """
import logging

import flowkit
from flowkit import Flow, Param


def connect(ctx):
    ctx.log.warning("connecting with token %s", ctx.params["token"])
    key = flowkit.secret("api_key")
    logging.getLogger("vendor.client").info("auth header: Bearer " + key)
    return {"token_ok": ctx.params["token"] == "tok-3f9a1c77", "key_ok": key == "key-b41d0e55"}


def leak(ctx):
    raise RuntimeError("login failed for " + ctx.params["token"] + " with " + flowkit.secret("api_key"))


flow = (
    Flow("vault", params={"token": Param(str, secret=True), "region": Param(str, default="eu")})
    .step("connect", connect)
    .step("leak", leak, after="connect")
)
"""


@pytest.fixture(autouse=True)
def forget_secrets():  # type: ignore[no-untyped-def]
    """Each test starts with no registered secret (the registry is per process)."""
    yield
    with fs._lock:
        fs._registered.clear()
        fs._pattern = None
        fs._file_seen = None


@pytest.fixture
def dags(tmp_path: Path) -> Path:
    folder = tmp_path / "dags"
    folder.mkdir()
    (folder / "vault.py").write_text(FLOW_MODULE)
    return folder


# -- flowkit.secret() --------------------------------------------------------------------------
def test_secret_reads_the_prefixed_environment_variable(monkeypatch):
    monkeypatch.setenv("FLOWKIT_SECRET_WAREHOUSE_PASSWORD", "pw-from-env")
    monkeypatch.setenv("warehouse_password", "not-this-one")
    assert flowkit.secret("warehouse_password") == "pw-from-env"


def test_secret_reads_the_toml_file(monkeypatch, tmp_path):
    path = tmp_path / "secrets.toml"
    path.write_text('warehouse_password = "pw-from-file"\nother = "x"\n')
    monkeypatch.setenv("FLOWKIT_SECRETS_FILE", str(path))
    assert flowkit.secret("warehouse_password") == "pw-from-file"
    monkeypatch.setenv("FLOWKIT_SECRET_WAREHOUSE_PASSWORD", "pw-from-env")
    assert flowkit.secret("warehouse_password") == "pw-from-env"  # the environment wins


def test_a_missing_secret_names_both_places(monkeypatch, tmp_path):
    with pytest.raises(ConfigError) as info:
        flowkit.secret("api_key")
    assert str(info.value) == (
        'secret "api_key" is not set; set FLOWKIT_SECRET_API_KEY in the environment of the '
        'worker or add api_key = "..." to a TOML file named by FLOWKIT_SECRETS_FILE'
    )
    path = tmp_path / "secrets.toml"
    path.write_text('other = "x"\n')
    monkeypatch.setenv("FLOWKIT_SECRETS_FILE", str(path))
    with pytest.raises(ConfigError, match=rf"add api_key = \"...\" to the file FLOWKIT_SECRETS_FILE names \({path}\)"):
        flowkit.secret("api_key")
    monkeypatch.setenv("FLOWKIT_SECRET_API_KEY", "")  # empty counts as not set
    with pytest.raises(ConfigError, match="is not set"):
        flowkit.secret("api_key")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('api_key = "unterminated\n', r"is not valid TOML \(Illegal character"),
        ("api_key = 42\n", 'secret "api_key" in .* must be a non-empty string; write api_key = "..."'),
    ],
)
def test_a_bad_secrets_file_is_one_line_without_its_content(monkeypatch, tmp_path, content, message):
    path = tmp_path / "secrets.toml"
    path.write_text(content)
    monkeypatch.setenv("FLOWKIT_SECRETS_FILE", str(path))
    with pytest.raises(ConfigError, match=message) as info:
        flowkit.secret("api_key")
    assert "unterminated" not in str(info.value) and "\n" not in str(info.value)


def test_a_missing_secrets_file_and_a_bad_name_are_config_errors(monkeypatch, tmp_path):
    monkeypatch.setenv("FLOWKIT_SECRETS_FILE", str(tmp_path / "nope.toml"))
    with pytest.raises(ConfigError, match="FLOWKIT_SECRETS_FILE=.*nope.toml' does not exist"):
        flowkit.secret("api_key")
    with pytest.raises(ConfigError, match="secret name 'api-key' is not valid"):
        flowkit.secret("api-key")


# -- masking helpers ---------------------------------------------------------------------------
def test_mask_text_masks_registered_and_given_values_longest_first():
    fs.register_secret("abcd1234")
    fs.register_secret("abcd")
    assert fs.mask_text("x abcd1234 y abcd z") == "x *** y *** z"
    assert fs.mask_text("given zzzz9", ["zzzz9"]) == "given ***"
    assert fs.mask_text(None) is None


def test_short_values_are_not_searched_for_in_text():
    fs.register_secret("ab1")
    assert fs.mask_text("tab1e") == "tab1e"


def test_mask_params_and_secret_values():
    spec = Flow("f", params={"token": Param(str, secret=True), "n": 1}).step("a", lambda: None).spec()
    assert fs.mask_params(spec, {"token": TOKEN, "n": 3}) == {"token": "***", "n": 3}
    assert fs.mask_params(spec, {"token": None, "n": 3}) == {"token": None, "n": 3}
    assert fs.secret_values(spec, {"token": TOKEN, "n": 3}) == [TOKEN]


# -- the spec ------------------------------------------------------------------------------------
def test_secret_survives_the_json_round_trip_and_old_specs_load():
    spec = Flow("f", params={"token": Param(str, secret=True), "n": 1}).step("a", lambda: None).spec()
    again = FlowSpec.from_json(spec.to_json())
    assert [(p.name, p.secret) for p in again.params] == [("token", True), ("n", False)]
    old = json.loads(spec.to_json())
    for p in old["params"]:
        del p["secret"]  # written before the key existed
    assert [p.secret for p in FlowSpec.from_dict(old).params] == [False, False]


def test_a_bad_secret_param_value_is_not_echoed():
    spec = Flow("f", params={"pin": Param(int, secret=True)}).step("a", lambda: None).spec()
    with pytest.raises(InvalidParamError) as info:
        resolve_params(spec, {"pin": "12x45"})
    assert str(info.value) == 'flow "f" param "pin": *** is not an int; pass an int, e.g. -p pin=42'


# -- logging -------------------------------------------------------------------------------------
def test_log_records_mask_what_secret_returned(monkeypatch, caplog):
    monkeypatch.setenv("FLOWKIT_SECRET_API_KEY", API_KEY)
    value = flowkit.secret("api_key")
    log = logging.getLogger("some.library")
    with caplog.at_level(logging.INFO):
        log.info("calling with %s", value)
        log.info(f"f-string {value}")
        try:
            raise ValueError(f"rejected {value}")
        except ValueError:
            log.exception("request failed")
    text = caplog.text
    assert API_KEY not in text
    assert "calling with ***" in text and "f-string ***" in text and "ValueError: rejected ***" in text


def test_the_filter_masks_records_on_a_handler_too():
    fs.register_secret(API_KEY)
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "key=%s", (API_KEY,), None)
    assert fs.SecretMaskFilter().filter(record) is True
    assert record.getMessage() == "key=***"


# -- end to end: worker, store, CLI, renders -------------------------------------------------------
class RunLogs(str):
    """A run id that also carries the log text written while the run ran."""

    logs: str


@pytest.fixture
def vault_run(sqlite_store, dags, monkeypatch, caplog):  # type: ignore[no-untyped-def]
    """A finished run of the vault flow: a secret param, a secret() value, a failing step."""
    monkeypatch.setenv("FLOWKIT_SECRET_API_KEY", API_KEY)
    h = InlineHarness(sqlite_store, str(dags))
    with caplog.at_level(logging.DEBUG):
        run_id = RunLogs(h.trigger("vault", {"token": TOKEN}))
        assert h.run_until_done(run_id) == "failed"
    run_id.logs = caplog.text
    return run_id


def test_the_step_gets_the_real_values(vault_run, sqlite_store):
    assert sqlite_store.results(vault_run)["connect"] == {"token_ok": True, "key_ok": True}


def test_the_worker_masks_its_logs_and_the_errors_it_stores(vault_run, sqlite_store):
    assert TOKEN not in vault_run.logs and API_KEY not in vault_run.logs
    assert "connecting with token ***" in vault_run.logs
    assert "auth header: Bearer ***" in vault_run.logs
    (attempt,) = [a for a in sqlite_store.attempts(vault_run) if a["step"] == "leak"]
    assert attempt["error"] == "RuntimeError: login failed for *** with ***"
    assert TOKEN not in attempt["traceback"] and API_KEY not in attempt["traceback"]
    reasons = " ".join(e["reason"] for e in sqlite_store.events(vault_run))
    assert "login failed for *** with ***" in reasons and TOKEN not in reasons


@pytest.fixture
def leaked(vault_run, sqlite_store):  # type: ignore[no-untyped-def]
    """The same run as an older worker would have stored it: the secret param in clear text."""
    with sqlite_store.engine.begin() as conn:
        conn.execute(
            update(t.attempts)
            .where(t.attempts.c.run_id == vault_run)
            .values(error=f"RuntimeError: login failed for {TOKEN}")
        )
        conn.execute(
            update(t.events)
            .where(t.events.c.run_id == vault_run, t.events.c.action == "attempt_finished")
            .values(reason=f"RuntimeError: login failed for {TOKEN}")
        )
    return vault_run


def _cli(sqlite_store, dags, *args):  # type: ignore[no-untyped-def]
    result = CliRunner().invoke(
        main, ["--database-url", sqlite_store.url, "--broker-url", "memory://", "--dags-folder", str(dags), *args]
    )
    assert result.exit_code in (0, 1), result.output
    return result


def test_runs_show_and_list_mask_secret_params(leaked, sqlite_store, dags):
    text = _cli(sqlite_store, dags, "runs", "show", leaked, "--events").stdout
    as_json = _cli(sqlite_store, dags, "runs", "show", leaked, "--json").stdout
    listed = _cli(sqlite_store, dags, "runs", "list", "--json").stdout
    for output in (text, as_json, listed):
        assert TOKEN not in output and API_KEY not in output
    assert 'params {"region": "eu", "token": "***"}' in text
    assert "login failed for ***" in text  # the error and the audit trail
    data = json.loads(as_json)
    assert data["params"] == {"region": "eu", "token": "***"}
    leak = next(s for s in data["steps"] if s["step"] == "leak")
    assert leak["error"] == "RuntimeError: login failed for ***"
    assert leak["attempt_history"][0]["error"] == "RuntimeError: login failed for ***"
    assert any(e["reason"] == "RuntimeError: login failed for ***" for e in data["events"])
    assert json.loads(listed)[0]["params"] == {"region": "eu", "token": "***"}


def test_renders_and_the_report_mask_secret_params(leaked, sqlite_store, dags, tmp_path):
    report = tmp_path / "report.html"
    _cli(sqlite_store, dags, "report", leaked, "-o", str(report))
    html = report.read_text()
    assert TOKEN not in html
    assert "&quot;token&quot;: &quot;***&quot;" in html
    assert "login failed for ***" in html
    outputs = [
        _cli(sqlite_store, dags, "render", "vault", "--run", leaked, "--format", "dot").stdout,
        _cli(sqlite_store, dags, "timeline", leaked).stdout,
        _cli(sqlite_store, dags, "lineage", leaked).stdout,
    ]
    for output in outputs:
        assert TOKEN not in output


def test_a_flow_version_the_store_cannot_find_shows_every_param_masked(leaked, sqlite_store, dags, monkeypatch):
    from flowkit.errors import NotFoundError
    from flowkit.store.sql import SqlStore

    def gone(self, name, version=None):  # type: ignore[no-untyped-def]
        raise NotFoundError(f'flow "{name}" has no version {version}')

    monkeypatch.setattr(SqlStore, "flow_spec", gone)
    listed = json.loads(_cli(sqlite_store, dags, "runs", "list", "--json").stdout)
    assert listed[0]["params"] == {"region": "***", "token": "***"}


# -- results and outputs: masked as the worker writes them ------------------------------------------
RETURNS_MODULE = """
import flowkit
from flowkit import Flow, Param


def give(ctx):
    key = flowkit.secret("api_key")
    return {"key": key, "header": "Bearer " + key, key: [ctx.params["token"]], "n": 1234567890}


flow = (
    Flow("returns", params={"token": Param(str, secret=True)})
    .step("give", give)
    .shell("echo", 'echo "token=$FLOWKIT_SECRET_SHELL_TOKEN"; echo done', after="give")
)
"""
SHELL_TOKEN = "sh-9e2c4b1a"


@pytest.fixture
def returns_run(sqlite_store, tmp_path, monkeypatch):  # type: ignore[no-untyped-def]
    folder = tmp_path / "rdags"
    folder.mkdir()
    (folder / "returns.py").write_text(RETURNS_MODULE)
    monkeypatch.setenv("FLOWKIT_SECRET_API_KEY", API_KEY)
    # never read by a secret() call in this process: the shell step echoes it
    monkeypatch.setenv("FLOWKIT_SECRET_SHELL_TOKEN", SHELL_TOKEN)
    h = InlineHarness(sqlite_store, str(folder))
    run_id = h.trigger("returns", {"token": TOKEN})
    assert h.run_until_done(run_id) == "success"
    return run_id, folder


def test_results_and_shell_output_are_stored_masked(returns_run, sqlite_store):
    run_id, _ = returns_run
    results = sqlite_store.results(run_id)
    assert results["give"] == {"key": "***", "header": "Bearer ***", "***": ["***"], "n": 1234567890}
    assert results["echo"]["last_lines"] == ["token=***", "done"]
    (attempt,) = sqlite_store.attempts(run_id, "echo")
    assert SHELL_TOKEN not in attempt["output"] and "token=***" in attempt["output"]


def test_runs_show_json_and_lineage_never_show_a_returned_secret(returns_run, sqlite_store):
    run_id, folder = returns_run
    outputs = [
        _cli(sqlite_store, folder, "runs", "show", run_id, "--step", "give").stdout,
        _cli(sqlite_store, folder, "runs", "show", run_id, "--step", "echo").stdout,
        _cli(sqlite_store, folder, "runs", "show", run_id, "--json").stdout,
        _cli(sqlite_store, folder, "lineage", run_id).stdout,
    ]
    for output in outputs:
        assert API_KEY not in output and TOKEN not in output and SHELL_TOKEN not in output
    assert "Bearer ***" in outputs[0] and "token=***" in outputs[1]


def test_one_function_masks_text_and_data_and_reads_the_configured_secrets(monkeypatch, tmp_path):
    path = tmp_path / "s.toml"
    path.write_text('db = "file-secret-1"\n')
    monkeypatch.setenv("FLOWKIT_SECRETS_FILE", str(path))
    monkeypatch.setenv("FLOWKIT_SECRET_X", "env-secret-2")
    assert fs.mask_stored("a file-secret-1 b env-secret-2") == "a *** b ***"
    assert fs.mask_stored({"env-secret-2": ("file-secret-1", 5)}) == {"***": ["***", 5]}
    path.write_text('db = "file-secret-33"\n')  # an edited file is read again
    assert fs.mask_stored("file-secret-33") == "***"
    assert fs.mask_stored(None) is None


CALLBACK_MODULE = """
import os

from flowkit import Flow


def boom(ctx):
    raise RuntimeError("step failed")


def page(ctx):
    raise RuntimeError("pager refused key " + os.environ["FLOWKIT_SECRET_PAGER_KEY"])


flow = Flow("paged", on_failure=page).step("boom", boom)
"""


def test_a_failed_callback_is_stored_masked_in_a_process_that_never_read_the_secret(
    sqlite_store, tmp_path, monkeypatch
):
    from flowkit.execution.attempt import run_attempt
    from flowkit.execution.callbacks import run_callback

    folder = tmp_path / "cdags"
    folder.mkdir()
    (folder / "paged.py").write_text(CALLBACK_MODULE)
    monkeypatch.setenv("FLOWKIT_SECRET_PAGER_KEY", "pg-71c0d2e9")  # never read through secret()
    h = InlineHarness(sqlite_store, str(folder))
    run_id = h.trigger("paged")
    while h.dispatcher.sent:  # the attempts only; the callback waits in the dispatcher
        item = h.dispatcher.sent.pop(0)
        run_attempt(h.runtime, item.run_id, item.step.name, item.attempt)
        h.scheduler.handle(h.events.wait(0))
    assert sqlite_store.get_run(run_id)["state"] == "failed"
    with fs._lock:  # the callback runs in another pool process: it knows no secret yet
        fs._registered.clear()
        fs._pattern = None
        fs._file_seen = None
    (due,) = h.dispatcher.callbacks
    assert run_callback(h.runtime, due.id) == "failed"
    (failed,) = [e for e in sqlite_store.events(run_id) if e["action"] == "callback_failed"]
    assert "pager refused key ***" in failed["reason"] and "pg-71c0d2e9" not in failed["reason"]
