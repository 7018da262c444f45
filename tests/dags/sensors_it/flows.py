"""Flows of the sensor integration test (tests/integration/test_sensors.py): a file sensor,
and a busy flow of short steps that must keep running on a one-slot worker while the sensor
waits. The sensor's file is named by FLOWKIT_TEST_SENSOR_FILE (the test's scratch path; every
process of the cluster sees the same environment)."""

from __future__ import annotations

import os
import time

from flowkit import Flow, Param

LANDING = os.environ.get("FLOWKIT_TEST_SENSOR_FILE", "/nonexistent/flowkit-sensor-landing.csv")


def load(ctx) -> str:
    return f"loaded {ctx.upstream['landed']}"


def work(ctx) -> str:
    time.sleep(float(ctx.params["seconds"]))
    return f"slept {ctx.params['seconds']} s"


file_sensor = (
    Flow("it_sensor_file").sensor("landed", file=LANDING, every="1s", backoff=1.0, timeout="3m").then("load", load)
)

busy = (
    Flow("it_busy", params={"seconds": Param(float, default=0.2)})
    .step("one", work)
    .then("two", work)
    .then("three", work)
    .then("four", work)
    .then("five", work)
)
