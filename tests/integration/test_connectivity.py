"""The startup probes against the real servers: what answers, and which refusals are permanent."""

from __future__ import annotations

import pytest

from flowkit.connectivity import classify_url_problem, probe_broker, probe_database
from flowkit.errors import ConfigError

from ..conftest import PG_ADMIN_URL


def test_live_servers_answer(pg_url, redis_url, amqp_url):
    probe_database(pg_url)
    probe_broker(redis_url)
    probe_broker(amqp_url)


def test_a_database_that_does_not_exist_is_permanent(pg_url):
    missing = pg_url.rsplit("/", 1)[0] + "/flowkit_no_such_database"
    with pytest.raises(ConfigError) as info:
        probe_database(missing)
    assert classify_url_problem(info.value).permanent
    assert str(info.value).startswith("cannot connect to the database at ")
    assert 'database "flowkit_no_such_database" does not exist; check FLOWKIT_DATABASE_URL' in str(info.value)


def test_a_role_that_does_not_exist_is_permanent(pg_url):
    rest = PG_ADMIN_URL.split("@", 1)[1]
    with pytest.raises(ConfigError, match='role "flowkit_no_such_role" does not exist'):
        probe_database(f"postgresql://flowkit_no_such_role@{rest}")


def test_refused_broker_credentials_are_permanent_and_redacted(amqp_url):
    scheme, rest = amqp_url.split("://", 1)
    host = rest.split("@", 1)[-1]
    with pytest.raises(ConfigError) as info:
        probe_broker(f"{scheme}://guest:wrong-password-123@{host}")
    assert "ACCESS_REFUSED" in str(info.value)
    assert "wrong-password-123" not in str(info.value)


def test_an_unknown_virtual_host_is_permanent(amqp_url):
    with pytest.raises(ConfigError, match="NOT_ALLOWED"):
        probe_broker(amqp_url.rstrip("/") + "/flowkit_no_such_vhost")
