"""A broker that refuses for good (a database index it does not have, TLS to a plain server)
fails daemons at once with one line, and never holds `flowkit trigger` for long.

A Redis server of this test's own, with one database, so index 5 is out of range."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from flowkit.connectivity import classify_url_problem, probe_broker
from flowkit.errors import ConfigError

from ..conftest import ROOT, service_missing


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def one_db_redis(tmp_path: Path) -> Iterator[int]:
    """A plain (no TLS) redis-server with a single database; stopped by its PID afterwards."""
    binary = shutil.which("redis-server")
    if binary is None:
        service_missing("redis-server (the binary)", FileNotFoundError("redis-server"))
    port = _free_port()
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--databases",
            "1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp_path),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail("the test's redis-server did not start")
                time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _flowkit(
    tmp_path: Path, broker: str, *args: str, timeout: float = 60
) -> tuple[subprocess.CompletedProcess[str], float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWKIT_")}
    env.update(
        FLOWKIT_DATABASE_URL=f"sqlite:///{tmp_path / 's.db'}",
        FLOWKIT_BROKER_URL=broker,
        FLOWKIT_DAGS_FOLDER=str(ROOT / "dags"),
    )
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "flowkit.cli", *args], env=env, capture_output=True, text=True, timeout=timeout
    )
    return proc, time.monotonic() - started


def _errors(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(("error:", "warning:"))]


def test_a_database_index_out_of_range_fails_probe_scheduler_and_worker_at_once(one_db_redis, tmp_path):
    url = f"redis://127.0.0.1:{one_db_redis}/5"
    with pytest.raises(ConfigError, match="DB index is out of range; check FLOWKIT_BROKER_URL") as info:
        probe_broker(url)
    assert classify_url_problem(info.value).permanent
    for daemon in ("scheduler", "worker"):
        proc, took = _flowkit(tmp_path, url, daemon, timeout=60)
        assert proc.returncode == 1, proc.stderr
        assert took < 30, f"{daemon} kept retrying a refusal that never fixes itself"
        assert _errors(proc.stderr) == [
            f"error: cannot connect to the broker at {url}: DB index is out of range; check FLOWKIT_BROKER_URL"
        ]
        assert "Traceback" not in proc.stderr


def test_tls_to_a_plain_redis_is_bounded_and_one_line(one_db_redis, tmp_path):
    url = f"rediss://127.0.0.1:{one_db_redis}/0"
    started = time.monotonic()
    with pytest.raises(ConfigError, match="the server does not speak TLS there"):
        probe_broker(url, timeout_seconds=2)
    assert time.monotonic() - started < 10
    proc, took = _flowkit(tmp_path, url, "trigger", "orders", timeout=90)
    assert proc.returncode == 0, proc.stderr  # the run exists: a sweep starts it
    assert took < 20, "trigger waited on a TLS handshake the server never answers"
    (warning,) = _errors(proc.stderr)
    assert warning.startswith("warning: run ") and "the server does not speak TLS there" in warning
    assert "Traceback" not in proc.stderr
    proc, took = _flowkit(tmp_path, url, "scheduler", timeout=60)
    assert proc.returncode == 1 and took < 30
    assert "the server does not speak TLS there" in _errors(proc.stderr)[0]


def test_a_broker_still_starting_is_waited_for(tmp_path):
    """Connection refused (a broker not up yet) keeps the waiting behaviour."""
    url = f"redis://127.0.0.1:{_free_port()}/0"
    proc, took = _flowkit(tmp_path, url, "scheduler", "--wait-for-services", "4", timeout=60)
    assert proc.returncode == 1
    assert took >= 2.5  # it retried (after 1 s, then 2 s) for the time it was given, then gave up
    assert proc.stderr.count("retrying in") == 2 and "Connection refused" in proc.stderr
