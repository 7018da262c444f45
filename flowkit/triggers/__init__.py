"""Flow and dataset triggers: ``Flow(..., trigger_on=[FlowDone("orders"), Dataset("s3://lake/orders")])``.

:mod:`.conditions` holds the user's names and their checks (pure: no SQL), :mod:`.plan` how
pending events become runs. The store keeps each event in an inbox row written in the
transaction that committed it, and the scheduler's sweep consumes each row exactly once
(flowkit/store/trigger_ops.py).
"""

from __future__ import annotations

from .conditions import TRIGGER_MODES, Dataset, FlowDone, check_triggers

__all__ = ["FlowDone", "Dataset", "TRIGGER_MODES", "check_triggers"]
