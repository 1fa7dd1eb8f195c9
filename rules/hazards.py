"""Hazards a device reports itself: water on the floor, smoke. Raised at once, cleared when gone."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from hub.clock import Instant
from hub.events import Event, EventKind, Incident, IncidentKind, Severity
from rules.base import ClearIncident, Decision, RaiseIncident

_HAZARDS: Final = {
    EventKind.WATER_LEAK: (IncidentKind.WATER_LEAK, "water detected by {device}"),
    EventKind.SMOKE: (IncidentKind.SMOKE, "smoke detected by {device}"),
}


class HazardDetector:
    name = "hazards"
    kinds: Final = frozenset(_HAZARDS)

    def __init__(self) -> None:
        self._active: set[tuple[EventKind, str]] = set()

    def on_event(self, event: Event, now: Instant) -> Sequence[Decision]:
        hazard = _HAZARDS.get(event.kind)
        if hazard is None:
            return ()
        kind, reason = hazard
        key = (event.kind, event.device)
        if event.value is True and key not in self._active:
            self._active.add(key)
            where = f" in the {event.room}" if event.room else ""
            return (
                RaiseIncident(
                    Incident(
                        kind=kind,
                        severity=Severity.CRITICAL,
                        room=event.room,
                        reason=reason.format(device=event.device) + where,
                        wall=now.wall,
                        mono=now.mono,
                        detector=self.name,
                        evidence={"device": event.device},
                    )
                ),
            )
        if event.value is False and key in self._active:
            self._active.discard(key)
            return (ClearIncident(kind, event.room, f"{event.device} reports dry/clear again"),)
        return ()

    def on_wake(self, key: str, now: Instant) -> Sequence[Decision]:
        return ()
