"""Room rules: bathroom stay, appliance left on, too hot / too cold."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from zoneinfo import ZoneInfo

import pytest

from hub.clock import Instant, VirtualClock
from hub.engine import RuleEngine
from hub.events import Event, EventKind, Incident, IncidentKind, Severity, Value
from rules.appliance import ApplianceOnDetector
from rules.base import ClearIncident, Detector
from rules.bathroom import BathroomStayDetector
from rules.climate import ClimateDetector

BERLIN = ZoneInfo("Europe/Berlin")
ROOMS = {
    "bath-pir": "bathroom",
    "bath-door": "bathroom",
    "flush": "bathroom",
    "kitchen-pir": "kitchen",
    "kettle": "kitchen",
    "living-temp": "living",
    "hall-pir": "hall",
}


def wall(text: str) -> float:
    return dt.datetime.fromisoformat(f"2026-03-03 {text}").replace(tzinfo=BERLIN).timestamp()


class Rig:
    def __init__(self, detectors: Sequence[Detector]) -> None:
        self.origin = wall("00:00")
        self.clock = VirtualClock(Instant(self.origin, 0.0))
        self.raised: list[Incident] = []
        self.cleared: list[ClearIncident] = []
        self.engine = RuleEngine(
            detectors, self.clock, self.raised.append, lambda c, _: self.cleared.append(c)
        )

    def send(self, when: str, device: str, kind: EventKind, value: Value = True) -> None:
        t = wall(when)
        self.clock.advance_to(t - self.origin)
        self.engine.handle(
            Event(kind=kind, device=device, room=ROOMS[device], value=value, wall=t, mono=t - self.origin)
        )

    def run_until(self, when: str) -> None:
        t = wall(when)
        self.engine.fire_due(Instant(t, t - self.origin))

    def only(self) -> tuple[IncidentKind, Severity, str | None, str, float]:
        [i] = self.raised
        return (i.kind, i.severity, i.room, i.reason, i.wall)


M, C, F = EventKind.MOTION, EventKind.CONTACT, EventKind.FLUSH


# -- bathroom -------------------------------------------------------------------------------------


def bathroom() -> Rig:
    labels = {"hall-pir": "hall motion sensor"}
    return Rig([BathroomStayDetector(tz=BERLIN, bathrooms=["bathroom"], limit_s=3600.0, labels=labels)])


def test_bathroom_stay_too_long() -> None:
    rig = bathroom()
    rig.send("07:40", "bath-door", C, True)
    rig.send("07:41", "bath-pir", M, True)
    rig.send("07:43", "bath-pir", M, False)
    rig.send("07:50", "flush", F, True)
    rig.run_until("09:00")
    assert rig.only() == (
        IncidentKind.BATHROOM_STAY,
        Severity.CRITICAL,
        "bathroom",
        "in the bathroom since 07:41, 1 h without being seen elsewhere (limit 1 h)",
        wall("08:41"),
    )
    rig.send("09:05", "hall-pir", M, True)
    assert rig.cleared == [
        ClearIncident(
            IncidentKind.BATHROOM_STAY, "bathroom", "out of the bathroom at 09:05 (hall motion sensor)"
        )
    ]


def test_leaving_the_bathroom_ends_the_stay_even_if_its_pir_goes_quiet_later() -> None:
    rig = bathroom()
    rig.send("07:41", "bath-pir", M, True)
    rig.send("07:55", "hall-pir", M, True)
    rig.send("07:56", "bath-pir", M, False)  # the PIR's hold time running out
    rig.send("07:57", "bath-door", C, False)  # shut from outside
    rig.run_until("10:00")
    assert rig.raised == []


# -- appliance ------------------------------------------------------------------------------------


def appliance() -> Rig:
    labels = {"kettle": "kitchen smart plug (Wasserkocher)"}
    return Rig(
        [ApplianceOnDetector(tz=BERLIN, appliances={"kettle": "kitchen"}, limit_s=3600.0, labels=labels)]
    )


def test_appliance_on_with_nobody_in_the_kitchen() -> None:
    rig = appliance()
    rig.send("12:10", "kettle", EventKind.POWER, 1800.0)
    rig.send("12:20", "kitchen-pir", M, True)  # someone there: the clock restarts
    rig.send("12:30", "kettle", EventKind.POWER, 1750.0)  # a periodic report: no restart
    rig.send("12:40", "hall-pir", M, True)  # another room: no restart
    rig.run_until("14:00")
    assert rig.only() == (
        IncidentKind.APPLIANCE_ON,
        Severity.WARNING,
        "kitchen",
        "kitchen smart plug (Wasserkocher) on since 12:10, no activity in the kitchen for 1 h",
        wall("13:20"),
    )
    rig.send("14:05", "kettle", EventKind.POWER, 0.4)
    assert rig.cleared == [
        ClearIncident(IncidentKind.APPLIANCE_ON, "kitchen", "kitchen smart plug (Wasserkocher) off at 14:05")
    ]


def test_switched_off_in_time_or_hovering_at_the_threshold_raises_nothing() -> None:
    rig = appliance()
    rig.send("12:10", "kettle", EventKind.APPLIANCE, True)
    rig.send("12:15", "kettle", EventKind.APPLIANCE, False)
    rig.send("13:00", "kettle", EventKind.POWER, 4.0)  # standby, below the threshold
    rig.run_until("16:00")
    assert rig.raised == []


# -- climate --------------------------------------------------------------------------------------


def climate() -> Rig:
    return Rig([ClimateDetector(tz=BERLIN, too_hot=30.0, too_cold=16.0, for_s=1800.0)])


def test_too_hot_for_the_duration_then_back() -> None:
    rig = climate()
    rig.send("14:00", "living-temp", EventKind.TEMPERATURE, 30.4)
    rig.send("14:20", "living-temp", EventKind.TEMPERATURE, 31.2)
    rig.run_until("15:00")
    assert rig.only() == (
        IncidentKind.TOO_HOT,
        Severity.WARNING,
        "living",
        "31.2 °C in the living, above 30 °C since 14:00 (30 min)",
        wall("14:30"),
    )
    rig.send("16:00", "living-temp", EventKind.TEMPERATURE, 29.8)  # inside the hysteresis: still hot
    assert rig.cleared == []
    rig.send("16:30", "living-temp", EventKind.TEMPERATURE, 28.0)
    assert rig.cleared == [
        ClearIncident(IncidentKind.TOO_HOT, "living", "back to 28.0 °C in the living at 16:30")
    ]


def test_too_cold_and_a_short_dip_or_bad_readings() -> None:
    rig = climate()
    rig.send("03:00", "living-temp", EventKind.TEMPERATURE, 15.5)
    rig.send("03:10", "living-temp", EventKind.TEMPERATURE, 17.0)  # window closed again
    rig.send("03:20", "living-temp", EventKind.TEMPERATURE, float("nan"))
    rig.send("03:21", "living-temp", EventKind.TEMPERATURE, "warm")
    rig.run_until("05:00")
    assert rig.raised == []
    rig.send("05:00", "living-temp", EventKind.TEMPERATURE, 14.0)
    rig.run_until("06:00")
    assert rig.only()[:4] == (
        IncidentKind.TOO_COLD,
        Severity.WARNING,
        "living",
        "14.0 °C in the living, below 16 °C since 05:00 (30 min)",
    )


@pytest.mark.parametrize(
    "build",
    [
        lambda: ClimateDetector(tz=BERLIN, too_hot=16.0, too_cold=30.0, for_s=60.0),
        lambda: BathroomStayDetector(tz=BERLIN, bathrooms=["b"], limit_s=0.0),
        lambda: ApplianceOnDetector(tz=BERLIN, appliances={}, limit_s=60.0, on_watts=0.0),
    ],
)
def test_impossible_parameters_are_refused(build: object) -> None:
    with pytest.raises(ValueError, match=r"must|positive"):
        build()  # type: ignore[operator]
