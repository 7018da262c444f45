"""Sensors that wait on the clock the unit tests inject (tests/unit/test_sensors.py): a
scripted poke (its answers are read, one per poke, from the file in param ``script``), a
file that never lands, and a wait for another flow's run of the same logical date. The
backends' equivalence test leaves them out: their timeouts need time to pass."""

from __future__ import annotations

from pathlib import Path

from flowkit import Flow, NotYet, Param


def scripted(ctx):
    """Answer with the next word of the script: yes (done), no (not yet), error (raise)."""
    script = Path(ctx.params["script"])
    words = script.read_text().split()
    word, rest = (words[0], words[1:]) if words else ("no", [])
    script.write_text(" ".join(rest))
    if word == "error":
        raise RuntimeError("the scripted poke failed")
    if word == "yes":
        return {"answered": "yes"}
    return NotYet(f"scripted {word}")


def after(ctx) -> str:
    return f"after {sorted(ctx.upstream)}"


def always() -> str:
    return "cleaned up"


SCRIPT = {"script": Param(str)}

fails = (
    Flow("sensor_clocked_fail", params=SCRIPT)
    .sensor("wait", poke=scripted, every="10s", backoff=2.0, timeout="1m")
    .then("after", after)
)

skips = (
    Flow("sensor_clocked_skip", params=SCRIPT)
    .sensor("wait", poke=scripted, every="10s", backoff=1.0, timeout="1m", on_timeout="skip")
    .then("after", after)
    .step("always", always, after="wait", trigger="all_done")
)

retried = (
    Flow("sensor_clocked_retries", params=SCRIPT)
    .sensor("wait", poke=scripted, every="10s", backoff=1.0, timeout="10m", retries=1, retry_backoff="5s")
    .then("after", after)
)

missing_file = (
    Flow("sensor_clocked_file")
    .sensor("landed", file=Path(__file__).parent / "never-created.csv", every="10s", timeout="30s", on_timeout="skip")
    .then("after", after)
)

source = Flow("sensor_clocked_source").step("produce", always)

downstream = (
    Flow("sensor_clocked_flow")
    .sensor("source_done", flow="sensor_clocked_source", every="10s", backoff=1.0, timeout="10m")
    .then("after", after)
)
