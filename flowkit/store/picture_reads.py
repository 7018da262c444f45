"""What a picture of one run reads (``flowkit render --run``, ``timeline``, ``report``). Not public API.

A run's own steps are read in full; a map step's instances are not: a map of 10,000
elements gives its instances counted by state (one grouped query), the first few rows by
index and the first failed ones, with only those instances' attempts. Audit events and
dataset events of instances are counted or grouped, not listed, so the cost of a picture
follows the flow's size, not the number of elements mapped.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, func, or_, select

from . import tables as t
from .base import read_results, row_dict


class PictureReads:
    """The store's reads for run pictures; a mixin of SqlStore."""

    _conn: Any

    def run_picture(self, run_id: str, *, instances_shown: int, failed_shown: int) -> dict[str, Any]:
        """The rows of run ``run_id`` a picture draws (see the module docstring).

        Keys: ``steps`` (rows of the run's own and compensation steps), ``map_counts``
        (map step -> state -> count), ``instances`` (map step -> the first
        ``instances_shown`` instance rows, then up to ``failed_shown`` failed ones after
        them), ``attempts`` (of those steps and instances), ``events`` (the run's audit
        trail without instance events), ``instance_events`` (how many were left out),
        ``results`` (of the run's own steps) and ``datasets`` (reads and writes; an
        instance's are grouped under its map step with a count in ``instances``).
        """
        sr, a, e, d = t.step_runs.c, t.attempts.c, t.events.c, t.dataset_events.c
        is_instance = e.step.contains("[", autoescape=True)  # step names cannot hold "[" (see dsl)
        with self._conn() as conn:
            steps = [
                row_dict(row)
                for row in conn.execute(select(t.step_runs).where(sr.run_id == run_id, sr.map_parent.is_(None)))
            ]
            map_counts: dict[str, dict[str, int]] = {}
            for row in conn.execute(
                select(sr.map_parent, sr.state, func.count().label("n"))
                .where(sr.run_id == run_id, sr.map_parent.is_not(None))
                .group_by(sr.map_parent, sr.state)
            ):
                map_counts.setdefault(row.map_parent, {})[row.state] = int(row.n)
            instances: dict[str, list[dict[str, Any]]] = {}
            for parent in sorted(map_counts):
                first = select(t.step_runs).where(sr.run_id == run_id, sr.map_parent == parent)
                rows = [row_dict(x) for x in conn.execute(first.order_by(sr.map_index).limit(instances_shown))]
                failed = map_counts[parent].get("failed", 0)
                if failed and rows and failed > sum(x["state"] == "failed" for x in rows):
                    rows += [
                        row_dict(x)
                        for x in conn.execute(
                            first.where(sr.state == "failed", sr.map_index > rows[-1]["map_index"])
                            .order_by(sr.map_index)
                            .limit(failed_shown)
                        )
                    ]
                instances[parent] = rows
            shown = [x["step"] for rows in instances.values() for x in rows]
            own = (
                select(t.attempts)
                .join(t.step_runs, and_(sr.run_id == a.run_id, sr.step == a.step))
                .where(a.run_id == run_id, sr.map_parent.is_(None))
            )
            attempts = [row_dict(x) for x in conn.execute(own)]
            if shown:
                attempts += [
                    row_dict(x) for x in conn.execute(select(t.attempts).where(a.run_id == run_id, a.step.in_(shown)))
                ]
            events = [
                row_dict(x)
                for x in conn.execute(
                    select(t.events).where(e.run_id == run_id, or_(e.step.is_(None), ~is_instance)).order_by(e.id)
                )
            ]
            instance_events = int(
                conn.execute(
                    select(func.count())
                    .select_from(t.events)
                    .where(e.run_id == run_id, e.step.is_not(None), is_instance)
                ).scalar()
                or 0
            )
            names = [x["step"] for x in steps]
            results = read_results(conn, run_id, names) if names else {}
            datasets = [
                row_dict(x)
                for x in conn.execute(
                    select(t.dataset_events)
                    .join(t.step_runs, and_(sr.run_id == d.run_id, sr.step == d.step))
                    .where(d.run_id == run_id, sr.map_parent.is_(None))
                    .order_by(d.id)
                )
            ]
            for x in conn.execute(
                select(d.uri, d.direction, sr.map_parent, func.count().label("n"), func.min(d.at).label("at"))
                .join(t.step_runs, and_(sr.run_id == d.run_id, sr.step == d.step))
                .where(d.run_id == run_id, sr.map_parent.is_not(None))
                .group_by(d.uri, d.direction, sr.map_parent)
            ):
                datasets.append(
                    {
                        "uri": x.uri,
                        "direction": x.direction,
                        "step": x.map_parent,
                        "attempt": None,
                        "at": row_dict(x)["at"],
                        "instances": int(x.n),
                    }
                )
        return {
            "steps": steps,
            "map_counts": map_counts,
            "instances": instances,
            "attempts": attempts,
            "events": events,
            "instance_events": instance_events,
            "results": results,
            "datasets": datasets,
        }
