"""The daily check-in ("Tagestaste"): the resident presses a button or the kiosk once a day.

A check-in inside the daily window counts; if the window ends without one, CHECKIN_MISSED is
raised (on holidays nobody expects one). A late check-in clears it. The window end is a wall-clock
time of the flat, so the timer is set from the latest wall/monotonic offset and moved whenever the
wall clock jumps; when it fires, the wall clock is asked again whether the window really ended.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from typing import Final

from hub.clock import Instant
from hub.events import Event, EventKind, Incident, IncidentKind, Severity
from rules.base import ClearIncident, Decision, RaiseIncident, WakeAt
from rules.localtime import DailyWindow, hhmm, local

WAKE_KEY: Final = "checkin"
WALL_JUMP_S: Final = 120.0


class CheckinDetector:
    name = "checkin"

    def __init__(
        self,
        *,
        tz: dt.tzinfo,
        window: DailyWindow,
        holidays: Iterable[dt.date] = (),
        buttons: Iterable[str] = (),
    ) -> None:
        if window.start == window.end:
            raise ValueError("a check-in window needs a start and a different end")
        self._tz = tz
        self._window = window
        self._holidays = frozenset(holidays)
        self._buttons = frozenset(buttons)
        self._checkins: list[float] = []  # wall times, only the last day's worth kept
        self._offset: float | None = None
        self._due_wall: float | None = None  # the window end being waited for
        self._missed_day: dt.date | None = None  # the day an open CHECKIN_MISSED is about

    def on_event(self, event: Event, now: Instant) -> Sequence[Decision]:
        decisions: list[Decision] = []
        offset = now.wall - now.mono
        jumped = self._offset is not None and abs(offset - self._offset) > WALL_JUMP_S
        self._offset = offset
        if self._is_checkin(event):
            self._checkins = [w for w in self._checkins if w > now.wall - 86400] + [now.wall]
            if self._missed_day is not None:
                decisions.append(
                    ClearIncident(
                        IncidentKind.CHECKIN_MISSED, None, f"checked in at {hhmm(now.wall, self._tz)}"
                    )
                )
                self._missed_day = None
        if self._due_wall is None or jumped:
            decisions.append(self._arm(now))
        return decisions

    def on_wake(self, key: str, now: Instant) -> Sequence[Decision]:
        if key != WAKE_KEY or self._due_wall is None:
            return ()
        self._offset = now.wall - now.mono
        due = self._due_wall
        if now.wall < due - WALL_JUMP_S:
            return (self._arm(now),)  # the wall clock went back: the window has not ended yet
        decisions: list[Decision] = []
        day = local(due - 1.0, self._tz).date()
        start = due - self._window_length()
        if day not in self._holidays and not any(start <= w <= due for w in self._checkins):
            self._missed_day = day
            decisions.append(RaiseIncident(self._incident(now)))
        decisions.append(self._arm(now, after=due))
        return decisions

    def _is_checkin(self, event: Event) -> bool:
        if event.kind is EventKind.CHECKIN:
            return event.value is not False and event.value is not None
        return event.kind is EventKind.BUTTON and event.device in self._buttons and bool(event.value)

    def _arm(self, now: Instant, after: float | None = None) -> WakeAt:
        """Wait for the next window end after now (or after `after`), on the monotonic clock."""
        self._due_wall = self._window.next_end(max(now.wall, after or now.wall), self._tz)
        return WakeAt(WAKE_KEY, now.mono + (self._due_wall - now.wall))

    def _window_length(self) -> float:
        minutes = (self._window.end - self._window.start) % (24 * 60)
        return minutes * 60.0

    def _incident(self, now: Instant) -> Incident:
        return Incident(
            kind=IncidentKind.CHECKIN_MISSED,
            severity=Severity.WARNING,
            room=None,
            reason=f"no daily check-in {self._window.between} today",
            wall=now.wall,
            mono=now.mono,
            detector=self.name,
            evidence={"window": self._window.text},
        )
