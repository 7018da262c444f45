"""Log lines carry flow, run_id, step and attempt as fields (from the attempt's context or
the line's subject), and --log-format json writes one object per line with them."""

from __future__ import annotations

import io
import json
import logging
import threading

import pytest
from click.testing import CliRunner

from flowkit.cli import main
from flowkit.config import Settings
from flowkit.errors import ConfigError
from flowkit.observe import fields


@pytest.fixture
def json_lines():  # type: ignore[no-untyped-def]
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger = logging.getLogger("flowkit.test_log_format")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    holder = logging.Logger("holder")
    holder.addHandler(handler)
    fields.install("json", holder)

    def read() -> list[dict]:
        return [json.loads(line) for line in stream.getvalue().splitlines()]

    yield logger, read
    logger.removeHandler(handler)


def test_a_json_line_has_every_field_null_where_it_does_not_apply(json_lines):
    logger, read = json_lines
    logger.info("scheduler %s: started", "host:1")
    (line,) = read()
    assert set(line) == {"ts", "level", "logger", "message", "flow", "run_id", "step", "attempt"}
    assert line["level"] == "INFO" and line["logger"] == "flowkit.test_log_format"
    assert line["message"] == "scheduler host:1: started" and line["ts"].endswith("+00:00")
    assert [line[k] for k in fields.FIELDS] == [None, None, None, None]


def test_fields_come_from_the_line_subject(json_lines):
    logger, read = json_lines
    logger.warning("run %s step %s: attempt %s failed (%s)", "r1", "load", 2, "boom")
    logger.info("run %s: ended", "r2")
    logger.info("flow %s: scheduled run %s", "etl", "r3")
    logger.info("run %s step %s: cancelled", "r4", "x")
    got = [tuple(line[k] for k in fields.FIELDS) for line in read()]
    assert got == [
        (None, "r1", "load", 2),
        (None, "r2", None, None),
        ("etl", None, None, None),
        (None, "r4", "x", None),
    ]


def test_an_attempts_context_names_it_on_every_line_in_its_own_thread_only(json_lines):
    logger, read = json_lines
    inside = threading.Event()
    done = threading.Event()

    def other_thread() -> None:
        inside.wait()
        logger.info("unrelated line")
        done.set()

    t = threading.Thread(target=other_thread)
    t.start()
    with fields.attempt_fields("r9", "train", 3):
        fields.note_flow("ml")
        logger.info("a line without a subject")
        inside.set()
        done.wait(5)
    t.join()
    logger.info("after the attempt")
    by_message = {line["message"]: tuple(line[k] for k in fields.FIELDS) for line in read()}
    assert by_message == {
        "a line without a subject": ("ml", "r9", "train", 3),
        "unrelated line": (None, None, None, None),
        "after the attempt": (None, None, None, None),
    }


def test_exceptions_are_kept_in_the_line(json_lines):
    logger, read = json_lines
    try:
        raise ValueError("bad value")
    except ValueError:
        logger.exception("run %s: sweep failed", "r5")
    (line,) = read()
    assert line["run_id"] == "r5" and "ValueError: bad value" in line["exc"]


def test_text_format_stays_unchanged():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    holder = logging.Logger("holder")
    holder.addHandler(handler)
    fields.install("text", holder)
    record = logging.LogRecord("flowkit.x", logging.INFO, __file__, 1, "run %s: ended", ("r1",), None)
    handler.handle(record)
    assert stream.getvalue() == "INFO flowkit.x: run r1: ended\n"
    assert record.run_id == "r1"  # type: ignore[attr-defined]  # the field is there for a formatter that asks


def test_a_wrong_log_format_is_one_line(tmp_path):
    with pytest.raises(ConfigError, match="FLOWKIT_LOG_FORMAT='xml' is not a log format; use text or json"):
        Settings.from_env({"FLOWKIT_LOG_FORMAT": "xml", "FLOWKIT_DATABASE_URL": f"sqlite:///{tmp_path}/x.db"})
    result = CliRunner().invoke(main, ["worker", "--log-format", "xml"])
    assert result.exit_code == 2 and "Invalid value for '--log-format'" in result.output
