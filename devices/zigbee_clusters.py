"""What the ZCL attributes and commands of a flat's devices mean for the hub: tables, no I/O.

`devices.zigbee` parses frames with zigpy (header, attribute records, command schemas) and hands
the plain values here. Units follow the ZCL specification:

| cluster | attribute / command | hub event |
|---|---|---|
| 0x0406 Occupancy Sensing | occupancy (bit 0) | MOTION |
| 0x0500 IAS Zone | status change notification, zone_status (alarm 1) | by kind or zone type (below) |
| 0x0006 On/Off | on_off attribute of a plug | APPLIANCE |
| 0x0006, 0x0008, 0x0005 | commands a remote sends (IKEA) | BUTTON (command name) or HELP |
| 0x0012 Multistate Input | present_value (Aqara buttons: 1 single, 2 double, 0 hold) | BUTTON |
| 0x0B04 Electrical Measurement | active_power x multiplier / divisor | POWER (W) |
| 0x0702 Metering | instantaneous_demand x multiplier / divisor (kW) | POWER (W) |
| 0x0001 Power Configuration | battery_percentage_remaining (half percent) | BATTERY (%) |
| 0x0402 Temperature | measured_value (0.01 degC) | TEMPERATURE |
| 0x0405 Relative Humidity | measured_value (0.01 %) | HUMIDITY |
| 0x0400 Illuminance | measured_value (10000 log10 lux + 1) | ILLUMINANCE (lux) |
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, Final

from hub.config import DeviceConfig, DeviceKind, DeviceRole
from hub.events import EventKind, Value

BASIC: Final = 0x0000
POWER_CONFIGURATION: Final = 0x0001
SCENES: Final = 0x0005
ON_OFF: Final = 0x0006
LEVEL: Final = 0x0008
MULTISTATE_INPUT: Final = 0x0012
ILLUMINANCE: Final = 0x0400
TEMPERATURE: Final = 0x0402
HUMIDITY: Final = 0x0405
OCCUPANCY: Final = 0x0406
IAS_ZONE: Final = 0x0500
METERING: Final = 0x0702
ELECTRICAL_MEASUREMENT: Final = 0x0B04

ZONE_STATUS_ATTR: Final = 0x0002
ALARM_1: Final = 0x0001


class BadValue(ValueError):
    """An attribute value outside what the specification allows (or its 'invalid' marker)."""


@dataclasses.dataclass(frozen=True, slots=True)
class Scale:
    """Multiplier and divisor a plug announces for its power readings (default 1/1)."""

    multiplier: float = 1.0
    divisor: float = 1.0


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadValue(f"expected an integer, got {value!r}")
    return int(value)


def _occupancy(value: Any, _: Scale) -> Value:
    return bool(_int(value) & 0x01)


def _on_off(value: Any, _: Scale) -> Value:
    if isinstance(value, bool) or (isinstance(value, int) and value in {0, 1}):
        return bool(value)
    raise BadValue(f"expected on/off, got {value!r}")


def _battery(value: Any, _: Scale) -> Value:
    raw = _int(value)
    if raw > 200:  # 0xFF: unknown
        raise BadValue(f"battery {raw} is not 0..200 half-percent")
    return raw / 2


def _centi(lo: int, hi: int, invalid: int) -> Callable[[Any, Scale], Value]:
    def convert(value: Any, _: Scale) -> Value:
        raw = _int(value)
        if raw == invalid or not lo <= raw <= hi:
            raise BadValue(f"measured value {raw} outside {lo}..{hi}")
        return round(raw / 100, 2)

    return convert


def _lux(value: Any, _: Scale) -> Value:
    raw = _int(value)
    if raw in {0xFFFF} or raw < 0:
        raise BadValue(f"illuminance {raw} invalid")
    if raw == 0:
        return 0.0
    return round(10 ** ((raw - 1) / 10000), 1)


def _watts(value: Any, scale: Scale) -> Value:
    raw = _int(value)
    if raw in {-0x8000, 0x8000}:
        raise BadValue("active power invalid")
    return round(raw * scale.multiplier / (scale.divisor or 1.0), 2)


def _demand_watts(value: Any, scale: Scale) -> Value:
    raw = _int(value)
    return round(raw * scale.multiplier / (scale.divisor or 1.0) * 1000, 2)


AQARA_CLICKS: Final[Mapping[int, str]] = {
    0: "hold",
    1: "single",
    2: "double",
    3: "triple",
    4: "quadruple",
    255: "release",
}


def _multistate(value: Any, _: Scale) -> Value:
    raw = _int(value)
    return AQARA_CLICKS.get(raw, f"state_{raw}")


Convert = Callable[[Any, Scale], Value]

# (cluster, attribute) -> (event kind, converter)
ATTRIBUTES: Final[Mapping[tuple[int, int], tuple[EventKind, Convert]]] = {
    (OCCUPANCY, 0x0000): (EventKind.MOTION, _occupancy),
    (ON_OFF, 0x0000): (EventKind.APPLIANCE, _on_off),
    (POWER_CONFIGURATION, 0x0021): (EventKind.BATTERY, _battery),
    (TEMPERATURE, 0x0000): (EventKind.TEMPERATURE, _centi(-27315, 32767, 0x8000)),
    (HUMIDITY, 0x0000): (EventKind.HUMIDITY, _centi(0, 10000, 0xFFFF)),
    (ILLUMINANCE, 0x0000): (EventKind.ILLUMINANCE, _lux),
    (ELECTRICAL_MEASUREMENT, 0x050B): (EventKind.POWER, _watts),
    (METERING, 0x0400): (EventKind.POWER, _demand_watts),
    (MULTISTATE_INPUT, 0x0055): (EventKind.BUTTON, _multistate),
}

# Attributes whose value scales the power readings: (cluster, attribute) -> field of Scale.
SCALE_ATTRIBUTES: Final[Mapping[tuple[int, int], str]] = {
    (ELECTRICAL_MEASUREMENT, 0x0604): "multiplier",
    (ELECTRICAL_MEASUREMENT, 0x0605): "divisor",
    (METERING, 0x0301): "multiplier",
    (METERING, 0x0302): "divisor",
}

# Reporting asked of a device after its interview: cluster -> (attribute, min s, max s, change).
# The maximum interval makes sleepy devices check in (hourly; battery every 6 h), which is what
# the learned availability feeds on; the changes keep a radio quiet on noise.
REPORTING: Final[Mapping[int, tuple[tuple[str, int, int, int], ...]]] = {
    POWER_CONFIGURATION: (("battery_percentage_remaining", 3600, 21600, 2),),
    OCCUPANCY: (("occupancy", 0, 3600, 0),),
    TEMPERATURE: (("measured_value", 60, 3600, 50),),
    HUMIDITY: (("measured_value", 60, 3600, 100),),
    ILLUMINANCE: (("measured_value", 10, 3600, 500),),
    ON_OFF: (("on_off", 0, 900, 0),),
    ELECTRICAL_MEASUREMENT: (("active_power", 5, 900, 10),),
    METERING: (("instantaneous_demand", 5, 900, 10),),
}

# Remote controls: commands they send on these clusters are button actions.
BUTTON_CLUSTERS: Final = frozenset({ON_OFF, LEVEL, SCENES})

# Device kinds whose On/Off attribute is an appliance (a remote's on/off are commands).
APPLIANCE_KINDS: Final = frozenset({DeviceKind.PLUG, DeviceKind.APPLIANCE})

# IAS zone type -> event kind, when the device kind in the config does not say.
ZONE_TYPES: Final[Mapping[int, EventKind]] = {
    0x000D: EventKind.MOTION,
    0x0015: EventKind.CONTACT,
    0x0016: EventKind.CONTACT,
    0x0028: EventKind.SMOKE,
    0x002A: EventKind.WATER_LEAK,
    0x002C: EventKind.HELP,
    0x002D: EventKind.MOTION,  # vibration/movement: a sign of someone about
    0x010F: EventKind.HELP,
    0x0115: EventKind.HELP,
}

DEVICE_KIND_ZONE: Final[Mapping[DeviceKind, EventKind]] = {
    DeviceKind.MOTION: EventKind.MOTION,
    DeviceKind.PRESENCE: EventKind.MOTION,
    DeviceKind.RADAR: EventKind.MOTION,
    DeviceKind.CONTACT: EventKind.CONTACT,
    DeviceKind.WATER_LEAK: EventKind.WATER_LEAK,
    DeviceKind.SMOKE: EventKind.SMOKE,
    DeviceKind.PENDANT: EventKind.HELP,
    DeviceKind.PRESSURE_MAT: EventKind.PRESSURE,
}


def decode_attribute(
    cluster: int, attribute: int, value: Any, device: DeviceConfig, scale: Scale = Scale()
) -> tuple[EventKind, Value] | None:
    """One reported (or read) attribute -> an event, None if the hub has no use for it.

    Raises BadValue for a value the specification does not allow.
    """
    if (cluster, attribute) == (IAS_ZONE, ZONE_STATUS_ATTR):
        return zone_event(_int(value), device, None)
    entry = ATTRIBUTES.get((cluster, attribute))
    if entry is None:
        return None
    kind, convert = entry
    if kind is EventKind.APPLIANCE and device.kind not in APPLIANCE_KINDS:
        return None
    result = convert(value, scale)
    if kind is EventKind.BUTTON:
        return button_event(str(result), device)
    return kind, result


def zone_event(
    zone_status: int, device: DeviceConfig, zone_type: int | None
) -> tuple[EventKind, Value] | None:
    """IAS zone status -> event: alarm 1 is "motion"/"open"/"leak"/"smoke"/"help"."""
    kind = DEVICE_KIND_ZONE.get(device.kind)
    if kind is None and device.role is DeviceRole.HELP_BUTTON:
        kind = EventKind.HELP
    if kind is None and zone_type is not None:
        kind = ZONE_TYPES.get(zone_type)
    if kind is None:
        return None
    alarm = bool(zone_status & ALARM_1)
    if kind is EventKind.HELP:
        if not alarm:
            return None  # the button's release
        return EventKind.HELP, "pendant" if device.kind is DeviceKind.PENDANT else "button"
    return kind, alarm


def button_event(action: str, device: DeviceConfig) -> tuple[EventKind, Value]:
    if device.role is DeviceRole.HELP_BUTTON and action not in {"release", "stop", "stop_with_on_off"}:
        return EventKind.HELP, "pendant" if device.kind is DeviceKind.PENDANT else "button"
    return EventKind.BUTTON, action


__all__ = [
    "ATTRIBUTES",
    "BUTTON_CLUSTERS",
    "IAS_ZONE",
    "REPORTING",
    "SCALE_ATTRIBUTES",
    "ZONE_TYPES",
    "BadValue",
    "Scale",
    "button_event",
    "decode_attribute",
    "zone_event",
]
