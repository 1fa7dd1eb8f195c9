"""Appliance left on: a plug or appliance is on and nobody has been near it for too long.

"On" is an APPLIANCE edge or a POWER reading above `on_watts` (off again below half of it, so a
kettle hovering at the threshold does not flap). "Near" is any sign of life in the appliance's
room; an appliance without a room counts activity anywhere. Periodic power reports while on do
not restart the clock: only someone in the room does.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Final

from hub.clock import Instant
from hub.events import Event, EventKind, Incident, IncidentKind, Severity
from rules.base import ClearIncident, Decision, RaiseIncident, WakeAt
from rules.localtime import duration_text, hhmm

KEY_PREFIX: Final = "appliance:"


@dataclasses.dataclass(slots=True)
class _On:
    since: Instant
    near: Instant  # the last sign of life in its room (or the switching on)
    raised: bool = False


class ApplianceOnDetector:
    name = "appliance_on"

    def __init__(
        self,
        *,
        tz: dt.tzinfo,
        appliances: Mapping[str, str | None],
        limit_s: float,
        on_watts: float = 10.0,
        labels: Mapping[str, str] | None = None,
    ) -> None:
        if limit_s <= 0 or on_watts <= 0:
            raise ValueError("the limit and the on threshold must be positive")
        self._tz = tz
        self._rooms = dict(appliances)  # device -> room
        self._limit = limit_s
        self._on_watts = on_watts
        self._labels = dict(labels or {})
        self._on: dict[str, _On] = {}

    def on_event(self, event: Event, now: Instant) -> Sequence[Decision]:
        decisions: list[Decision] = []
        if event.device in self._rooms:
            state = self._switched(event)
            if state is True and event.device not in self._on:
                self._on[event.device] = _On(now, now)
                decisions.append(WakeAt(KEY_PREFIX + event.device, now.mono + self._limit))
            elif state is False and event.device in self._on:
                was = self._on.pop(event.device)
                decisions.append(WakeAt(KEY_PREFIX + event.device, None))
                if was.raised:
                    decisions.append(
                        ClearIncident(
                            IncidentKind.APPLIANCE_ON,
                            self._rooms[event.device],
                            f"{self._label(event.device)} off at {hhmm(now.wall, self._tz)}",
                        )
                    )
            return decisions
        if not event.is_activity:
            return ()
        for device, on in self._on.items():
            room = self._rooms[device]
            if not on.raised and (room is None or room == event.room):
                on.near = now
                decisions.append(WakeAt(KEY_PREFIX + device, now.mono + self._limit))
        return decisions

    def on_wake(self, key: str, now: Instant) -> Sequence[Decision]:
        device = key.removeprefix(KEY_PREFIX)
        on = self._on.get(device)
        if not key.startswith(KEY_PREFIX) or on is None or on.raised:
            return ()
        on.raised = True
        room = self._rooms[device]
        where = f"in the {room}" if room else "anywhere"
        return (
            RaiseIncident(
                Incident(
                    kind=IncidentKind.APPLIANCE_ON,
                    severity=Severity.WARNING,
                    room=room,
                    reason=(
                        f"{self._label(device)} on since {hhmm(on.since.wall, self._tz)}, "
                        f"no activity {where} for {duration_text(now.mono - on.near.mono)}"
                    ),
                    wall=now.wall,
                    mono=now.mono,
                    detector=self.name,
                    evidence={"device": device, "since_wall": on.since.wall},
                )
            ),
        )

    def _switched(self, event: Event) -> bool | None:
        """True: now on; False: now off; None: no change to judge."""
        if event.kind is EventKind.APPLIANCE and isinstance(event.value, bool):
            return event.value
        if (
            event.kind is EventKind.POWER
            and isinstance(event.value, int | float)
            and not isinstance(event.value, bool)
        ):
            if event.value > self._on_watts:
                return True
            if event.value < self._on_watts / 2:
                return False
        return None

    def _label(self, device: str) -> str:
        return self._labels.get(device, device)
