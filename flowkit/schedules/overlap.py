"""A flow's overlap policy as the store and the sweep read it from its spec.

The decision itself is :func:`flowkit.schedules.planner.overlap_action`; this module says
which policy a stored spec has, with the default for specs that never set one.
"""

from __future__ import annotations

from ..spec import FlowSpec

#: Without ``overlap=``: a due run waits (queued) until the previous scheduled run ends, and
#: every interval gets its run, in order. A batch interval is data: skipping it (Temporal's
#: default) loses that interval's data silently, and running two at once (flowkit before
#: overlap=) lets two runs of one flow race on the same tables. Airflow's behaviour with
#: max_active_runs=1 is the same.
DEFAULT_OVERLAP = "buffer_all"


def overlap_policy(spec: FlowSpec) -> str:
    return str((spec.schedule_options or {}).get("overlap") or DEFAULT_OVERLAP)


def buffers(spec: FlowSpec) -> bool:
    """Whether a due scheduled run of this flow waits queued behind a running one."""
    return bool(spec.schedule) and overlap_policy(spec) in ("buffer_one", "buffer_all")
