"""Device health as a safety function: a dead sensor is not a quiet resident.

A device or radio link that goes away, a battery running low, or a device that falls silent for
much longer than it ever did raises a DEGRADED_SAFETY incident naming what no longer protects
the resident: "bathroom motion sensor offline since 14:02: bathroom-stay and inactivity rules
are degraded". It clears when the device reports again (or gets a fresh battery).

- Offline: an AVAILABILITY False for the device, or for `link:<adapter>` (every device behind
  that radio or broker at once; one incident for the link, not one per device).
- Silent: the learned reporting interval. Only periodic reports teach it (battery, temperature,
  humidity, illuminance, power, "online"): a motion sensor that reports only motion is silent
  whenever the flat is quiet, and must not be called dead for it. A device is silent once it
  has said nothing for `gap_factor` times the longest of its recent report gaps (clamped to
  `min_timeout_s`..`max_timeout_s`), after `min_gaps` gaps; a fixed `offline_after_s` from the
  config applies to every device that has reported at all.
- Battery: at or below `battery_low` percent; cleared above it plus `battery_hysteresis`.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

from hub.clock import Instant
from hub.events import Event, EventKind, Incident, IncidentKind, Severity
from rules.base import ClearIncident, Decision, RaiseIncident, WakeAt
from rules.localtime import hhmm

KEY_PREFIX: Final = "silent:"
STATE_VERSION: Final = 1
_HEARTBEATS: Final = frozenset(
    {
        EventKind.BATTERY,
        EventKind.TEMPERATURE,
        EventKind.HUMIDITY,
        EventKind.ILLUMINANCE,
        EventKind.POWER,
        EventKind.AVAILABILITY,
    }
)


@dataclasses.dataclass(frozen=True, slots=True)
class DeviceInfo:
    label: str  # "bathroom motion sensor"
    room: str | None = None
    protects: tuple[str, ...] = ()  # rule names that depend on it: ("bathroom-stay", "inactivity")


@dataclasses.dataclass(slots=True)
class _Health:
    last_seen: float | None = None  # mono of any report
    last_heartbeat: float | None = None  # mono of the last periodic report
    gaps: collections.deque[float] = dataclasses.field(default_factory=lambda: collections.deque(maxlen=48))
    offline_since: float | None = None  # wall; explicit or silent
    silent: bool = False
    battery_low: bool = False
    unheard: bool = False  # not heard of since the hub started (its rhythm known from before)


def _rules_text(rules: Sequence[str]) -> str:
    if not rules:
        return "no rule depends on it"
    names = sorted(set(rules))
    joined = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
    return f"{joined} {'rule is' if len(names) == 1 else 'rules are'} degraded"


class DeviceHealthDetector:
    name = "device_health"

    def __init__(
        self,
        *,
        tz: dt.tzinfo,
        devices: Mapping[str, DeviceInfo],
        links: Mapping[str, Iterable[str]] | None = None,
        battery_low: float = 15.0,
        battery_hysteresis: float = 5.0,
        offline_after_s: float | None = None,
        gap_factor: float = 2.5,
        min_gaps: int = 4,
        min_timeout_s: float = 10 * 60.0,
        max_timeout_s: float = 24 * 3600.0,
    ) -> None:
        self._tz = tz
        self._devices = dict(devices)
        self._links = {name: frozenset(members) for name, members in (links or {}).items()}
        self._battery_low = battery_low
        self._battery_hysteresis = battery_hysteresis
        self._offline_after = offline_after_s
        self._gap_factor = gap_factor
        self._min_gaps = min_gaps
        self._min_timeout = min_timeout_s
        self._max_timeout = max_timeout_s
        self._health: dict[str, _Health] = {}
        self._links_down: dict[str, float] = {}  # link -> wall since

    # -- the detector contract ---------------------------------------------------------------

    def on_event(self, event: Event, now: Instant) -> Sequence[Decision]:
        if event.device in self._links or event.device.startswith("link:"):
            return self._link(event, now)
        health = self._health.setdefault(event.device, _Health())
        decisions: list[Decision] = []
        if event.kind is EventKind.AVAILABILITY and event.value is False:
            if health.offline_since is None:
                health.offline_since = now.wall
                decisions.append(RaiseIncident(self._offline_incident(event.device, now, silent=False)))
            decisions.append(WakeAt(KEY_PREFIX + event.device, None))
            return decisions
        # Any report is a sign the device lives.
        if (
            event.kind in _HEARTBEATS
            and health.last_heartbeat is not None
            and now.mono > health.last_heartbeat
        ):
            health.gaps.append(now.mono - health.last_heartbeat)
        if event.kind in _HEARTBEATS:
            health.last_heartbeat = now.mono
        health.last_seen = now.mono
        health.unheard = False
        if health.offline_since is not None:
            health.offline_since = None
            health.silent = False
            decisions.extend(self._clear(event.device, f"back online at {hhmm(now.wall, self._tz)}"))
        if event.kind is EventKind.BATTERY:
            decisions.extend(self._battery(event, health, now))
        timeout = self.timeout(event.device)
        if timeout is not None:
            decisions.append(WakeAt(KEY_PREFIX + event.device, now.mono + timeout))
        return decisions

    def on_start(self, now: Instant) -> Sequence[Decision]:
        """After a restart, a device whose rhythm was learned must report within its usual time
        from now: one that died while the hub was down is found then, not only after the
        radio's cautious default (hours)."""
        decisions: list[Decision] = []
        for device, health in self._health.items():
            timeout = self.timeout(device)
            if device not in self._devices or timeout is None or health.last_seen is not None:
                continue  # only configured devices: one removed since is not expected back
            health.last_seen = now.mono
            health.unheard = True
            decisions.append(WakeAt(KEY_PREFIX + device, now.mono + timeout))
        return decisions

    def on_wake(self, key: str, now: Instant) -> Sequence[Decision]:
        device = key.removeprefix(KEY_PREFIX)
        health = self._health.get(device)
        if not key.startswith(KEY_PREFIX) or health is None or health.offline_since is not None:
            return ()
        timeout = self.timeout(device)
        if health.last_seen is None or timeout is None or now.mono - health.last_seen < timeout:
            return ()
        # Offline since it was last heard of, which is what a caregiver needs to know.
        health.offline_since = now.wall - (now.mono - health.last_seen)
        health.silent = True
        return (RaiseIncident(self._offline_incident(device, now, silent=True)),)

    # -- learned intervals -------------------------------------------------------------------

    def timeout(self, device: str) -> float | None:
        """How long `device` may stay silent before it counts as offline (None: never judged)."""
        health = self._health.get(device)
        if health is None:
            return None
        if self._offline_after is not None:
            return self._offline_after
        if len(health.gaps) < self._min_gaps:
            return None
        return min(self._max_timeout, max(self._min_timeout, self._gap_factor * max(health.gaps)))

    def snapshot(self) -> dict[str, Any]:
        """Learned report gaps per configured device, as plain JSON data."""
        return {
            "version": STATE_VERSION,
            "gaps": {
                device: list(h.gaps)
                for device, h in sorted(self._health.items())
                if h.gaps and device in self._devices
            },
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        if not isinstance(state, Mapping) or state.get("version") != STATE_VERSION:
            raise ValueError(f"not a device-health state of version {STATE_VERSION}")
        try:
            gaps = {str(device): [float(g) for g in values] for device, values in state["gaps"].items()}
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise ValueError(f"damaged device-health state: {err!r}") from err
        if any(not (math.isfinite(g) and g > 0) for values in gaps.values() for g in values):
            raise ValueError("damaged device-health state: a gap out of range")
        for device, values in gaps.items():
            health = self._health.setdefault(device, _Health())
            health.gaps.clear()
            health.gaps.extend(values)

    # -- parts -------------------------------------------------------------------------------

    def _link(self, event: Event, now: Instant) -> Sequence[Decision]:
        if event.kind is not EventKind.AVAILABILITY or not isinstance(event.value, bool):
            return ()
        link = event.device
        if event.value is False and link not in self._links_down:
            self._links_down[link] = now.wall
            members = sorted(self._links.get(link, ()))
            rules = [rule for m in members for rule in self._info(m).protects]
            what = f"{len(members)} devices unreachable" if members else "its devices unreachable"
            return (
                RaiseIncident(
                    Incident(
                        kind=IncidentKind.DEGRADED_SAFETY,
                        severity=Severity.CRITICAL if rules else Severity.WARNING,
                        room=None,
                        reason=(
                            f"{link.removeprefix('link:')} radio link down since {hhmm(now.wall, self._tz)}, "
                            f"{what}: {_rules_text(rules)}"
                        ),
                        wall=now.wall,
                        mono=now.mono,
                        detector=self.name,
                        evidence={"link": link, "devices": ", ".join(members)},
                    )
                ),
            )
        if event.value is True and link in self._links_down:
            del self._links_down[link]
            name = link.removeprefix("link:")
            return (
                ClearIncident(
                    IncidentKind.DEGRADED_SAFETY,
                    None,
                    f"{name} radio link back at {hhmm(now.wall, self._tz)}",
                ),
            )
        return ()

    def _battery(self, event: Event, health: _Health, now: Instant) -> list[Decision]:
        value = event.value
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            return []
        info = self._info(event.device)
        if value <= self._battery_low and not health.battery_low:
            health.battery_low = True
            return [
                RaiseIncident(
                    Incident(
                        kind=IncidentKind.DEGRADED_SAFETY,
                        severity=Severity.WARNING,
                        room=info.room,
                        reason=(
                            f"{info.label} battery at {value:.0f}% (low at {self._battery_low:g}%): "
                            + self._replace_text(info)
                        ),
                        wall=now.wall,
                        mono=now.mono,
                        detector=self.name,
                        evidence={"device": event.device, "battery": float(value)},
                    )
                )
            ]
        if value > self._battery_low + self._battery_hysteresis and health.battery_low:
            health.battery_low = False
            return [*self._clear(event.device, f"battery at {value:.0f}%")]
        return []

    @staticmethod
    def _replace_text(info: DeviceInfo) -> str:
        if not info.protects:
            return "replace it soon"
        return "replace it before the " + _rules_text(info.protects).replace(" degraded", " blind")

    def _offline_incident(self, device: str, now: Instant, *, silent: bool) -> Incident:
        info = self._info(device)
        health = self._health[device]
        since = health.offline_since if health.offline_since is not None else now.wall
        if silent and health.unheard:
            how = f"not heard from since the hub started at {hhmm(since, self._tz)}"
        else:
            how = f"{'silent' if silent else 'offline'} since {hhmm(since, self._tz)}"
        return Incident(
            kind=IncidentKind.DEGRADED_SAFETY,
            severity=Severity.CRITICAL if info.protects else Severity.WARNING,
            room=info.room,
            reason=f"{info.label} {how}: {_rules_text(info.protects)}",
            wall=now.wall,
            mono=now.mono,
            detector=self.name,
            evidence={"device": device, "silent": silent},
        )

    def _clear(self, device: str, what: str) -> list[ClearIncident]:
        """Clear the room's degraded safety, unless another device there still degrades it
        (a clear names a kind and a room, not a device)."""
        info = self._info(device)
        for other, health in self._health.items():
            degrading = health.offline_since is not None or health.battery_low
            if other != device and degrading and self._info(other).room == info.room:
                return []
        return [ClearIncident(IncidentKind.DEGRADED_SAFETY, info.room, f"{info.label} {what}")]

    def _info(self, device: str) -> DeviceInfo:
        return self._devices.get(device) or DeviceInfo(label=device)
