"""At night: the front door opened from inside (wandering), and out of bed without coming back.

- Night wandering: the front door opens inside the night window while the resident was last seen
  inside the flat. Coming home late (the door after an absence) is not wandering. Cleared once
  the resident is seen inside again.
- Out of bed: every bed mat released inside the night window and none occupied again within
  `limit_s`. Getting up for the day (the night window ends before the limit) is not an alarm.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from typing import Final

from hub.clock import Instant
from hub.events import Event, EventKind, Incident, IncidentKind, Severity
from rules.base import ClearIncident, Decision, RaiseIncident, WakeAt
from rules.inactivity import is_sign_of_life
from rules.localtime import DailyWindow, duration_text, hhmm

OUT_OF_BED_KEY: Final = "out_of_bed"


class NightWanderingDetector:
    name = "night_wandering"

    def __init__(
        self,
        *,
        tz: dt.tzinfo,
        window: DailyWindow,
        front_doors: Iterable[str],
        labels: Mapping[str, str] | None = None,
    ) -> None:
        self._tz = tz
        self._window = window
        self._doors = frozenset(front_doors)
        self._labels = dict(labels or {})
        self._inside = True  # last sign of life was inside (not the door)
        self._open_room: str | None = None
        self._raised = False

    def on_event(self, event: Event, now: Instant) -> Sequence[Decision]:
        if not is_sign_of_life(event):
            return ()
        if event.device not in self._doors:
            self._inside = True
            if self._raised:
                self._raised = False
                where = self._labels.get(event.device, event.device)
                return (
                    ClearIncident(
                        IncidentKind.NIGHT_WANDERING,
                        self._open_room,
                        f"back inside at {hhmm(now.wall, self._tz)} ({where})",
                    ),
                )
            return ()
        was_inside, self._inside = self._inside, False
        opened = event.kind is EventKind.CONTACT and event.value is True
        if not (
            opened and was_inside and not self._raised and self._window.contains_wall(now.wall, self._tz)
        ):
            return ()
        self._raised = True
        self._open_room = event.room
        door = self._labels.get(event.device, event.device)
        return (
            RaiseIncident(
                Incident(
                    kind=IncidentKind.NIGHT_WANDERING,
                    severity=Severity.WARNING,
                    room=event.room,
                    reason=(
                        f"{door} opened at {hhmm(now.wall, self._tz)} from inside, "
                        f"at night ({self._window.text})"
                    ),
                    wall=now.wall,
                    mono=now.mono,
                    detector=self.name,
                    evidence={"device": event.device},
                )
            ),
        )

    def on_wake(self, key: str, now: Instant) -> Sequence[Decision]:
        return ()


class OutOfBedDetector:
    name = "out_of_bed"
    kinds: Final = frozenset({EventKind.PRESSURE})

    def __init__(
        self,
        *,
        tz: dt.tzinfo,
        window: DailyWindow,
        beds: Iterable[str],
        limit_s: float,
        labels: Mapping[str, str] | None = None,
    ) -> None:
        if limit_s <= 0:
            raise ValueError("the out-of-bed limit must be positive")
        self._tz = tz
        self._window = window
        self._beds = frozenset(beds)
        self._limit = limit_s
        self._labels = dict(labels or {})
        self._occupied: set[str] = set()
        self._left: Instant | None = None  # when the last mat was released at night
        self._room: str | None = None
        self._raised = False

    def on_event(self, event: Event, now: Instant) -> Sequence[Decision]:
        if event.device not in self._beds or event.kind is not EventKind.PRESSURE:
            return ()
        if not isinstance(event.value, bool):
            return ()
        self._room = event.room or self._room
        was_in_bed = bool(self._occupied)
        (self._occupied.add if event.value else self._occupied.discard)(event.device)
        if self._occupied:
            decisions: list[Decision] = [WakeAt(OUT_OF_BED_KEY, None)]
            self._left = None
            if self._raised:
                self._raised = False
                decisions.append(
                    ClearIncident(
                        IncidentKind.OUT_OF_BED, self._room, f"back in bed at {hhmm(now.wall, self._tz)}"
                    )
                )
            return decisions
        if was_in_bed and self._window.contains_wall(now.wall, self._tz):
            self._left = now
            return (WakeAt(OUT_OF_BED_KEY, now.mono + self._limit),)
        return ()

    def on_wake(self, key: str, now: Instant) -> Sequence[Decision]:
        left = self._left
        if key != OUT_OF_BED_KEY or left is None or self._occupied or self._raised:
            return ()
        self._left = None
        if not self._window.contains_wall(now.wall, self._tz):
            return ()  # the night ended meanwhile: up for the day
        self._raised = True
        return (
            RaiseIncident(
                Incident(
                    kind=IncidentKind.OUT_OF_BED,
                    severity=Severity.WARNING,
                    room=self._room,
                    reason=(
                        f"out of bed since {hhmm(left.wall, self._tz)} and not back within "
                        f"{duration_text(self._limit)}, at night ({self._window.text})"
                    ),
                    wall=now.wall,
                    mono=now.mono,
                    detector=self.name,
                    evidence={"left_wall": left.wall, "limit_s": self._limit},
                )
            ),
        )
