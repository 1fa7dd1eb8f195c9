"""At night: the front door opened from inside; out of bed and not back."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from zoneinfo import ZoneInfo

from hub.clock import Instant, VirtualClock
from hub.engine import RuleEngine
from hub.events import Event, EventKind, Incident, IncidentKind, Severity
from rules.base import ClearIncident, Detector
from rules.localtime import DailyWindow
from rules.night import NightWanderingDetector, OutOfBedDetector

BERLIN = ZoneInfo("Europe/Berlin")
NIGHT = DailyWindow(23 * 60, 6 * 60)
ROOMS = {"door": "hall", "kitchen-pir": "kitchen", "bed-left": "bedroom", "bed-right": "bedroom"}
LABELS = {"door": "hall front door contact"}


def wall(text: str) -> float:
    return dt.datetime.fromisoformat(text).replace(tzinfo=BERLIN).timestamp()


class Rig:
    def __init__(self, detectors: Sequence[Detector]) -> None:
        self.origin = wall("2026-03-02 12:00")
        self.clock = VirtualClock(Instant(self.origin, 0.0))
        self.raised: list[Incident] = []
        self.cleared: list[ClearIncident] = []
        self.engine = RuleEngine(
            detectors, self.clock, self.raised.append, lambda c, _: self.cleared.append(c)
        )

    def send(self, when: str, device: str, value: bool = True) -> None:
        t = wall(when)
        kind = EventKind.CONTACT if device == "door" else EventKind.MOTION
        kind = EventKind.PRESSURE if device.startswith("bed") else kind
        self.clock.advance_to(t - self.origin)
        self.engine.handle(
            Event(kind=kind, device=device, room=ROOMS[device], value=value, wall=t, mono=t - self.origin)
        )

    def run_until(self, when: str) -> None:
        t = wall(when)
        self.engine.fire_due(Instant(t, t - self.origin))


def wandering() -> Rig:
    return Rig([NightWanderingDetector(tz=BERLIN, window=NIGHT, front_doors=["door"], labels=LABELS)])


def out_of_bed() -> Rig:
    return Rig([OutOfBedDetector(tz=BERLIN, window=NIGHT, beds=["bed-left", "bed-right"], limit_s=1800.0)])


def test_front_door_opened_from_inside_at_night() -> None:
    rig = wandering()
    rig.send("2026-03-02 22:50", "kitchen-pir")
    rig.send("2026-03-03 02:14", "door", True)
    rig.send("2026-03-03 02:14:20", "door", False)
    [incident] = rig.raised
    assert (incident.kind, incident.severity, incident.room, incident.reason, incident.wall) == (
        IncidentKind.NIGHT_WANDERING,
        Severity.WARNING,
        "hall",
        "hall front door contact opened at 02:14 from inside, at night (23:00-06:00)",
        wall("2026-03-03 02:14"),
    )
    rig.send("2026-03-03 02:31", "kitchen-pir")
    assert rig.cleared == [
        ClearIncident(IncidentKind.NIGHT_WANDERING, "hall", "back inside at 02:31 (kitchen-pir)")
    ]


def test_coming_home_late_and_the_door_by_day_are_not_wandering() -> None:
    rig = wandering()
    rig.send("2026-03-02 20:00", "door", True)  # leaves in the evening (by day: nothing)
    rig.send("2026-03-02 20:00:10", "door", False)
    rig.send("2026-03-03 01:30", "door", True)  # back at night: a return
    rig.send("2026-03-03 01:30:10", "door", False)
    rig.send("2026-03-03 01:31", "kitchen-pir")
    assert rig.raised == []


def test_out_of_bed_at_night_and_not_back() -> None:
    rig = out_of_bed()
    rig.send("2026-03-02 23:10", "bed-left", True)
    rig.send("2026-03-02 23:12", "bed-right", True)
    rig.send("2026-03-03 02:10", "bed-right", False)  # still lying on the other mat
    rig.send("2026-03-03 02:10:30", "bed-left", False)
    rig.run_until("2026-03-03 03:00")
    [incident] = rig.raised
    assert (incident.kind, incident.room, incident.reason, incident.wall) == (
        IncidentKind.OUT_OF_BED,
        "bedroom",
        "out of bed since 02:10 and not back within 30 min, at night (23:00-06:00)",
        wall("2026-03-03 02:40:30"),
    )
    rig.send("2026-03-03 03:05", "bed-left", True)
    assert rig.cleared == [ClearIncident(IncidentKind.OUT_OF_BED, "bedroom", "back in bed at 03:05")]


def test_a_short_trip_and_getting_up_for_the_day_raise_nothing() -> None:
    rig = out_of_bed()
    rig.send("2026-03-02 23:10", "bed-left", True)
    rig.send("2026-03-03 03:00", "bed-left", False)
    rig.send("2026-03-03 03:12", "bed-left", True)  # the toilet and back
    rig.send("2026-03-03 05:50", "bed-left", False)  # up for the day, the night ends at 06:00
    rig.run_until("2026-03-03 09:00")
    assert rig.raised == []
