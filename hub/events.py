"""The one typed value that crosses every boundary: sensor adapters in, rules and store out.

Every event names its device and room and carries both clocks: `wall` (seconds since the epoch,
UTC; for people and records) and `mono` (the hub clock's monotonic seconds; for timers, because a
Pi without RTC jumps its wall clock at boot and on NTP sync).
"""

from __future__ import annotations

import dataclasses
import enum
import os
import time
from collections.abc import Mapping
from typing import Final, TypeAlias

# An accelerometer sample is (x, y, z) in g; everything else is a scalar or a word.
Value: TypeAlias = bool | int | float | str | tuple[float, ...] | None


class EventKind(enum.StrEnum):
    """What happened. The value's meaning is fixed per kind (see `VALUE_MEANING`)."""

    MOTION = "motion"
    CONTACT = "contact"
    PRESSURE = "pressure"
    APPLIANCE = "appliance"
    POWER = "power"
    FLUSH = "flush"
    BUTTON = "button"
    HELP = "help"
    RESIDENT_OK = "resident_ok"
    CHECKIN = "checkin"
    FALL_REPORTED = "fall_reported"
    ACCELERATION = "acceleration"
    TEMPERATURE = "temperature"
    HUMIDITY = "humidity"
    ILLUMINANCE = "illuminance"
    WATER_LEAK = "water_leak"
    SMOKE = "smoke"
    BATTERY = "battery"
    AVAILABILITY = "availability"
    ACK = "ack"


VALUE_MEANING: Final[Mapping[EventKind, str]] = {
    EventKind.MOTION: "True while motion/presence is sensed",
    EventKind.CONTACT: "True while open",
    EventKind.PRESSURE: "True while the mat (bed, chair) is occupied",
    EventKind.APPLIANCE: "True while the appliance or plug is on",
    EventKind.POWER: "watts drawn",
    EventKind.FLUSH: "True when flushed",
    EventKind.BUTTON: "the action: single, double, long, ...",
    EventKind.HELP: "the source: kiosk, pendant, button",
    EventKind.RESIDENT_OK: "the source: kiosk, button, voice",
    EventKind.CHECKIN: "the source: kiosk, button",
    EventKind.FALL_REPORTED: "True when the device reports a fall",
    EventKind.ACCELERATION: "(x, y, z) in g",
    EventKind.TEMPERATURE: "degrees Celsius",
    EventKind.HUMIDITY: "percent relative humidity",
    EventKind.ILLUMINANCE: "lux",
    EventKind.WATER_LEAK: "True while water is sensed",
    EventKind.SMOKE: "True while smoke is sensed",
    EventKind.BATTERY: "percent 0..100",
    EventKind.AVAILABILITY: "True when online, False when the device or link went away",
    EventKind.ACK: "the incident id acknowledged",
}

# Kinds that show a person is up and about in a room (for inactivity and the activity picture).
ACTIVITY_KINDS: Final[frozenset[EventKind]] = frozenset(
    {
        EventKind.MOTION,
        EventKind.CONTACT,
        EventKind.PRESSURE,
        EventKind.APPLIANCE,
        EventKind.FLUSH,
        EventKind.BUTTON,
        EventKind.HELP,
        EventKind.RESIDENT_OK,
        EventKind.CHECKIN,
    }
)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    kind: EventKind
    device: str
    room: str | None
    value: Value
    wall: float
    mono: float
    source: str = "unknown"

    @property
    def is_activity(self) -> bool:
        """A sign of life: an ON edge of a sensor that only a person triggers."""
        if self.kind not in ACTIVITY_KINDS:
            return False
        return self.value is not False and self.value is not None


class Severity(enum.IntEnum):
    INFO = 10
    WARNING = 20
    CRITICAL = 30


class IncidentKind(enum.StrEnum):
    FALL = "fall"
    HELP = "help"
    INACTIVITY = "inactivity"
    CHECKIN_MISSED = "checkin_missed"
    NIGHT_WANDERING = "night_wandering"
    OUT_OF_BED = "out_of_bed"
    BATHROOM_STAY = "bathroom_stay"
    APPLIANCE_ON = "appliance_on"
    WATER_LEAK = "water_leak"
    SMOKE = "smoke"
    TOO_HOT = "too_hot"
    TOO_COLD = "too_cold"
    DEGRADED_SAFETY = "degraded_safety"


def new_incident_id() -> str:
    """32 hex digits like a UUID, but time-ordered (milliseconds, then 80 random bits, as in
    UUIDv7): new rows land at the end of the primary-key B-trees instead of at random pages."""
    return f"{time.time_ns() // 1_000_000:012x}{os.urandom(10).hex()}"


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Incident:
    """What a detector raises. `reason` is the one line a caregiver reads first."""

    kind: IncidentKind
    severity: Severity
    room: str | None
    reason: str
    wall: float
    mono: float
    detector: str
    evidence: Mapping[str, Value] = dataclasses.field(default_factory=dict)
    id: str = dataclasses.field(default_factory=new_incident_id)
