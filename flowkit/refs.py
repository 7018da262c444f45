"""References to data kept outside the store: ``return flowkit.Ref("s3://bucket/key", rows=10)``.

A step's result is JSON kept in SQL and capped (``FLOWKIT_MAX_RESULT_BYTES``). Large data
belongs in a file or an object store; the step returns a :class:`Ref` to it, which is
stored as a small tagged JSON object and given back to downstream steps as a ``Ref``
(``ctx.upstream["extract"].uri``), anywhere inside the result.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

#: The key that marks a stored JSON object as a Ref.
TAG = "__flowkit_ref__"


@dataclass(frozen=True)
class Ref:
    """A pointer to data stored elsewhere: a URI and JSON-able facts about it.

    >>> Ref("s3://lake/orders/2026-11-23.parquet", rows=120_000, format="parquet")
    """

    uri: str
    meta: dict[str, Any] = field(default_factory=dict)

    def __init__(self, uri: str, **meta: Any) -> None:
        if not isinstance(uri, str) or not uri.strip():
            raise ValueError(f'Ref(uri) takes a non-empty string such as "s3://bucket/key", not {uri!r}')
        try:
            json.dumps(meta, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ValueError(
                f"Ref({uri!r}, ...): metadata must be JSON (str, int, float, bool, None, lists, dicts): {exc}"
            ) from None
        object.__setattr__(self, "uri", uri)
        object.__setattr__(self, "meta", dict(meta))

    def __getitem__(self, key: str) -> Any:
        return self.meta[key]

    def to_json(self) -> dict[str, Any]:
        return {TAG: 1, "uri": self.uri, "meta": self.meta}

    def __repr__(self) -> str:
        extra = "".join(f", {k}={v!r}" for k, v in self.meta.items())
        return f"Ref({self.uri!r}{extra})"

    def __hash__(self) -> int:
        return hash((self.uri, json.dumps(self.meta, sort_keys=True)))


def revive(value: Any) -> Any:
    """A stored result with its tagged objects turned back into :class:`Ref` (recursively)."""
    if isinstance(value, dict):
        if value.get(TAG) == 1 and isinstance(value.get("uri"), str):
            return Ref(value["uri"], **(value.get("meta") or {}))
        return {k: revive(v) for k, v in value.items()}
    if isinstance(value, list):
        return [revive(v) for v in value]
    return value
