"""The event bus: one publish, many subscribers, in order.

Publishing is synchronous and never blocks: handlers are plain functions that must not do I/O
(the store queues to its thread, detectors are pure). A handler that raises is logged loudly with
its traceback and counted; it never stops the bus or the other handlers. Consumers that want to
`async for` over events take a `stream()`: callback -> queue -> async iterator, as in bleak.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import AsyncIterator, Callable
from typing import Final

from hub.events import Event

log = logging.getLogger(__name__)

Handler = Callable[[Event], None]
Unsubscribe = Callable[[], None]

# A stream that falls this far behind drops its oldest events and says so: the live view of a
# browser tab must never grow the hub's memory without bound.
STREAM_LIMIT: Final = 10_000


class Bus:
    def __init__(self) -> None:
        self._handlers: list[tuple[str, Handler]] = []
        self.published = 0
        self.handler_errors: collections.Counter[str] = collections.Counter()
        self.stream_drops: collections.Counter[str] = collections.Counter()

    def subscribe(self, name: str, handler: Handler) -> Unsubscribe:
        entry = (name, handler)
        self._handlers.append(entry)

        def unsubscribe() -> None:
            if entry in self._handlers:
                self._handlers.remove(entry)

        return unsubscribe

    def publish(self, event: Event) -> None:
        self.published += 1
        for name, handler in tuple(self._handlers):
            try:
                handler(event)
            except Exception:
                self.handler_errors[name] += 1
                log.exception("event handler failed", extra={"handler": name, "event": event.kind.value})

    async def stream(self, name: str) -> AsyncIterator[Event]:
        """All events published from now on, as an async iterator."""
        pending: collections.deque[Event] = collections.deque(maxlen=STREAM_LIMIT)
        wakeup = asyncio.Event()

        def enqueue(event: Event) -> None:
            if len(pending) == STREAM_LIMIT:
                self.stream_drops[name] += 1
                if self.stream_drops[name] == 1:
                    log.warning("stream falls behind, dropping its oldest events", extra={"stream": name})
            pending.append(event)
            wakeup.set()

        unsubscribe = self.subscribe(name, enqueue)
        try:
            while True:
                while pending:
                    yield pending.popleft()
                wakeup.clear()
                await wakeup.wait()
        finally:
            unsubscribe()
