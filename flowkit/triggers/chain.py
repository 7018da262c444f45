"""A run's trigger chain both ways: what triggered it, recursively up, and what it triggered,
recursively down, each link with the events that made it. Read from ``runs.parent_run_id``
(also set by ``flowkit trigger --parent``) and the trigger inbox. Plain data (dicts), for
``flowkit lineage`` (text and ``--json``), the lineage picture and the HTML report.
"""

from __future__ import annotations

from typing import Any

#: Runs drawn at most per chain (a fan-out of thousands is counted beyond).
MAX_NODES = 200
#: Links followed at most from the run, each way.
MAX_DEPTH = 10


def run_summary(run: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": run["id"],
        "flow": run.get("flow_name", "?"),
        "state": run.get("state", "unknown"),
        "trigger": run.get("trigger") or "",
        "created_at": run.get("created_at"),
        "missing": bool(run.get("missing")),
    }


def event_summary(e: dict[str, Any]) -> dict[str, Any]:
    """An inbox row as lineage shows it."""
    kind = e["kind"]
    if kind == "flow":
        words = f'flow "{e["source"]}" run {e["source_run_id"][:8]} ended {e["event_key"].rsplit(":", 1)[-1]}'
    else:
        words = f'dataset "{e["source"]}" written by step {e.get("source_step") or "?"} of run {e["source_run_id"][:8]}'
    return {
        "key": e["event_key"],
        "kind": kind,
        "source": e["source"],
        "source_run_id": e["source_run_id"],
        "source_step": e.get("source_step"),
        "target_flow": e["target_flow"],
        "run_id": e.get("consumed_run_id"),
        "at": e.get("created_at"),
        "consumed_at": e.get("consumed_at"),
        "text": words,
    }


class _Reader:
    def __init__(self, store: Any) -> None:
        self.store = store
        self.runs: dict[str, dict[str, Any]] = {}
        self.nodes = 0
        self.cut = 0  # runs left out past MAX_NODES

    def run(self, run_id: str) -> dict[str, Any]:
        if run_id not in self.runs:
            from ..errors import NotFoundError

            try:
                self.runs[run_id] = self.store.get_run(run_id)
            except NotFoundError:
                self.runs[run_id] = {"id": run_id, "flow_name": "?", "state": "unknown", "missing": True}
        return self.runs[run_id]

    def take(self) -> bool:
        if self.nodes >= MAX_NODES:
            self.cut += 1
            return False
        self.nodes += 1
        return True

    def up(self, run_id: str, depth: int, seen: set[str]) -> list[dict[str, Any]]:
        """The runs that triggered ``run_id``, each with its events and its own triggers."""
        run = self.run(run_id)
        if run.get("missing") or depth >= MAX_DEPTH:
            return []
        consumed = [event_summary(e) for e in self.store.trigger_events(consumed_run_id=run_id)]
        parents = list(dict.fromkeys([*(e["source_run_id"] for e in consumed), run.get("parent_run_id")]))
        out = []
        for pid in parents:
            if not pid or pid in seen or not self.take():
                continue
            events = [e for e in consumed if e["source_run_id"] == pid]
            node = {
                "run": run_summary(self.run(pid)),
                "events": events,
                "via": "event" if events else "parent",  # parent: set by `flowkit trigger --parent`
            }
            node["triggered_by"] = self.up(pid, depth + 1, seen | {pid})
            out.append(node)
        return out

    def down(self, run_id: str, depth: int, seen: set[str]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """The runs ``run_id`` triggered (each with its events and what it triggered), and
        its events still pending."""
        if depth >= MAX_DEPTH:
            return [], []
        sourced = [event_summary(e) for e in self.store.trigger_events(source_run_id=run_id)]
        pending = [e for e in sourced if e["consumed_at"] is None]
        children = [e["run_id"] for e in sourced if e["run_id"]]
        children += [c["id"] for c in self.store.child_runs(run_id)]
        out = []
        for cid in dict.fromkeys(children):
            if cid in seen or not self.take():
                continue
            events = [e for e in sourced if e["run_id"] == cid]
            below, below_pending = self.down(cid, depth + 1, seen | {cid})
            out.append(
                {
                    "run": run_summary(self.run(cid)),
                    "events": events,
                    "via": "event" if events else "parent",
                    "triggered": below,
                    "pending": below_pending,
                }
            )
        return out, pending


def trigger_chain(store: Any, run_id: str) -> dict[str, Any]:
    """``{"run", "triggered_by": [node...], "triggered": [node...], "pending": [event...],
    "left_out": n}``; a node is ``{"run", "events", "via", "triggered_by"|"triggered"}``."""
    reader = _Reader(store)
    up = reader.up(run_id, 0, {run_id})
    down, pending = reader.down(run_id, 0, {run_id})
    return {
        "run": run_summary(reader.run(run_id)),
        "triggered_by": up,
        "triggered": down,
        "pending": pending,
        "left_out": reader.cut,
    }


def chain_lines(chain: dict[str, Any], fmt_time: Any = str) -> list[str]:
    """The chain as indented text lines, up then down."""
    out = ["triggered by (recursively up):"]
    out += _lines(chain["triggered_by"], "triggered_by", "<-", 1, fmt_time) or ["  none"]
    out.append("triggered (recursively down):")
    out += _lines(chain["triggered"], "triggered", "->", 1, fmt_time) or ["  none"]
    for e in chain["pending"]:
        out.append(f"  .. pending for flow {e['target_flow']}: {e['text']} [{e['key']}]")
    if chain["left_out"]:
        out.append(f"  ... {chain['left_out']} more run(s) not shown")
    return out


def _lines(nodes: list[dict[str, Any]], key: str, arrow: str, depth: int, fmt_time: Any) -> list[str]:
    out = []
    pad = "  " * depth
    for n in nodes:
        r = n["run"]
        missing = "  (not in the store)" if r["missing"] else ""
        out.append(f"{pad}{arrow} {r['flow']} run {r['id']}  {r['state']}  {fmt_time(r['created_at'])}{missing}")
        for e in n["events"]:
            out.append(f"{pad}   event {e['key']}: {e['text']}")
        if n["via"] == "parent":
            out.append(f"{pad}   (parent recorded by `flowkit trigger --parent`)")
        out += _lines(n.get(key, []), key, arrow, depth + 1, fmt_time)
        for e in n.get("pending", []):
            out.append(f"{pad}   .. pending for flow {e['target_flow']}: {e['text']} [{e['key']}]")
    return out
