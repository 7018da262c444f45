"""The seam between the scheduler and whatever carries attempts to workers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from ..spec import StepSpec


@dataclass(frozen=True)
class Dispatch:
    """One attempt to publish."""

    run_id: str
    flow: str
    step: StepSpec
    attempt: int
    task_id: str


class Dispatcher(Protocol):
    def can_dispatch(self, queue: str) -> bool:
        """False while ``queue`` is above its high watermark (backpressure)."""

    def dispatch(self, item: Dispatch) -> None:
        """Publish one attempt; raise DispatchError if the broker refused it."""
