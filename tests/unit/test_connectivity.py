"""Telling an impossible URL from a server that is down, one-line errors, and startup retries."""

from __future__ import annotations

import logging
import socket
import ssl
import threading

import pytest
from kombu.exceptions import OperationalError as KombuOperationalError

from flowkit.config import Settings
from flowkit.connectivity import (
    broker_error,
    classify_url_problem,
    database_error,
    probe_broker,
    probe_database,
    retry_with_backoff,
    service_error,
    wait_for_services,
)
from flowkit.errors import ConfigError, DispatchError, StoreUnavailable

# Port 1 on the loopback interface: nothing listens there, so connecting is refused at once.
DOWN_PG = "postgresql://flowkit:s3cr3t@127.0.0.1:1/flowkit"
DOWN_REDIS = "redis://:s3cr3t@127.0.0.1:1/0"


def _driver_error(message: str) -> Exception:
    """What SQLAlchemy raises when the driver cannot connect: the driver's error as ``orig``."""
    from sqlalchemy.exc import OperationalError

    class FakeDriverError(Exception):
        pass

    FakeDriverError.__module__ = "psycopg"
    return OperationalError(None, None, FakeDriverError(message))


def _raised_from(outer: Exception, cause: BaseException) -> Exception:
    try:
        try:
            raise cause
        except BaseException as inner:
            raise outer from inner
    except Exception as exc:
        return exc


# -- classify_url_problem ---------------------------------------------------------------------
@pytest.mark.parametrize(
    "exc",
    [
        ConnectionRefusedError(111, "Connection refused"),
        TimeoutError("timed out"),
        ConnectionResetError(104, "Connection reset by peer"),
        socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution"),
        _driver_error(
            'connection failed: connection to server at "127.0.0.1", port 1 failed: Connection refused\n'
            "\tIs the server running on that host and accepting TCP/IP connections?"
        ),
        _driver_error("connection failed: FATAL:  the database system is starting up"),
        _driver_error("failed to resolve host 'db': [Errno -3] Temporary failure in name resolution"),
        RuntimeError("something nobody anticipated"),  # unknown: worth another try
    ],
    ids=["refused", "timeout", "reset", "dns-hiccup", "pg-refused", "pg-starting", "pg-dns-hiccup", "unknown"],
)
def test_a_server_that_may_come_back_is_transient(exc):
    problem = classify_url_problem(exc)
    assert problem.permanent is False
    assert "\n" not in problem.reason


@pytest.mark.parametrize(
    "exc",
    [
        ConfigError("FLOWKIT_BROKER_URL='nonsense://x' uses scheme 'nonsense'"),
        socket.gaierror(socket.EAI_NONAME, "Name or service not known"),
        ModuleNotFoundError("No module named 'botocore'"),
        KeyError("No such transport: nonsense"),
        _driver_error("failed to resolve host 'nosuchhost': [Errno -2] Name or service not known"),
        _driver_error('connection failed: FATAL:  password authentication failed for user "flowkit"'),
        _driver_error('connection failed: FATAL:  database "flowkti" does not exist'),
        _driver_error('connection failed: FATAL:  role "flowkti" does not exist'),
        _driver_error("unable to open database file"),
        PermissionError(13, "Permission denied", "/var/lib/flowkit"),
    ],
    ids=[
        "config",
        "unknown-host",
        "missing-package",
        "no-transport",
        "pg-unknown-host",
        "pg-password",
        "pg-no-database",
        "pg-no-role",
        "sqlite-file",
        "permission",
    ],
)
def test_a_mistake_that_can_never_work_is_permanent(exc):
    assert classify_url_problem(exc).permanent is True


def test_broker_errors_are_classified_through_kombus_wrapper():
    from amqp.exceptions import AccessRefused
    from kombu.exceptions import OperationalError

    refused = _raised_from(
        OperationalError("Error 111 connecting to 127.0.0.1:1. Connection refused."),
        ConnectionRefusedError(111, "Connection refused"),
    )
    assert classify_url_problem(refused).permanent is False
    unknown_host = _raised_from(
        OperationalError("Error -2 connecting to cache:6379. Name or service not known."),
        socket.gaierror(socket.EAI_NONAME, "Name or service not known"),
    )
    assert classify_url_problem(unknown_host).permanent is True
    assert classify_url_problem(AccessRefused("ACCESS_REFUSED - Login was refused")).permanent is True


def test_flowkit_errors_are_classified_by_their_cause():
    down = _raised_from(DispatchError("cannot reach the broker"), ConnectionRefusedError(111, "Connection refused"))
    assert classify_url_problem(down).permanent is False
    assert classify_url_problem(down).reason == "[Errno 111] Connection refused"


def test_the_reason_is_the_first_line_of_the_drivers_message_without_passwords():
    exc = _driver_error("could not connect to postgresql://flowkit:s3cr3t@db/flowkit.\nSecond line")
    assert classify_url_problem(exc).reason == "could not connect to postgresql://flowkit:***@db/flowkit"


# -- one-line errors --------------------------------------------------------------------------
def test_database_error_wording_depends_on_the_problem():
    down = database_error(_driver_error("connection failed: Connection refused"), DOWN_PG)
    assert isinstance(down, StoreUnavailable)
    assert str(down) == (
        "cannot reach the database at postgresql://flowkit:***@127.0.0.1:1/flowkit: connection "
        "failed: Connection refused; check FLOWKIT_DATABASE_URL and that the server runs"
    )
    wrong = database_error(_driver_error('FATAL:  password authentication failed for user "flowkit"'), DOWN_PG)
    assert isinstance(wrong, ConfigError)
    assert str(wrong).endswith('password authentication failed for user "flowkit"; check FLOWKIT_DATABASE_URL')


def test_broker_error_wording_depends_on_the_problem():
    down = broker_error(ConnectionRefusedError(111, "Connection refused"), DOWN_REDIS)
    assert isinstance(down, DispatchError)
    assert str(down) == (
        "cannot reach the broker at redis://:***@127.0.0.1:1/0: [Errno 111] Connection refused; "
        "check FLOWKIT_BROKER_URL and that the server runs"
    )
    assert isinstance(broker_error(ModuleNotFoundError("No module named 'botocore'"), "sqs://"), ConfigError)


def test_service_error_recognises_database_and_broker_failures_and_nothing_else():
    from kombu.exceptions import OperationalError

    urls = {"database_url": DOWN_PG, "broker_url": DOWN_REDIS}
    assert isinstance(service_error(_driver_error("Connection refused"), **urls), StoreUnavailable)
    broker = _raised_from(OperationalError("Connection refused"), ConnectionRefusedError(111, "Connection refused"))
    assert isinstance(service_error(broker, **urls), DispatchError)
    assert service_error(ValueError("a bug"), **urls) is None
    assert service_error(ConnectionRefusedError(111, "refused"), **urls) is None  # whose? do not guess


# -- probes (loopback only: refused at once) -------------------------------------------------
def test_probe_database_on_a_closed_port_is_transient_and_one_line():
    with pytest.raises(StoreUnavailable) as info:
        probe_database(DOWN_PG, timeout_seconds=2)
    assert str(info.value).startswith("cannot reach the database at postgresql://flowkit:***@127.0.0.1:1/flowkit: ")
    assert "Connection refused" in str(info.value) and "s3cr3t" not in str(info.value)


def test_probe_database_skips_sqlite(tmp_path):
    probe_database(f"sqlite:///{tmp_path / 'never-created.db'}")
    assert not (tmp_path / "never-created.db").exists()


def test_probe_broker_on_a_closed_port_is_transient_and_one_line():
    with pytest.raises(DispatchError) as info:
        probe_broker(DOWN_REDIS, timeout_seconds=2)
    assert str(info.value).startswith("cannot reach the broker at redis://:***@127.0.0.1:1/0: ")
    assert "s3cr3t" not in str(info.value)


def test_probe_broker_skips_the_memory_transport():
    probe_broker("memory://localhost/")


# -- retry_with_backoff -----------------------------------------------------------------------
class FakeTime:
    """A clock that advances only when the code under test waits."""

    def __init__(self) -> None:
        self.now = 0.0
        self.waits: list[float] = []

    def clock(self) -> float:
        return self.now

    def wait(self, seconds: float) -> bool:
        self.waits.append(seconds)
        self.now += seconds
        return False


def _failing(times: int, exc: Exception, result: str = "up"):  # type: ignore[no-untyped-def]
    calls = {"n": 0}

    def fn() -> str:
        calls["n"] += 1
        if calls["n"] <= times:
            raise exc
        return result

    fn.calls = calls  # type: ignore[attr-defined]
    return fn


def test_a_down_server_is_retried_with_growing_waits_and_one_line_per_retry(caplog):
    # Given a server that refuses twice, then answers
    t = FakeTime()
    fn = _failing(2, StoreUnavailable("cannot reach the database at x: refused; check FLOWKIT_DATABASE_URL"))
    # When it is retried
    with caplog.at_level(logging.WARNING, logger="flowkit.connectivity"):
        result = retry_with_backoff(fn, what="scheduler", clock=t.clock, wait=t.wait)
    # Then the result comes back after waits of 1 and 2 s, with one warning line per retry
    assert result == "up"
    assert t.waits == [1.0, 2.0]
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "scheduler: cannot reach the database at x: refused; check FLOWKIT_DATABASE_URL; retrying in 1 s (attempt 1)",
        "scheduler: cannot reach the database at x: refused; check FLOWKIT_DATABASE_URL; retrying in 2 s (attempt 2)",
    ]
    assert all(r.exc_info is None for r in caplog.records)  # no traceback


def test_waits_grow_up_to_the_cap():
    t = FakeTime()
    fn = _failing(7, ConnectionRefusedError(111, "Connection refused"))
    retry_with_backoff(fn, what="worker", clock=t.clock, wait=t.wait, max_delay_seconds=10)
    assert t.waits == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0]


def test_an_impossible_url_is_raised_at_once(caplog):
    t = FakeTime()
    fn = _failing(5, ConfigError("cannot connect to the broker at x: Name or service not known"))
    with pytest.raises(ConfigError):
        retry_with_backoff(fn, what="scheduler", clock=t.clock, wait=t.wait)
    assert fn.calls["n"] == 1 and t.waits == [] and not caplog.records


def test_it_gives_up_after_the_given_time_with_the_last_error():
    t = FakeTime()
    fn = _failing(100, DispatchError("cannot reach the broker"))
    with pytest.raises(DispatchError):
        retry_with_backoff(fn, what="flower", clock=t.clock, wait=t.wait, give_up_after_seconds=10)
    assert t.waits == [1.0, 2.0, 4.0]  # the next wait (8 s) would end after 10 s
    with pytest.raises(DispatchError):
        retry_with_backoff(_failing(1, DispatchError("down")), what="x", wait=t.wait, give_up_after_seconds=0)


def test_a_stop_request_ends_the_wait():
    stop = threading.Event()

    def wait(seconds: float) -> bool:
        stop.set()  # SIGTERM arrives while waiting
        return True

    fn = _failing(100, DispatchError("cannot reach the broker"))
    with pytest.raises(DispatchError):
        retry_with_backoff(fn, what="scheduler", stop=stop, wait=wait)
    assert fn.calls["n"] == 1


def test_wait_for_services_gives_up_on_a_closed_port():
    settings = Settings.from_env({"FLOWKIT_DATABASE_URL": DOWN_PG, "FLOWKIT_BROKER_URL": "memory://"})
    with pytest.raises(StoreUnavailable):
        wait_for_services(settings, what="scheduler", give_up_after_seconds=0)
    wait_for_services(settings, what="scheduler", database=False)  # memory broker: nothing to wait for


# -- refusals that never fix themselves ---------------------------------------------------------
@pytest.mark.parametrize(
    "exc",
    [
        _raised_from(KombuOperationalError("DB index is out of range"), RuntimeError("DB index is out of range")),
        _raised_from(
            KombuOperationalError("Timeout connecting to server"),
            TimeoutError("_ssl.c:989: The handshake operation timed out"),
        ),
        ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number (_ssl.c:1006)"),
        ssl.SSLError(1, "[SSL: RECORD_LAYER_FAILURE] record layer failure (_ssl.c:1000)"),
    ],
    ids=["redis-db-index", "tls-handshake-timeout", "tls-wrong-version", "tls-record-layer"],
)
def test_a_bad_db_index_and_tls_to_a_plain_server_are_permanent(exc):
    problem = classify_url_problem(exc)
    assert problem.permanent is True
    if "DB index" not in str(exc):
        assert "the server does not speak TLS there" in problem.reason


def test_a_timeout_that_is_not_a_tls_handshake_stays_transient():
    assert classify_url_problem(TimeoutError("timed out")).permanent is False
    assert classify_url_problem(OSError("_ssl.c:2000: The read operation timed out")).permanent is False


def test_redis_urls_get_a_socket_timeout_that_covers_the_tls_handshake():
    from flowkit.connectivity import bounded_transport_options

    assert bounded_transport_options("rediss://h:6380/0", 2) == {"socket_timeout": 2, "socket_connect_timeout": 2}
    assert bounded_transport_options("redis://h/0", 3)["socket_timeout"] == 3
    assert bounded_transport_options("amqps://h//", 2) == {}


NOT_A_DATABASE = "this file is not a SQLite database, it only shares the name\n" * 20


def test_a_file_that_is_not_sqlite_is_one_permanent_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "g.db").write_text(NOT_A_DATABASE)
    expected = (
        "sqlite:///g.db is not a SQLite database (file is not a database); point "
        "FLOWKIT_DATABASE_URL at a flowkit store or remove the file"
    )
    with pytest.raises(ConfigError) as info:
        probe_database("sqlite:///g.db")
    assert str(info.value) == expected
    assert classify_url_problem(info.value).permanent is True
    assert (tmp_path / "g.db").read_text() == NOT_A_DATABASE  # never touched


@pytest.mark.parametrize(
    "command", [["status", "--no-broker"], ["db", "upgrade"], ["trigger", "orders"], ["runs", "list"]]
)
def test_commands_on_a_file_that_is_not_sqlite_print_one_line(tmp_path, monkeypatch, command):
    from click.testing import CliRunner

    from flowkit.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "g.db").write_text(NOT_A_DATABASE)
    result = CliRunner().invoke(main, ["--database-url", "sqlite:///g.db", "--broker-url", "memory://", *command])
    assert result.exit_code == 1
    assert result.output.splitlines() == [
        "error: sqlite:///g.db is not a SQLite database (file is not a database); point "
        "FLOWKIT_DATABASE_URL at a flowkit store or remove the file"
    ]
    assert (tmp_path / "g.db").read_text() == NOT_A_DATABASE
