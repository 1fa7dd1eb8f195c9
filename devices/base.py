"""The small interface every sensor adapter keeps.

An adapter is an async context manager (connect on enter, release on exit; a failed connect
leaves no state) whose `run` emits typed events until it is cancelled or its source ends.
`emit` is synchronous and never blocks: it hands the event to the hub's bus.
"""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import Protocol, Self

from hub.events import Event

Emit = Callable[[Event], None]


class AdapterError(Exception):
    """An adapter could not start or lost its link; the message says which and why."""


class SensorAdapter(Protocol):
    name: str

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    async def run(self, emit: Emit) -> None:
        """Emit events until cancelled (live adapters) or until the source ends (replay)."""
        ...
