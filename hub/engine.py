"""The rule engine: runs the pure detectors on each event and keeps their timers.

Detectors never read a clock. An event is judged at its own time; a timer fires at the monotonic
instant it asked for. Due timers always fire before a later event is judged, whether the engine's
own sleeper woke first or the event arrived first, so live runs, replays at any speed and tests
reach the same decisions.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import heapq
import itertools
import logging
from collections.abc import Callable, Sequence

from hub.clock import Clock, Instant
from hub.events import Event, EventKind, Incident, IncidentKind, Severity
from rules.base import ClearIncident, Decision, Detector, RaiseIncident, WakeAt

log = logging.getLogger(__name__)

IncidentSink = Callable[[Incident], None]
ClearSink = Callable[[ClearIncident, Instant], None]


class RuleEngine:
    def __init__(
        self,
        detectors: Sequence[Detector],
        clock: Clock,
        raise_incident: IncidentSink,
        clear_incident: ClearSink | None = None,
    ) -> None:
        self.detectors = list(detectors)
        # A detector may say which event kinds it reads (`kinds`); it is not asked about others.
        self._for_kind: dict[EventKind, tuple[int, ...]] = {
            kind: tuple(
                index
                for index, detector in enumerate(self.detectors)
                if (kinds := getattr(detector, "kinds", None)) is None or kind in kinds
            )
            for kind in EventKind
        }
        self._clock = clock
        self._raise = raise_incident
        self._clear = clear_incident
        self._timers: list[tuple[float, int, int, str]] = []
        self._current: dict[tuple[int, str], int] = {}
        self._order = itertools.count()
        self._changed = asyncio.Event()
        self._last_mono = float("-inf")
        self.failures: collections.Counter[str] = collections.Counter()
        self._reported_broken: set[str] = set()

    # -- bus handler -------------------------------------------------------------------------

    def handle(self, event: Event) -> None:
        now = Instant(event.wall, event.mono)
        self.fire_due(now)
        self._last_mono = max(self._last_mono, event.mono)
        for index in self._for_kind[event.kind]:
            detector = self.detectors[index]
            self._apply(
                index, self._guard(detector, now, functools.partial(detector.on_event, event, now)), now
            )

    def start(self, now: Instant) -> None:
        """The hub starts: detectors that want to (`on_start`) set timers from what they learnt."""
        for index, detector in enumerate(self.detectors):
            on_start = getattr(detector, "on_start", None)
            if on_start is not None:
                self._apply(index, self._guard(detector, now, functools.partial(on_start, now)), now)

    # -- timers ------------------------------------------------------------------------------

    def fire_due(self, now: Instant) -> None:
        """Fire every timer due at or before `now`, each at its own instant, in order."""
        while self._timers and self._timers[0][0] <= now.mono:
            mono, token, index, key = heapq.heappop(self._timers)
            if self._current.get((index, key)) != token:
                continue  # replaced or cancelled
            del self._current[(index, key)]
            at = Instant(now.wall - (now.mono - mono), mono)
            detector = self.detectors[index]
            self._apply(index, self._guard(detector, at, functools.partial(detector.on_wake, key, at)), at)

    def next_due(self) -> float | None:
        while (
            self._timers and self._current.get((self._timers[0][2], self._timers[0][3])) != self._timers[0][1]
        ):
            heapq.heappop(self._timers)
        return self._timers[0][0] if self._timers else None

    @property
    def pending_timers(self) -> int:
        return len(self._current)

    async def run(self) -> None:
        """Sleep until the next timer (or until a sooner one is set); never polls."""
        while True:
            self._changed.clear()
            due = self.next_due()
            if due is None:
                await self._changed.wait()
                continue
            sleeper = asyncio.ensure_future(self._clock.sleep_until(due))
            changed = asyncio.ensure_future(self._changed.wait())
            try:
                await asyncio.wait({sleeper, changed}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in (sleeper, changed):
                    task.cancel()
                await asyncio.gather(sleeper, changed, return_exceptions=True)
            self.fire_due(self._clock.now())

    # -- decisions ---------------------------------------------------------------------------

    def _guard(
        self, detector: Detector, now: Instant, call: Callable[[], Sequence[Decision]]
    ) -> Sequence[Decision]:
        try:
            return call()
        except Exception as err:
            # A crashing rule protects nobody: loud in the log, and once as degraded safety.
            self.failures[detector.name] += 1
            log.exception("detector failed", extra={"detector": detector.name})
            if detector.name in self._reported_broken:
                return ()
            self._reported_broken.add(detector.name)
            return (
                RaiseIncident(
                    Incident(
                        kind=IncidentKind.DEGRADED_SAFETY,
                        severity=Severity.WARNING,
                        room=None,
                        reason=f"the {detector.name} rule failed and no longer protects: {err!r}",
                        wall=now.wall,
                        mono=now.mono,
                        detector="engine",
                        evidence={"detector": detector.name},
                    )
                ),
            )

    def _apply(self, index: int, decisions: Sequence[Decision], now: Instant) -> None:
        for decision in decisions:
            if isinstance(decision, WakeAt):
                self._schedule(index, decision)
            elif isinstance(decision, RaiseIncident):
                self._raise(decision.incident)
            elif self._clear is not None:
                self._clear(decision, now)

    def _schedule(self, index: int, wake: WakeAt) -> None:
        if wake.mono is None:
            self._current.pop((index, wake.key), None)
            return
        token = next(self._order)
        self._current[(index, wake.key)] = token
        earliest = self._timers[0][0] if self._timers else None
        heapq.heappush(self._timers, (wake.mono, token, index, wake.key))
        if earliest is None or wake.mono < earliest:
            self._changed.set()
