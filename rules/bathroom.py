"""Bathroom stay: the resident went into the bathroom and was seen nowhere else for too long.

Presence in the bathroom is what its motion (or presence, radar) sensor and the toilet flush
report, on their ON edges only: a PIR going quiet a minute after the resident left, or the door
being shut from outside, must not read as entering again. Any sign of life in another room ends
the stay.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from typing import Final

from hub.clock import Instant
from hub.events import Event, EventKind, Incident, IncidentKind, Severity
from rules.base import ClearIncident, Decision, RaiseIncident, WakeAt
from rules.localtime import duration_text, hhmm

WAKE_KEY: Final = "bathroom"
_ENTERS: Final = frozenset({EventKind.MOTION, EventKind.FLUSH})


class BathroomStayDetector:
    name = "bathroom_stay"

    def __init__(
        self,
        *,
        tz: dt.tzinfo,
        bathrooms: Iterable[str],
        limit_s: float,
        labels: Mapping[str, str] | None = None,
    ) -> None:
        if limit_s <= 0:
            raise ValueError("the bathroom limit must be positive")
        self._tz = tz
        self._rooms = frozenset(bathrooms)
        self._limit = limit_s
        self._labels = dict(labels or {})
        self._since: Instant | None = None
        self._room: str | None = None
        self._raised = False

    def on_event(self, event: Event, now: Instant) -> Sequence[Decision]:
        if not event.is_activity:
            return ()
        if event.room in self._rooms:
            if event.kind in _ENTERS and self._since is None:
                self._since, self._room = now, event.room
                return (WakeAt(WAKE_KEY, now.mono + self._limit),)
            return ()
        if self._since is None:
            return ()
        # Seen elsewhere: the stay is over.
        self._since = None
        decisions: list[Decision] = [WakeAt(WAKE_KEY, None)]
        if self._raised:
            self._raised = False
            where = self._labels.get(event.device, event.device)
            decisions.append(
                ClearIncident(
                    IncidentKind.BATHROOM_STAY,
                    self._room,
                    f"out of the {self._room} at {hhmm(now.wall, self._tz)} ({where})",
                )
            )
        return decisions

    def on_wake(self, key: str, now: Instant) -> Sequence[Decision]:
        since = self._since
        if key != WAKE_KEY or since is None or self._raised:
            return ()
        self._raised = True
        return (
            RaiseIncident(
                Incident(
                    kind=IncidentKind.BATHROOM_STAY,
                    severity=Severity.CRITICAL,
                    room=self._room,
                    reason=(
                        f"in the {self._room} since {hhmm(since.wall, self._tz)}, "
                        f"{duration_text(now.mono - since.mono)} without being seen elsewhere "
                        f"(limit {duration_text(self._limit)})"
                    ),
                    wall=now.wall,
                    mono=now.mono,
                    detector=self.name,
                    evidence={"since_wall": since.wall, "limit_s": self._limit},
                )
            ),
        )
