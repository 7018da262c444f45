"""Settings.from_env precedence and checks, and redact()."""

from __future__ import annotations

import os

import pytest

from flowkit.config import Settings, redact
from flowkit.errors import ConfigError


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for key in list(os.environ):
        if key.startswith("FLOWKIT_"):
            monkeypatch.delenv(key)


def test_defaults_without_env():
    s = Settings.from_env()
    assert s.broker_url == "redis://127.0.0.1:6379/0"
    assert s.heartbeat_seconds == 10.0
    assert s.database_url == "sqlite:///.flowkit/flowkit.db"
    assert s.lost_after_seconds == 30.0


def test_flowkit_env_vars_are_read_and_converted(monkeypatch):
    monkeypatch.setenv("FLOWKIT_BROKER_URL", "redis://cache:6379/2")
    monkeypatch.setenv("FLOWKIT_DATABASE_URL", "postgresql+psycopg://u:p@db/flowkit")
    monkeypatch.setenv("FLOWKIT_HEARTBEAT_SECONDS", "5")
    monkeypatch.setenv("FLOWKIT_MAX_DELIVERIES", "4")
    monkeypatch.setenv("FLOWKIT_DAGS_FOLDER", "")  # empty means unset
    monkeypatch.setenv("BROKER_URL", "redis://not-ours:1/0")  # only FLOWKIT_* counts
    s = Settings.from_env()
    assert s.broker_url == "redis://cache:6379/2"
    assert s.database_url == "postgresql+psycopg://u:p@db/flowkit"
    assert s.heartbeat_seconds == 5.0 and isinstance(s.heartbeat_seconds, float)
    assert s.max_deliveries == 4 and isinstance(s.max_deliveries, int)
    assert s.dags_folder == "dags"


def test_explicit_overrides_win_over_env(monkeypatch):
    monkeypatch.setenv("FLOWKIT_BROKER_URL", "redis://from-env:6379/0")
    monkeypatch.setenv("FLOWKIT_WORKER_CONCURRENCY", "8")
    s = Settings.from_env(broker_url="redis://from-flag:6379/0", worker_concurrency=None)
    assert s.broker_url == "redis://from-flag:6379/0"
    assert s.worker_concurrency == 8  # an override of None (flag not given) keeps the env value


def test_an_explicit_env_mapping_replaces_os_environ(monkeypatch):
    monkeypatch.setenv("FLOWKIT_BROKER_URL", "redis://from-os:6379/0")
    s = Settings.from_env({"FLOWKIT_DEFAULT_QUEUE": "q1"})
    assert s.default_queue == "q1"
    assert s.broker_url == "redis://127.0.0.1:6379/0"


@pytest.mark.parametrize(
    ("var", "raw", "kind"),
    [("FLOWKIT_HEARTBEAT_SECONDS", "ten", "float"), ("FLOWKIT_MAX_DELIVERIES", "3.5", "int")],
)
def test_non_number_names_the_variable(monkeypatch, var, raw, kind):
    monkeypatch.setenv(var, raw)
    with pytest.raises(ConfigError, match=rf"{var}='{raw}' is not a number; set it to a {kind}"):
        Settings.from_env()


@pytest.mark.parametrize("visibility", ["20", "30"])
def test_visibility_timeout_must_exceed_three_heartbeats(monkeypatch, visibility):
    monkeypatch.setenv("FLOWKIT_HEARTBEAT_SECONDS", "10")
    monkeypatch.setenv("FLOWKIT_VISIBILITY_TIMEOUT_SECONDS", visibility)
    with pytest.raises(
        ConfigError,
        match=rf"FLOWKIT_VISIBILITY_TIMEOUT_SECONDS={visibility} must be more than three heartbeats \(30 s\)",
    ):
        Settings.from_env()


def test_visibility_timeout_above_three_heartbeats_is_accepted(monkeypatch):
    monkeypatch.setenv("FLOWKIT_HEARTBEAT_SECONDS", "10")
    monkeypatch.setenv("FLOWKIT_VISIBILITY_TIMEOUT_SECONDS", "31")
    assert Settings.from_env().visibility_timeout_seconds == 31.0


def test_visibility_check_also_applies_to_overrides():
    with pytest.raises(ConfigError, match="FLOWKIT_VISIBILITY_TIMEOUT_SECONDS"):
        Settings.from_env({}, heartbeat_seconds=1500.0)  # 3 x 1500 > the 3600 s default


def test_max_deliveries_must_be_positive():
    with pytest.raises(ConfigError, match="FLOWKIT_MAX_DELIVERIES must be at least 1"):
        Settings.from_env({"FLOWKIT_MAX_DELIVERIES": "0"})


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql+psycopg://flowkit:s3cr3t@db:5432/flowkit", "postgresql+psycopg://flowkit:***@db:5432/flowkit"),
        ("postgresql://user:p:a/ss@localhost/db", "postgresql://user:***@localhost/db"),
        ("redis://:s3cr3t@redis:6379/0", "redis://:***@redis:6379/0"),
        ("rediss://default:s3cr3t@redis.example.com:6380/1", "rediss://default:***@redis.example.com:6380/1"),
        ("amqp://guest:guest@rabbit:5672//", "amqp://guest:***@rabbit:5672//"),
    ],
)
def test_redact_hides_passwords(url, expected):
    assert redact(url) == expected
    assert "s3cr3t" not in redact(url)


@pytest.mark.parametrize(
    "url",
    ["memory://", "redis://127.0.0.1:6379/0", "sqlite:///.flowkit/flowkit.db", "postgresql://user@db/flowkit"],
)
def test_redact_leaves_urls_without_password_alone(url):
    assert redact(url) == url


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://:p@ss@redis:6379/0", "redis://:***@redis:6379/0"),  # an unescaped "@" in the password
        ("user:s3cr3t@db/flowkit", "user:***@db/flowkit"),  # a malformed URL without a scheme
        ("redis://:s3cr3t@h1:6379/0;redis://:s3cr3t@h2:6379/0", "redis://:***@h1:6379/0;redis://:***@h2:6379/0"),
    ],
)
def test_redact_hides_passwords_in_awkward_urls(url, expected):
    assert redact(url) == expected


# -- URL checks when Settings is built ------------------------------------------------------
@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("nonsense", "is not a URL (it has no scheme://); use e.g. postgresql://"),
        ("u:s3cr3t@db/flowkit", "is not a URL (it has no scheme://)"),
        ("postgresql://u:s3cr3t@db:notaport/flowkit", "has a port that is not a number"),
        ("postgresql://u:s3cr3t@db:99999/flowkit", "has port 99999, outside 1-65535"),
        (
            "mysql://u:s3cr3t@db/flowkit",
            "uses mysql, which flowkit does not support (it runs on PostgreSQL and SQLite)",
        ),
        ("postgress://u:s3cr3t@db/flowkit", "did you mean postgresql://?"),
        (
            "postgresql+psycopg2://u:s3cr3t@db/flowkit",
            "asks for the psycopg2 driver, which flowkit does not use; write postgresql://",
        ),
        ("sqlite://flowkit.db", "names a host (flowkit.db), but SQLite opens a file; write three slashes"),
    ],
)
def test_a_malformed_database_url_is_one_line_naming_the_variable(url, problem):
    with pytest.raises(ConfigError) as info:
        Settings.from_env({"FLOWKIT_DATABASE_URL": url})
    message = str(info.value)
    assert message.startswith(f"FLOWKIT_DATABASE_URL={redact(url)!r} ")
    assert problem in message
    assert "s3cr3t" not in message and "\n" not in message


@pytest.mark.parametrize(
    "url",
    [
        "sqlite:///.flowkit/flowkit.db",
        "sqlite:////var/lib/flowkit.db",
        "sqlite://",
        "sqlite+pysqlite:///x.db",
        "postgresql://u:p@db/flowkit",
        "postgres://u@db/flowkit",
        "postgresql+psycopg://u:p@[::1]:5432/flowkit",
        "postgresql:///flowkit",
    ],
)
def test_supported_database_urls_pass(url):
    assert Settings.from_env({"FLOWKIT_DATABASE_URL": url}).database_url == url


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("nonsense://x", "uses scheme 'nonsense', which no kombu transport handles; use e.g. redis://"),
        ("redsi://cache:6379/0", "which no kombu transport handles; did you mean redis://?"),
        ("cache:6379", "is not a URL (it has no scheme://)"),
        ("redis://:s3cr3t@cache:port/0", "has a port that is not a number"),
        ("redis://cache:70000/0", "has a port outside 1-65535"),
        ("redis://cache:6379/0;cache2:6379", "has a part that is not a URL"),
    ],
)
def test_a_bad_broker_url_is_one_line_naming_the_variable(url, problem):
    with pytest.raises(ConfigError) as info:
        Settings.from_env({"FLOWKIT_BROKER_URL": url})
    message = str(info.value)
    assert message.startswith(f"FLOWKIT_BROKER_URL={redact(url)!r} ")
    assert problem in message
    assert "s3cr3t" not in message


@pytest.mark.parametrize(
    "url",
    [
        "redis://127.0.0.1:6379/0",
        "rediss://:p@cache:6380/1",
        "amqp://guest:guest@rabbit:5672//",
        "pyamqp://rabbit//",
        "memory://localhost/",
        "sqla+postgresql://u:p@db/flowkit",
        "redis+socket:///tmp/r.sock",
        "sentinel://s1:26379;sentinel://s2:26379",
    ],
)
def test_broker_urls_kombu_knows_pass(url):
    assert Settings.from_env({"FLOWKIT_BROKER_URL": url}).broker_url == url


def test_a_bad_url_from_a_flag_is_checked_too():
    with pytest.raises(ConfigError, match="FLOWKIT_BROKER_URL='nonsense://x'"):
        Settings.from_env({}, broker_url="nonsense://x")


def test_the_transports_accepted_without_kombu_are_all_kombus():
    from flowkit.config import COMMON_TRANSPORTS, broker_transports

    assert COMMON_TRANSPORTS <= broker_transports()
