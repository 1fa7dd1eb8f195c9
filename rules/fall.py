"""Falls: streamed acceleration judged by `FallCore`, and falls or help calls devices report.

- ACCELERATION events carry one sample `(x, y, z)` in g, or a window of samples flattened to
  `(x1, y1, z1, x2, ...)` whose last sample is at the event's time. Each device gets its own
  `FallCore` at its configured sample rate (default 50 Hz); a gap in its stream or the device
  going offline starts it afresh, so a stale posture never judges new samples.
- FALL_REPORTED (a radar's `fall_down_status`, the pendant's own fall event) and HELP (kiosk,
  pendant or wall button) raise a critical incident directly.

One fall is one incident: evidence of the same kind from the same device within `refractory_s`
of its previous evidence (a radar that keeps reporting, a resident pressing help again and again,
a pendant reporting the fall its stream also shows) belongs to the incident already raised.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence
from typing import Final
from zoneinfo import ZoneInfo

from hub.clock import Instant
from hub.events import Event, EventKind, Incident, IncidentKind, Severity, Value
from rules.base import Decision, RaiseIncident
from rules.fallcore import FALL_HARD, FALL_LYING, FallCore

DEFAULT_RATE_HZ = 50.0
DEFAULT_REFRACTORY_S = 60.0
# A stream that pauses longer than this (plus the expected sample spacing) is judged afresh.
DEFAULT_GAP_S = 1.0

_HOW = {FALL_LYING: "lying", FALL_HARD: "hard impact"}
_STILL = {FALL_LYING: "lying still", FALL_HARD: "still"}


class FallDetector:
    name = "fall"
    kinds: Final = frozenset(
        {EventKind.ACCELERATION, EventKind.FALL_REPORTED, EventKind.HELP, EventKind.AVAILABILITY}
    )

    def __init__(
        self,
        *,
        rates_hz: Mapping[str, float] | None = None,
        default_rate_hz: float = DEFAULT_RATE_HZ,
        refractory_s: float = DEFAULT_REFRACTORY_S,
        gap_s: float = DEFAULT_GAP_S,
        tz: dt.tzinfo | None = None,
        streams: bool = True,
    ) -> None:
        FallCore(default_rate_hz)  # refuses an impossible rate now, not at the first sample
        self._rates = dict(rates_hz or {})
        self._default_rate = default_rate_hz
        self._refractory = refractory_s
        self._gap = gap_s
        self._tz = tz if tz is not None else ZoneInfo("Europe/Berlin")
        self._cores = {device: FallCore(rate) for device, rate in self._rates.items()}
        self._last_sample: dict[str, float] = {}  # device -> mono of its last sample
        self._last_evidence: dict[tuple[str, IncidentKind], float] = {}
        self.rejected = 0  # malformed acceleration values ignored (bad input is never fatal)
        # Off when the flat disabled fall detection from motion; help calls and falls that a
        # device reports itself still raise incidents.
        self._streams = streams

    def on_event(self, event: Event, now: Instant) -> Sequence[Decision]:
        if event.kind is EventKind.ACCELERATION:
            return self._acceleration(event, now) if self._streams else ()
        if event.kind is EventKind.FALL_REPORTED and event.value is True:
            return self._raise(
                event,
                now,
                IncidentKind.FALL,
                f"fall reported by {_where(event)}",
                {"device": event.device, "source": event.source},
            )
        if event.kind is EventKind.HELP and event.value not in (None, False):
            via = event.value if isinstance(event.value, str) and event.value else "a button"
            return self._raise(
                event,
                now,
                IncidentKind.HELP,
                f"help requested via {via} ({_where(event)})",
                {"device": event.device, "source": str(event.value)},
            )
        if event.kind is EventKind.AVAILABILITY and event.value is False:
            self._forget_stream(event.device)
        return ()

    def on_wake(self, key: str, now: Instant) -> Sequence[Decision]:
        return ()

    def _acceleration(self, event: Event, now: Instant) -> Sequence[Decision]:
        samples = _samples(event.value)
        if samples is None:
            self.rejected += 1
            return ()
        device = event.device
        core = self._cores.get(device)
        if core is None:
            core = self._cores[device] = FallCore(self._rates.get(device, self._default_rate))
        spacing = 1.0 / core.rate_hz
        last = self._last_sample.get(device)
        if last is not None:
            # Time since the previous event beyond what these samples span: a pause (or a replay
            # that started over) means the posture remembered no longer belongs to this stream.
            pause = event.mono - last - len(samples) * spacing
            if event.mono < last or pause > self._gap:
                core.reset()
        self._last_sample[device] = event.mono
        decisions: list[Decision] = []
        for index, (x, y, z) in enumerate(samples):
            code = core.update(x, y, z)
            if not code:
                continue
            behind = (len(samples) - 1 - index) * spacing + core.since_impact_s
            impact_wall = event.wall - behind
            since = dt.datetime.fromtimestamp(impact_wall, self._tz).strftime("%H:%M:%S")
            decisions.extend(
                self._raise(
                    event,
                    now,
                    IncidentKind.FALL,
                    f"fall detected by {_where(event)}: impact {core.impact_g:.1f} g, "
                    f"body turned {core.angle_deg:.0f}°, {_STILL[code]} since {since}",
                    {
                        "device": event.device,
                        "source": "accelerometer",
                        "pattern": _HOW[code],
                        "impact_g": round(core.impact_g, 2),
                        "turn_deg": round(core.angle_deg, 1),
                        "impact_wall": round(impact_wall, 3),
                    },
                )
            )
        return decisions

    def _raise(
        self,
        event: Event,
        now: Instant,
        kind: IncidentKind,
        reason: str,
        evidence: Mapping[str, Value],
    ) -> Sequence[Decision]:
        key = (event.device, kind)
        previous = self._last_evidence.get(key)
        self._last_evidence[key] = now.mono
        if previous is not None and 0.0 <= now.mono - previous < self._refractory:
            return ()
        return (
            RaiseIncident(
                Incident(
                    kind=kind,
                    severity=Severity.CRITICAL,
                    room=event.room,
                    reason=reason,
                    wall=now.wall,
                    mono=now.mono,
                    detector=self.name,
                    evidence=dict(evidence),
                )
            ),
        )

    def _forget_stream(self, device: str) -> None:
        core = self._cores.get(device)
        if core is not None:
            core.reset()
        self._last_sample.pop(device, None)


def _where(event: Event) -> str:
    return f"{event.device} in the {event.room}" if event.room else event.device


def _samples(value: Value) -> list[tuple[float, float, float]] | None:
    """(x, y, z) samples from one sample or a flattened window; None if malformed."""
    if not isinstance(value, tuple) or not value or len(value) % 3:
        return None
    numbers: list[float] = []
    for v in value:
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            return None
        numbers.append(float(v))
    return [(numbers[i], numbers[i + 1], numbers[i + 2]) for i in range(0, len(numbers), 3)]
