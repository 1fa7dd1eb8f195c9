"""Too hot or too cold for too long: heat and cold endanger seniors, who often do not feel them.

Per sensor: a reading at or above `too_hot` (at or below `too_cold`) starts a clock; one back
inside the limits by `hysteresis` stops it, so a room hovering at the limit neither alarms on a
single reading nor flaps. Readings that stop altogether are the device-health rule's business.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from collections.abc import Mapping, Sequence
from typing import Final

from hub.clock import Instant
from hub.events import Event, EventKind, Incident, IncidentKind, Severity
from rules.base import ClearIncident, Decision, RaiseIncident, WakeAt
from rules.localtime import duration_text, hhmm


@dataclasses.dataclass(slots=True)
class _Spell:
    since: Instant
    latest: float
    raised: bool = False


_HOT: Final = "hot"
_COLD: Final = "cold"


class ClimateDetector:
    name = "climate"
    kinds: Final = frozenset({EventKind.TEMPERATURE})

    def __init__(
        self,
        *,
        tz: dt.tzinfo,
        too_hot: float,
        too_cold: float,
        for_s: float,
        hysteresis: float = 0.5,
        labels: Mapping[str, str] | None = None,
    ) -> None:
        if not too_cold < too_hot:
            raise ValueError("too_cold must lie below too_hot")
        if for_s < 0 or hysteresis < 0:
            raise ValueError("durations and the hysteresis cannot be negative")
        self._tz = tz
        self._hot = too_hot
        self._cold = too_cold
        self._for = for_s
        self._hysteresis = hysteresis
        self._labels = dict(labels or {})
        self._spells: dict[tuple[str, str], _Spell] = {}
        self._rooms: dict[str, str | None] = {}

    def on_event(self, event: Event, now: Instant) -> Sequence[Decision]:
        if event.kind is not EventKind.TEMPERATURE or isinstance(event.value, bool):
            return ()
        if not isinstance(event.value, int | float) or not math.isfinite(event.value):
            return ()  # bad input is rejected, never fatal
        celsius = float(event.value)
        self._rooms[event.device] = event.room
        decisions: list[Decision] = []
        for which, beyond, back in (
            (_HOT, celsius >= self._hot, celsius < self._hot - self._hysteresis),
            (_COLD, celsius <= self._cold, celsius > self._cold + self._hysteresis),
        ):
            key = (event.device, which)
            spell = self._spells.get(key)
            if beyond and spell is None:
                self._spells[key] = _Spell(now, celsius)
                decisions.append(WakeAt(f"{which}:{event.device}", now.mono + self._for))
            elif spell is not None and back:
                del self._spells[key]
                decisions.append(WakeAt(f"{which}:{event.device}", None))
                if spell.raised:
                    decisions.append(
                        ClearIncident(
                            _KINDS[which],
                            event.room,
                            f"back to {celsius:.1f} °C {self._where(event.device)} "
                            f"at {hhmm(now.wall, self._tz)}",
                        )
                    )
            elif spell is not None:
                spell.latest = celsius
        return decisions

    def on_wake(self, key: str, now: Instant) -> Sequence[Decision]:
        which, _, device = key.partition(":")
        spell = self._spells.get((device, which))
        if spell is None or spell.raised:
            return ()
        spell.raised = True
        limit = self._hot if which == _HOT else self._cold
        side = "above" if which == _HOT else "below"
        return (
            RaiseIncident(
                Incident(
                    kind=_KINDS[which],
                    severity=Severity.WARNING,
                    room=self._rooms.get(device),
                    reason=(
                        f"{spell.latest:.1f} °C {self._where(device)}, {side} {limit:g} °C since "
                        f"{hhmm(spell.since.wall, self._tz)} ({duration_text(now.mono - spell.since.mono)})"
                    ),
                    wall=now.wall,
                    mono=now.mono,
                    detector=self.name,
                    evidence={"device": device, "celsius": spell.latest, "limit": limit},
                )
            ),
        )

    def _where(self, device: str) -> str:
        room = self._rooms.get(device)
        return f"in the {room}" if room else f"at the {self._labels.get(device, device)}"


_KINDS: Final = {_HOT: IncidentKind.TOO_HOT, _COLD: IncidentKind.TOO_COLD}
