"""Config -> detectors: the one place that knows both `hub.config` and `rules/`.

Detectors take plain parameters (device ids by role, kind and room, windows in minutes of the
day, limits in seconds, the flat's time zone) and never import the config: `rules/` stays pure.
A rule whose devices the flat does not have is not built (and `build_detectors` logs why), so
"the flat has no bed mat" is visible instead of a rule that silently never fires.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Final

from hub.config import DeviceConfig, DeviceKind, DeviceRole, HubConfig
from rules.appliance import ApplianceOnDetector
from rules.base import Detector
from rules.bathroom import BathroomStayDetector
from rules.checkin import CheckinDetector
from rules.climate import ClimateDetector
from rules.device_health import DeviceHealthDetector, DeviceInfo
from rules.hazards import HazardDetector
from rules.inactivity import FixedLimit, InactivityDetector
from rules.localtime import DailyWindow
from rules.night import NightWanderingDetector, OutOfBedDetector

log = logging.getLogger(__name__)

# Device kinds whose events are signs of life: what inactivity is judged on.
ACTIVITY_KINDS: Final = frozenset(
    {
        DeviceKind.MOTION,
        DeviceKind.PRESENCE,
        DeviceKind.CONTACT,
        DeviceKind.PRESSURE_MAT,
        DeviceKind.FLUSH,
        DeviceKind.BUTTON,
        DeviceKind.APPLIANCE,
        DeviceKind.PLUG,
        DeviceKind.RADAR,
    }
)
# Kinds that tell someone is *in* a room (a door contact only tells someone passed it).
PRESENCE_KINDS: Final = frozenset({DeviceKind.MOTION, DeviceKind.PRESENCE, DeviceKind.RADAR})
_BATHROOM_WORDS: Final = ("bath", "bad", "wc", "toilet", "dusch", "shower")
_BEDROOM_WORDS: Final = ("bed", "schlaf", "sleep")

# Rule names as reasons print them ("bathroom-stay and inactivity rules are degraded").
INACTIVITY, BATHROOM, NIGHT, OUT_OF_BED, APPLIANCE, CLIMATE, CHECKIN, FALL = (
    "inactivity",
    "bathroom-stay",
    "night-wandering",
    "out-of-bed",
    "appliance-on",
    "climate",
    "check-in",
    "fall",
)


def build_detectors(config: HubConfig) -> list[Detector]:
    """Every detector this flat's config and devices call for, in a fixed order."""
    detectors: list[Detector] = [HazardDetector()]
    detectors += _falls(config)
    detectors += _inactivity(config)
    detectors += _checkin(config)
    detectors += _night(config)
    detectors += _out_of_bed(config)
    detectors += _bathroom(config)
    detectors += _appliance(config)
    detectors += _climate(config)
    detectors += _device_health(config)
    return detectors


# -- one builder per rule ---------------------------------------------------------------------


def _falls(config: HubConfig) -> list[Detector]:
    from rules.fall import FallDetector

    # Always present: it also turns help buttons, the kiosk's "Hilfe" and falls a device reports
    # itself into incidents. `rules.fall.enabled` switches only detection from acceleration.
    rates = {d.id: d.sample_rate_hz for d in config.devices if d.sample_rate_hz}
    return [FallDetector(rates_hz=rates, tz=config.tz, streams=config.rules.fall.enabled)]


def _inactivity(config: HubConfig) -> list[Detector]:
    if not config.rules.inactivity.enabled:
        return []
    return [InactivityDetector(**inactivity_params(config))]


def inactivity_params(config: HubConfig) -> dict[str, Any]:
    """The inactivity rule's parameters for this flat (the evaluation varies them from here)."""
    rule = config.rules.inactivity
    return {
        "tz": config.tz,
        "activity_devices": [d.id for d in config.devices if d.kind in ACTIVITY_KINDS],
        "front_doors": _with_role(config, DeviceRole.FRONT_DOOR),
        "beds": _with_role(config, DeviceRole.BED),
        "seats": _with_role(config, DeviceRole.SEAT),
        "bedrooms": bedrooms(config),
        "labels": device_labels(config),
        "links": links(config),
        "fixed": [FixedLimit(DailyWindow(f.from_.minute, f.to.minute), f.limit.seconds) for f in rule.fixed],
        "learned": rule.learned.enabled,
        "min_days": rule.learned.min_days,
    }


def _checkin(config: HubConfig) -> list[Detector]:
    rule = config.rules.checkin
    if not rule.enabled or rule.window is None:
        return []
    start, end = rule.window
    if start == end:
        log.warning("check-in rule off: its window starts and ends at the same time")
        return []
    return [
        CheckinDetector(
            tz=config.tz,
            window=DailyWindow(start.minute, end.minute),
            holidays=rule.holidays,
            buttons=_with_role(config, DeviceRole.CHECKIN_BUTTON),
        )
    ]


def _night(config: HubConfig) -> list[Detector]:
    rule = config.rules.night_wandering
    doors = _with_role(config, DeviceRole.FRONT_DOOR)
    if not rule.enabled:
        return []
    if not doors:
        log.info("night-wandering rule off: no device has the role front_door")
        return []
    return [
        NightWanderingDetector(
            tz=config.tz,
            window=DailyWindow(rule.from_.minute, rule.to.minute),
            front_doors=doors,
            labels=device_labels(config),
        )
    ]


def _out_of_bed(config: HubConfig) -> list[Detector]:
    rule = config.rules.out_of_bed
    beds = _with_role(config, DeviceRole.BED)
    if not rule.enabled:
        return []
    if not beds:
        log.info("out-of-bed rule off: no device has the role bed")
        return []
    return [
        OutOfBedDetector(
            tz=config.tz,
            window=DailyWindow(rule.from_.minute, rule.to.minute),
            beds=beds,
            limit_s=rule.limit.seconds,
            labels=device_labels(config),
        )
    ]


def _bathroom(config: HubConfig) -> list[Detector]:
    rule = config.rules.bathroom_stay
    rooms = bathrooms(config)
    if not rule.enabled:
        return []
    if not rooms:
        log.info("bathroom-stay rule off: no bathroom with a motion or presence sensor")
        return []
    return [
        BathroomStayDetector(
            tz=config.tz, bathrooms=rooms, limit_s=rule.limit.seconds, labels=device_labels(config)
        )
    ]


def _appliance(config: HubConfig) -> list[Detector]:
    rule = config.rules.appliance_on
    appliances = {d.id: d.room for d in config.devices if d.kind in {DeviceKind.PLUG, DeviceKind.APPLIANCE}}
    if not rule.enabled or not appliances:
        return []
    return [
        ApplianceOnDetector(
            tz=config.tz, appliances=appliances, limit_s=rule.limit.seconds, labels=device_labels(config)
        )
    ]


def _climate(config: HubConfig) -> list[Detector]:
    rule = config.rules.climate
    if not rule.enabled:
        return []
    return [
        ClimateDetector(
            tz=config.tz,
            too_hot=rule.too_hot,
            too_cold=rule.too_cold,
            for_s=rule.for_.seconds,
            labels=device_labels(config),
        )
    ]


def _device_health(config: HubConfig) -> list[Detector]:
    rule = config.rules.device_health
    if not rule.enabled:
        return []
    labels = device_labels(config)
    protects = dependents(config)
    devices = {
        d.id: DeviceInfo(label=labels[d.id], room=d.room, protects=tuple(protects.get(d.id, ())))
        for d in config.devices
    }
    return [
        DeviceHealthDetector(
            tz=config.tz,
            devices=devices,
            links=links(config),
            battery_low=rule.battery_low.value,
            offline_after_s=rule.offline_after.seconds if rule.offline_after is not None else None,
        )
    ]


# -- what the rules need to know about the flat -----------------------------------------------


def dependents(config: HubConfig) -> dict[str, list[str]]:
    """Device id -> the rules that lose it when it goes away (for "degraded safety" reasons)."""
    rules = config.rules
    found: dict[str, list[str]] = {d.id: [] for d in config.devices}
    baths = set(bathrooms(config))
    for device in config.devices:
        uses = found[device.id]
        if rules.inactivity.enabled and device.kind in ACTIVITY_KINDS:
            uses.append(INACTIVITY)
        if rules.bathroom_stay.enabled and device.room in baths and device.kind in PRESENCE_KINDS:
            uses.append(BATHROOM)
        if rules.night_wandering.enabled and device.role is DeviceRole.FRONT_DOOR:
            uses.append(NIGHT)
        if rules.out_of_bed.enabled and device.role is DeviceRole.BED:
            uses.append(OUT_OF_BED)
        if rules.appliance_on.enabled and device.kind in {DeviceKind.PLUG, DeviceKind.APPLIANCE}:
            uses.append(APPLIANCE)
        if rules.climate.enabled and device.kind is DeviceKind.CLIMATE:
            uses.append(CLIMATE)
        if device.kind in {DeviceKind.WATER_LEAK, DeviceKind.SMOKE}:
            uses.append("water-leak" if device.kind is DeviceKind.WATER_LEAK else "smoke")
        if rules.fall.enabled and (device.kind in {DeviceKind.PENDANT, DeviceKind.RADAR}):
            uses.append(FALL)
        if device.role is DeviceRole.HELP_BUTTON:
            uses.append("help-call")
        if rules.checkin.enabled and device.role is DeviceRole.CHECKIN_BUTTON:
            uses.append(CHECKIN)
    return found


def bathrooms(config: HubConfig) -> list[str]:
    """Rooms where a stay is judged: a bathroom (by name or toilet) with a motion/presence sensor."""
    sensed = {d.room for d in config.devices if d.kind in PRESENCE_KINDS and d.room}
    with_toilet = {d.room for d in config.devices if d.role is DeviceRole.TOILET and d.room}
    named = {room for room in config.rooms if any(word in room.lower() for word in _BATHROOM_WORDS)}
    return sorted((with_toilet | named) & sensed)


def bedrooms(config: HubConfig) -> list[str]:
    """Rooms where lying still is sleep: those with a bed mat, or named so."""
    with_bed = {d.room for d in config.devices if d.role is DeviceRole.BED and d.room}
    named = {room for room in config.rooms if any(word in room.lower() for word in _BEDROOM_WORDS)}
    return sorted(with_bed | named)


_KIND_WORDS: Final[Mapping[DeviceKind, str]] = {
    DeviceKind.MOTION: "motion sensor",
    DeviceKind.PRESENCE: "presence sensor",
    DeviceKind.CONTACT: "door contact",
    DeviceKind.PRESSURE_MAT: "pressure mat",
    DeviceKind.PLUG: "smart plug",
    DeviceKind.APPLIANCE: "appliance sensor",
    DeviceKind.FLUSH: "flush sensor",
    DeviceKind.BUTTON: "button",
    DeviceKind.PENDANT: "pendant",
    DeviceKind.WATER_LEAK: "water sensor",
    DeviceKind.SMOKE: "smoke detector",
    DeviceKind.CLIMATE: "climate sensor",
    DeviceKind.RADAR: "radar",
}
_ROLE_WORDS: Final[Mapping[DeviceRole, str]] = {
    DeviceRole.FRONT_DOOR: "front door contact",
    DeviceRole.BED: "bed mat",
    DeviceRole.SEAT: "seat mat",
    DeviceRole.TOILET: "toilet flush sensor",
    DeviceRole.HELP_BUTTON: "help button",
    DeviceRole.CHECKIN_BUTTON: "check-in button",
    DeviceRole.OK_BUTTON: "I'm-OK button",
}


def _label(device: DeviceConfig) -> str:
    """How a reason names a device: "bathroom motion sensor", with the installer's name if any."""
    what = _ROLE_WORDS[device.role] if device.role is not None else _KIND_WORDS[device.kind]
    generic = f"{device.room} {what}" if device.room else what
    return f"{generic} ({device.name})" if device.name else generic


def device_labels(config: HubConfig) -> dict[str, str]:
    labels = {d.id: _label(d) for d in config.devices}
    for link in links(config):
        labels[link] = f"{link.removeprefix('link:')} radio link"
    return labels


def links(config: HubConfig) -> dict[str, frozenset[str]]:
    """`link:<adapter>` -> the devices that reach the hub through it (all lost when it goes down)."""
    by_transport: dict[str, set[str]] = {}
    for device in config.devices:
        by_transport.setdefault(device.transport, set()).add(device.id)
    return {
        f"link:{transport}": frozenset(ids) for transport, ids in by_transport.items() if transport != "none"
    }


def _with_role(config: HubConfig, role: DeviceRole) -> list[str]:
    return [d.id for d in config.devices if d.role is role]


def coverage_advice(config: HubConfig) -> list[str]:
    """Where this flat's sensors leave the resident less protected, for the installer.

    From what the evaluation on real homes showed: a collapse on a seat mat in a room without a
    motion sensor looks like sitting still until the longest usual sit has passed (hours); a room
    with no activity sensor makes every stay there look like inactivity, so learned limits grow.
    """
    advice: list[str] = []
    moving = {
        d.room for d in config.devices if d.kind in {DeviceKind.MOTION, DeviceKind.PRESENCE, DeviceKind.RADAR}
    }
    active = {d.room for d in config.devices if d.kind in ACTIVITY_KINDS}
    for device in config.devices:
        if device.role in {DeviceRole.SEAT, DeviceRole.BED} and device.room and device.room not in moving:
            what = "on the seat" if device.role is DeviceRole.SEAT else "in bed"
            advice.append(
                f"{device.room}: a collapse {what} ({device.id}) looks like resting until the longest"
                f" usual rest there has passed; a motion or presence sensor in the {device.room}"
                " shortens that"
            )
    unsensed = [room for room in config.rooms if room not in active]
    if unsensed and active:
        advice.append(
            f"no activity sensor in: {', '.join(unsensed)}; time spent there looks like inactivity,"
            " so the learned limits grow and alarms come later"
        )
    if active and not _with_role(config, DeviceRole.FRONT_DOOR):
        advice.append(
            "no front door contact (role front_door): the inactivity rule cannot tell the resident"
            " being out from not moving"
        )
    if not any(d.role is DeviceRole.HELP_BUTTON or d.kind is DeviceKind.PENDANT for d in config.devices):
        advice.append("no help button or pendant: the resident cannot call for help except at the kiosk")
    return advice
