"""The flowkit exception tree, and nothing else.

::

    FlowkitError
    ├── DefinitionError            a flow is defined wrongly (raised where it is defined)
    │   ├── CycleError
    │   ├── UnknownStepError
    │   ├── DuplicateStepError
    │   └── InvalidParamError      also raised when a run is triggered with bad params
    ├── DagLoadError               a dags/ module failed to import (carries path, lineno)
    ├── ConfigError
    ├── StoreError
    │   ├── StoreUnavailable
    │   ├── MigrationRequired
    │   └── LeaseLost              a scheduler's write refused: another scheduler took over
    ├── DispatchError
    ├── NotFoundError              a flow or run that the store does not know
    ├── ApprovalError              an approval that cannot be decided (not awaiting one)
    ├── ActionRefused              an operator's action that the current state does not allow
    └── StepFailure                a step attempt failed in a way flowkit diagnosed
        └── ResultTooLarge

    StepSignal                     raised *by user code* to steer its own step
    ├── Retry(delay=...)           retry now (or after ``delay``) if attempts remain
    └── Skip(reason)               mark this step skipped

Every error's message says what is wrong, where, and how to fix it, on one line.
Structured attributes (``flow``, ``step``, ``path``, ``lineno``) let the CLI format them.
"""

from __future__ import annotations


class FlowkitError(Exception):
    """Base of every error flowkit raises on purpose."""

    def __init__(
        self,
        message: str,
        *,
        flow: str | None = None,
        step: str | None = None,
        path: str | None = None,
        lineno: int | None = None,
    ) -> None:
        self.message = message
        self.flow = flow
        self.step = step
        self.path = path
        self.lineno = lineno
        super().__init__(self.__str__())

    @property
    def location(self) -> str | None:
        if self.path is None:
            return None
        return f"{self.path}:{self.lineno}" if self.lineno else self.path

    def __str__(self) -> str:
        loc = self.location
        return f"{loc}: {self.message}" if loc else self.message


class DefinitionError(FlowkitError):
    """A flow is defined wrongly; raised at the line that defines it."""


class CycleError(DefinitionError):
    def __init__(self, message: str, *, cycle: list[str], **kw: object) -> None:
        self.cycle = cycle
        super().__init__(message, **kw)  # type: ignore[arg-type]


class UnknownStepError(DefinitionError):
    pass


class DuplicateStepError(DefinitionError):
    pass


class InvalidParamError(DefinitionError):
    pass


class DagLoadError(FlowkitError):
    """A module in the dags folder could not be imported or defines flows badly."""


class ConfigError(FlowkitError):
    pass


class StoreError(FlowkitError):
    pass


class StoreUnavailable(StoreError):
    pass


class MigrationRequired(StoreError):
    pass


class LeaseLost(StoreError):
    """A scheduler's transaction was refused: its lease's fencing token moved on (another
    scheduler took over while this one was frozen or cut off). Nothing of it was written."""


class DispatchError(FlowkitError):
    pass


class NotFoundError(FlowkitError):
    pass


class ApprovalError(FlowkitError):
    """`flowkit approve`/`reject` named a step that is not awaiting a decision."""


class ActionRefused(FlowkitError):
    """An operator's action (pause, cancel, retry, mark) that the current state does not
    allow; the message says the state and what to do instead."""


class StepFailure(FlowkitError):
    pass


class ResultTooLarge(StepFailure):
    pass


class StepSignal(Exception):
    """Raised by user code inside a step to steer that step (not an error)."""


class Retry(StepSignal):
    """Ask for another attempt; ``delay`` (seconds) overrides the backoff if given."""

    def __init__(self, reason: str = "retry requested", *, delay: float | None = None) -> None:
        self.reason = reason
        self.delay = delay
        super().__init__(reason)


class Skip(StepSignal):
    """Mark the step skipped; its downstream steps follow their trigger rules."""

    def __init__(self, reason: str = "skipped by the step") -> None:
        self.reason = reason
        super().__init__(reason)
