"""The slot ledger: concurrency limits as rows, taken and given back inside state changes.

Not public API. Every limit is a row of the ``limits`` table (the global in-flight cap, a
named pool, a lock across flows, a flow's step cap) with a capacity and a ``used`` count.
An attempt records what it holds (``attempts.holds``) in the transaction that queues it;
the transaction that ends it gives exactly that back. Because the attempt's own
compare-and-set decides which transaction ends it, a hold is returned once, on every
terminal path (success, failure, skip, timeout, worker lost, poison, cancel): the ledger
cannot leak or double-free (docs/design-notes.md#slot-ledger).

A lock is a limit of :data:`LOCK_CAPACITY`: a shared holder takes 1, an exclusive holder
takes all of it, so shared holders run together and an exclusive one runs alone.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Connection, bindparam, insert, select, update

from ..spec import FlowSpec, StepSpec
from . import tables as t

#: Units of a lock; an exclusive holder takes them all.
LOCK_CAPACITY = 1_000_000
GLOBAL_KEY = "global"

Hold = tuple[str, int]  # (limit key, amount)


def pool_key(name: str) -> str:
    return f"pool:{name}"


def lock_key(name: str) -> str:
    return f"lock:{name}"


def flow_key(name: str) -> str:
    return f"flow:{name}"


def holds_for(spec: FlowSpec, step: StepSpec, global_cap: int | None) -> list[Hold]:
    """What an attempt of ``step`` must hold while queued or running, in key order."""
    holds: list[Hold] = []
    if global_cap:
        holds.append((GLOBAL_KEY, 1))
    if spec.max_active_steps:
        holds.append((flow_key(spec.name), 1))
    if step.pool:
        holds.append((pool_key(step.pool), step.slots))
    if step.lock:
        holds.append((lock_key(step.lock), LOCK_CAPACITY if step.lock_mode == "exclusive" else 1))
    return sorted(holds)


def encode_holds(holds: Sequence[Hold]) -> str | None:
    return json.dumps([list(h) for h in holds]) if holds else None


def decode_holds(text: str | None) -> list[Hold]:
    return [(str(k), int(n)) for k, n in json.loads(text)] if text else []


_GIVE_BACK = update(t.limits).where(t.limits.c.key == bindparam("k")).values(used=t.limits.c.used - bindparam("n"))


class Ledger:
    """The ledger's reads and writes inside one transaction."""

    def __init__(self, conn: Connection, now: Any) -> None:
        self.conn = conn
        self.now = now
        self._rows: dict[str, list[int | None]] = {}  # key -> [capacity, used], locked

    def lock(self, keys: Iterable[str]) -> None:
        """Read and lock the rows of ``keys`` (in key order, so two transactions never
        deadlock on them); a lock or flow row that does not exist yet is created."""
        wanted = sorted(set(keys) - set(self._rows))
        if not wanted:
            return
        q = (
            select(t.limits.c.key, t.limits.c.capacity, t.limits.c.used)
            .where(t.limits.c.key.in_(wanted))
            .order_by(t.limits.c.key)
        )
        if self.conn.dialect.name == "postgresql":
            q = q.with_for_update()
        for row in self.conn.execute(q):
            self._rows[row.key] = [row.capacity, row.used]
        for key in wanted:
            if key not in self._rows:
                if key.startswith("pool:"):
                    continue  # a pool exists only once `flowkit pools set` made it
                capacity = LOCK_CAPACITY if key.startswith("lock:") else None
                self.conn.execute(insert(t.limits).values(key=key, capacity=capacity, used=0, updated_at=self.now))
                self._rows[key] = [capacity, 0]

    def missing(self, holds: Sequence[Hold]) -> list[str]:
        """Keys of ``holds`` with no ledger row (a pool nobody created)."""
        return [k for k, _ in holds if k not in self._rows]

    def fits(self, holds: Sequence[Hold]) -> bool:
        for key, amount in holds:
            row = self._rows.get(key)
            if row is None:
                return False
            capacity, used = row
            if capacity is not None and (used or 0) + amount > capacity:
                return False
        return True

    def take(self, holds: Sequence[Hold]) -> None:
        for key, amount in holds:
            self._rows[key][1] = (self._rows[key][1] or 0) + amount
        self._write(holds, sign=1)

    def give_back(self, holds: Sequence[Hold]) -> None:
        for key, amount in holds:
            if key in self._rows:
                self._rows[key][1] = (self._rows[key][1] or 0) - amount
        self._write(holds, sign=-1)

    def _write(self, holds: Sequence[Hold], sign: int) -> None:
        if holds:
            self.conn.execute(_GIVE_BACK, [{"k": k, "n": -sign * n} for k, n in sorted(holds)])
