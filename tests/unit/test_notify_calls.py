"""A Python callable in notify=: checked and kept in the spec by its place and name, handed by
the sender to a worker through the callbacks outbox (once per notification, whatever the
number of delivery attempts), and called there with the notification (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from flowkit import DefinitionError, Flow
from flowkit.notify import Call, Log
from flowkit.notify.calls import call_id, notify_target, write_call
from flowkit.notify.outbox import KINDS
from flowkit.notify.sender import deliver_once, list_notifications, routing_from_specs
from flowkit.store import tables as t

from ..store_backends import inline_harness

NOTIFY_DAGS = str(Path(__file__).resolve().parents[1] / "dags" / "notify")


def page(note: dict[str, Any]) -> None:
    return None


def noop(ctx: Any) -> None:
    return None


def test_a_callable_is_kept_by_its_place_and_name() -> None:
    flow = Flow("calls", notify=[Log(), page, Call(page, on="sla_at_risk")]).step("a", noop)
    name = f"{__name__}:page"
    assert flow.spec().notify[1:] == (
        {"type": "callable", "index": 0, "name": name, "on": list(KINDS)},
        {"type": "callable", "index": 1, "name": name, "on": ["sla_at_risk"]},
    )
    assert flow.notify_fns == [page, page]
    assert notify_target(flow, 1, name) is page


@pytest.mark.parametrize(
    ("notify", "says"),
    [
        (["https://x"], "notify= takes Webhook(...), Log(...) or Call(fn) from flowkit.notify, or a function"),
        ([Call(3)], "Call(3) is not callable"),  # type: ignore[arg-type]
        ([Call(page, on="run_faild")], "pick kinds from run_failed"),
    ],
)
def test_a_wrong_callable_entry_is_one_line(notify: Any, says: str) -> None:
    with pytest.raises(DefinitionError) as caught:
        Flow("bad_calls", notify=notify)
    assert says in str(caught.value) and 'flow "bad_calls"' in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_worker_refuses_a_callable_that_is_not_the_one_recorded() -> None:
    flow = Flow("calls", notify=[page]).step("a", noop)
    with pytest.raises(LookupError, match="is tests.unit.test_notify_calls:page, not mod:other"):
        notify_target(flow, 0, "mod:other")
    with pytest.raises(LookupError, match="no callable number 2"):
        notify_target(flow, 1, "mod:other")


def read_notes(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_the_sender_hands_each_notification_to_a_worker_once(backend_store, tmp_path, monkeypatch) -> None:
    notes = tmp_path / "notes.jsonl"
    monkeypatch.setenv("FLOWKIT_TEST_NOTES", str(notes))
    # Given a failing flow with notify=[note_to_file, Call(missed_only, on="sla_missed")]
    h = inline_harness(backend_store, NOTIFY_DAGS)
    run_id = h.trigger("notify_calls")
    assert h.run_until_done(run_id) == "failed"
    # When the sender makes a pass (its callables go to the harness's dispatcher)
    routing = routing_from_specs(backend_store, h.dispatcher)
    assert deliver_once(backend_store, routing, "sender-1", now=datetime.now(UTC) + timedelta(seconds=1)) == 2
    # Then the outbox rows are delivered (handed over) and nothing has run yet
    outbox = list_notifications(backend_store, run_id)
    assert {n["kind"]: n["outcome"] for n in outbox} == {"run_failed": "delivered", "retries_exhausted": "delivered"}
    assert [a["notifier"] for n in outbox for a in n["delivery_attempts"]] == [
        "callable flowkit_dags.flows:note_to_file"
    ] * 2
    assert read_notes(notes) == [] and len(h.dispatcher.callbacks) == 2
    # When a worker runs the published callbacks
    h.work()
    # Then the callable saw each notification once, and each call is audited
    got = sorted((n["kind"], n["run_id"], n["flow"]) for n in read_notes(notes))
    assert got == [("retries_exhausted", run_id, "notify_calls"), ("run_failed", run_id, "notify_calls")]
    with backend_store._conn() as conn:
        ran = conn.execute(select(t.events.c.reason).where(t.events.c.action == "callback_ran")).scalars().all()
    assert sorted(ran) == [
        "notify= callable flowkit_dags.flows:note_to_file for retries_exhausted",
        "notify= callable flowkit_dags.flows:note_to_file for run_failed",
    ]
    # And a second delivery attempt of the same notification (a sender that died before
    # recording the first) writes and publishes nothing more
    [failed] = [n for n in outbox if n["kind"] == "run_failed"]
    note = {"id": failed["id"], "kind": "run_failed", "run_id": run_id, "flow": "notify_calls", "step": None}
    assert write_call(backend_store, note, 0, "flowkit_dags.flows:note_to_file", "v") is None


def test_a_notification_about_no_run_reaches_the_callable(backend_store, tmp_path, monkeypatch) -> None:
    notes = tmp_path / "notes.jsonl"
    monkeypatch.setenv("FLOWKIT_TEST_NOTES", str(notes))
    h = inline_harness(backend_store, NOTIFY_DAGS)
    spec = backend_store.flow_spec("notify_calls")
    # Given an sla_missed of a scheduled interval that never got a run (no run id)
    note = {"id": 991, "kind": "sla_missed", "run_id": None, "flow": "notify_calls", "step": None, "reason": "late"}
    for index, name in enumerate(["flowkit_dags.flows:note_to_file", "flowkit_dags.flows:missed_only"]):
        assert _name(spec, index) == name
        due = write_call(backend_store, note, index, name, str(spec.version))
        assert due is not None and due.id == call_id(991, index) and due.run_id is None
        h.dispatcher.callbacks.append(due)
    # When a worker runs them
    h.work()
    # Then both callables got it, from the flow's current version
    assert sorted(n["kind"] for n in read_notes(notes)) == ["only:sla_missed", "sla_missed"]


def _name(spec: Any, index: int) -> str | None:
    return next((e["name"] for e in spec.notify if e.get("type") == "callable" and e["index"] == index), None)
