"""flowkit: Python DAGs on Celery, with their whole history in SQL.

Importing flowkit is cheap and connects to nothing: dags modules import it in the
loader's subprocess, where Celery and SQLAlchemy stay unloaded.
"""

from __future__ import annotations

# -- inside a step (and a callback)
from .context import CallbackContext, StepContext

# -- defining flows
from .dsl import UNSET, Flow, Param

# -- errors
from .errors import (
    CycleError,
    DagLoadError,
    DefinitionError,
    DuplicateStepError,
    FlowkitError,
    InvalidParamError,
    Retry,
    Skip,
    UnknownStepError,
)

# -- results: a pointer to data kept elsewhere
from .refs import Ref

# -- inside a step: flowkit.secret(name)
from .secrets import secret

# -- inside a sensor's poke: return or raise NotYet("why") (Flow.sensor)
from .sensors.pokes import NotYet

# -- deadlines: Flow(..., deadline=Deadline(by="06:00"))
from .sla.deadline import Deadline

# -- triggers: Flow(..., trigger_on=[FlowDone("orders"), Dataset("s3://lake/orders")])
from .triggers import Dataset, FlowDone

__version__ = "0.1.0"

__all__ = [
    # defining flows
    "Flow",
    "Param",
    "UNSET",
    "Deadline",
    "FlowDone",
    "Dataset",
    # inside a step
    "StepContext",
    "Retry",
    "Skip",
    "NotYet",
    "secret",
    "Ref",
    # callbacks
    "CallbackContext",
    # errors
    "FlowkitError",
    "DefinitionError",
    "CycleError",
    "UnknownStepError",
    "DuplicateStepError",
    "InvalidParamError",
    "DagLoadError",
]
