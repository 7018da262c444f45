"""The names flowkit's Celery messages carry: the publishing side (:mod:`flowkit.dispatch`)
and the worker side (:mod:`flowkit.execution`) both import them from here, so neither
imports the other. Not public API."""

from __future__ import annotations

#: One step attempt: ``flowkit.execute(run_id, step, attempt)``, shadowed as ``<flow>.<step>``
#: so that Flower shows meaningful names.
EXECUTE_TASK = "flowkit.execute"
#: One flow or step callback: ``flowkit.callback(callback_id)``.
CALLBACK_TASK = "flowkit.callback"
#: The remote-control command a cancel broadcasts: the worker running a cancelled attempt
#: stops what its pool allows and answers what it did (flowkit.execution.cancel.stop_cancelled).
STOP_COMMAND = "flowkit_stop"
