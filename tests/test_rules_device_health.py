"""Device health as a safety function: offline, radio link down, silent, battery low."""

from __future__ import annotations

import json
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from hub.clock import Instant, VirtualClock
from hub.engine import RuleEngine
from hub.events import Event, EventKind, Incident, IncidentKind, Severity, Value
from rules.base import ClearIncident
from rules.device_health import DeviceHealthDetector, DeviceInfo
from tests.conftest import T0  # 2026-03-03 08:00 Europe/Berlin

BERLIN = ZoneInfo("Europe/Berlin")
DEVICES = {
    "bath-pir": DeviceInfo("bathroom motion sensor", "bathroom", ("bathroom-stay", "inactivity")),
    "living-temp": DeviceInfo("living climate sensor", "living", ("climate",)),
    "bath-leak": DeviceInfo("bathroom water sensor", "bathroom", ("water-leak",)),
    "spare": DeviceInfo("spare button"),
}


class Rig:
    def __init__(self, **params: Any) -> None:
        self.clock = VirtualClock(Instant(T0, 0.0))
        self.detector = DeviceHealthDetector(
            tz=BERLIN,
            devices=DEVICES,
            links={"link:zigbee": ["bath-pir", "living-temp"]},
            **params,
        )
        self.raised: list[Incident] = []
        self.cleared: list[ClearIncident] = []
        self.engine = RuleEngine(
            [self.detector], self.clock, self.raised.append, lambda c, _: self.cleared.append(c)
        )

    def send(
        self, minutes: float, device: str, kind: EventKind, value: Value, room: str | None = None
    ) -> None:
        mono = minutes * 60
        self.clock.advance_to(mono)
        self.engine.handle(Event(kind=kind, device=device, room=room, value=value, wall=T0 + mono, mono=mono))

    def run_until(self, minutes: float) -> None:
        self.engine.fire_due(Instant(T0 + minutes * 60, minutes * 60))

    def reasons(self) -> list[tuple[IncidentKind, Severity, str | None, str]]:
        return [(i.kind, i.severity, i.room, i.reason) for i in self.raised]


def test_offline_device_names_what_no_longer_protects() -> None:
    rig = Rig()
    rig.send(362, "bath-pir", EventKind.AVAILABILITY, False)  # 14:02
    rig.send(363, "bath-pir", EventKind.AVAILABILITY, False)  # said twice: one incident
    assert rig.reasons() == [
        (
            IncidentKind.DEGRADED_SAFETY,
            Severity.CRITICAL,
            "bathroom",
            "bathroom motion sensor offline since 14:02: bathroom-stay and inactivity rules are degraded",
        )
    ]
    rig.send(400, "bath-pir", EventKind.MOTION, True)
    assert rig.cleared == [
        ClearIncident(IncidentKind.DEGRADED_SAFETY, "bathroom", "bathroom motion sensor back online at 14:40")
    ]


def test_a_room_stays_degraded_while_another_device_there_is_offline() -> None:
    rig = Rig()
    rig.send(0, "bath-pir", EventKind.AVAILABILITY, False)
    rig.send(1, "bath-leak", EventKind.AVAILABILITY, False)
    rig.send(2, "bath-pir", EventKind.AVAILABILITY, True)
    assert rig.cleared == []
    rig.send(3, "bath-leak", EventKind.AVAILABILITY, True)
    assert rig.cleared == [
        ClearIncident(IncidentKind.DEGRADED_SAFETY, "bathroom", "bathroom water sensor back online at 08:03")
    ]


def test_a_radio_link_down_is_one_incident_for_all_its_devices() -> None:
    rig = Rig()
    rig.send(0, "link:zigbee", EventKind.AVAILABILITY, False)
    assert rig.reasons() == [
        (
            IncidentKind.DEGRADED_SAFETY,
            Severity.CRITICAL,
            None,
            (
                "zigbee radio link down since 08:00, 2 devices unreachable: "
                "bathroom-stay, climate and inactivity rules are degraded"
            ),
        )
    ]
    rig.send(5, "link:zigbee", EventKind.AVAILABILITY, True)
    assert rig.cleared == [
        ClearIncident(IncidentKind.DEGRADED_SAFETY, None, "zigbee radio link back at 08:05")
    ]


def test_a_device_silent_far_beyond_its_learned_rhythm() -> None:
    rig = Rig()
    for n in range(6):  # reports every 10 min: the timeout becomes 2.5 x 10 min
        rig.send(10 * n, "living-temp", EventKind.TEMPERATURE, 21.0, "living")
    rig.run_until(50 + 24)
    assert rig.raised == []
    rig.run_until(50 + 26)
    assert rig.reasons() == [
        (
            IncidentKind.DEGRADED_SAFETY,
            Severity.CRITICAL,
            "living",
            "living climate sensor silent since 08:50: climate rule is degraded",
        )
    ]
    assert rig.detector.timeout("living-temp") == 25 * 60


def test_motion_only_sensors_are_never_called_silent_without_a_fixed_limit() -> None:
    rig = Rig()
    for n in range(10):
        rig.send(n, "bath-pir", EventKind.MOTION, n % 2 == 0, "bathroom")
    rig.run_until(3 * 24 * 60)
    assert rig.raised == []
    fixed = Rig(offline_after_s=3600.0)
    fixed.send(0, "bath-pir", EventKind.MOTION, True, "bathroom")
    fixed.run_until(61)
    assert [r[3] for r in fixed.reasons()] == [
        "bathroom motion sensor silent since 08:00: bathroom-stay and inactivity rules are degraded"
    ]


def test_battery_low_once_and_cleared_by_a_fresh_battery() -> None:
    rig = Rig()
    rig.send(0, "bath-pir", EventKind.BATTERY, 40.0)
    rig.send(10, "bath-pir", EventKind.BATTERY, 14.0)
    rig.send(20, "bath-pir", EventKind.BATTERY, 13.0)
    rig.send(30, "spare", EventKind.BATTERY, 5.0)
    assert rig.reasons() == [
        (
            IncidentKind.DEGRADED_SAFETY,
            Severity.WARNING,
            "bathroom",
            (
                "bathroom motion sensor battery at 14% (low at 15%): "
                "replace it before the bathroom-stay and inactivity rules are blind"
            ),
        ),
        (
            IncidentKind.DEGRADED_SAFETY,
            Severity.WARNING,
            None,
            "spare button battery at 5% (low at 15%): replace it soon",
        ),
    ]
    rig.send(40, "bath-pir", EventKind.BATTERY, 17.0)  # inside the hysteresis
    rig.send(50, "bath-pir", EventKind.BATTERY, 100.0)
    assert rig.cleared == [
        ClearIncident(IncidentKind.DEGRADED_SAFETY, "bathroom", "bathroom motion sensor battery at 100%")
    ]


def test_learned_intervals_survive_a_restart() -> None:
    rig = Rig()
    for n in range(6):
        rig.send(10 * n, "living-temp", EventKind.TEMPERATURE, 21.0, "living")
    saved = json.loads(json.dumps(rig.detector.snapshot()))
    fresh = Rig()
    fresh.detector.restore(saved)
    fresh.send(0, "living-temp", EventKind.TEMPERATURE, 21.0, "living")
    assert fresh.detector.timeout("living-temp") == 25 * 60
    with pytest.raises(ValueError, match="state"):
        fresh.detector.restore({"version": 1, "gaps": {"x": [-1.0]}})


def test_after_a_restart_a_device_that_died_meanwhile_is_found_within_its_learned_rhythm() -> None:
    rig = Rig()
    for n in range(6):  # reports every 10 min
        rig.send(10 * n, "living-temp", EventKind.TEMPERATURE, 21.0, "living")
        rig.send(10 * n, "bath-leak", EventKind.BATTERY, 90.0, "bathroom")
    saved = json.loads(json.dumps(rig.detector.snapshot()))
    # The hub restarts at 09:00; the climate sensor's battery died while it was down, the water
    # sensor reports on.
    saved["gaps"]["removed-sensor"] = [600.0] * 6  # learned once, taken out of the config since
    restarted = Rig()
    restarted.detector.restore(saved)
    restarted.clock.advance_to(60 * 60)
    restarted.engine.start(restarted.clock.now())
    for minute in (65, 75):
        restarted.send(minute, "bath-leak", EventKind.BATTERY, 90.0, "bathroom")
    restarted.run_until(60 + 24)
    assert restarted.raised == []
    restarted.run_until(60 + 26)  # 2.5 x 10 min after the restart, not the radio's 6 h default
    assert restarted.reasons() == [
        (
            IncidentKind.DEGRADED_SAFETY,
            Severity.CRITICAL,
            "living",
            "living climate sensor not heard from since the hub started at 09:00: climate rule is degraded",
        )
    ]
    # A device that reports after the restart was never in doubt; one no longer configured is not
    # expected, and is not kept in the learned state either.
    assert [i.evidence["device"] for i in restarted.raised] == ["living-temp"]
    assert "removed-sensor" not in restarted.detector.snapshot()["gaps"]
