"""Daily check-in ("Tagestaste"): pressed inside the window, missed, late, holidays, clocks."""

from __future__ import annotations

import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo

from hub.clock import Instant, VirtualClock
from hub.engine import RuleEngine
from hub.events import Event, EventKind, Incident, IncidentKind, Severity, Value
from rules.base import ClearIncident
from rules.checkin import CheckinDetector
from rules.localtime import DailyWindow

BERLIN = ZoneInfo("Europe/Berlin")
WINDOW = DailyWindow(8 * 60, 11 * 60)


def wall(text: str) -> float:
    return dt.datetime.fromisoformat(text).replace(tzinfo=BERLIN).timestamp()


class Rig:
    def __init__(self, **params: Any) -> None:
        self.origin = wall("2026-03-02 00:00")
        self.clock = VirtualClock(Instant(self.origin, 500.0))
        self.raised: list[Incident] = []
        self.cleared: list[ClearIncident] = []
        detector = CheckinDetector(tz=BERLIN, window=WINDOW, buttons=["tagestaste"], **params)
        self.engine = RuleEngine(
            [detector], self.clock, self.raised.append, lambda c, _: self.cleared.append(c)
        )
        self.skew = 0.0

    def at(self, when: str) -> Instant:
        truth = wall(when)
        return Instant(truth + self.skew, 500.0 + truth - self.origin)

    def send(self, when: str, kind: EventKind, device: str = "kiosk", value: Value = True) -> None:
        now = self.at(when)
        self.clock.advance_to(now.mono)
        self.engine.handle(
            Event(kind=kind, device=device, room="hall", value=value, wall=now.wall, mono=now.mono)
        )

    def run_until(self, when: str) -> None:
        now = self.at(when)
        self.clock.advance_to(now.mono)
        self.engine.fire_due(now)


def missed(day: str) -> Incident:
    return Incident(
        kind=IncidentKind.CHECKIN_MISSED,
        severity=Severity.WARNING,
        room=None,
        reason="no daily check-in between 08:00 and 11:00 today",
        wall=wall(f"{day} 11:00"),
        mono=0.0,
        detector="checkin",
    )


def summary(incidents: list[Incident]) -> list[tuple[IncidentKind, Severity, str, float]]:
    return [(i.kind, i.severity, i.reason, i.wall) for i in incidents]


def test_a_checkin_inside_the_window_counts_and_a_missed_one_raises() -> None:
    rig = Rig()
    rig.send("2026-03-02 07:00", EventKind.MOTION, "hall-pir")  # any event arms the rule
    rig.send("2026-03-02 09:15", EventKind.CHECKIN, value="kiosk")
    rig.run_until("2026-03-03 23:00")  # Tuesday: nobody pressed
    assert summary(rig.raised) == summary([missed("2026-03-03")])


def test_the_checkin_button_counts_and_a_late_press_clears() -> None:
    rig = Rig()
    rig.send("2026-03-02 07:00", EventKind.MOTION, "hall-pir")
    rig.run_until("2026-03-02 11:30")
    assert len(rig.raised) == 1
    rig.send("2026-03-02 11:40", EventKind.BUTTON, "tagestaste", "single")
    assert rig.cleared == [ClearIncident(IncidentKind.CHECKIN_MISSED, None, "checked in at 11:40")]
    rig.send("2026-03-03 08:05", EventKind.BUTTON, "tagestaste", "single")
    rig.run_until("2026-03-03 12:00")
    assert len(rig.raised) == 1


def test_a_press_before_the_window_and_other_buttons_do_not_count() -> None:
    rig = Rig()
    rig.send("2026-03-02 07:59", EventKind.CHECKIN, value="kiosk")
    rig.send("2026-03-02 09:00", EventKind.BUTTON, "hall-light-switch", "single")
    rig.run_until("2026-03-02 12:00")
    assert summary(rig.raised) == summary([missed("2026-03-02")])


def test_holidays_expect_no_checkin() -> None:
    rig = Rig(holidays=[dt.date(2026, 3, 2)])
    rig.send("2026-03-02 07:00", EventKind.MOTION, "hall-pir")
    rig.run_until("2026-03-03 10:00")
    assert rig.raised == []
    rig.run_until("2026-03-03 11:00")
    assert summary(rig.raised) == summary([missed("2026-03-03")])


def test_the_window_end_follows_local_time_over_daylight_saving() -> None:
    rig = Rig()
    rig.send("2026-03-28 07:00", EventKind.MOTION, "hall-pir")
    rig.send("2026-03-28 09:00", EventKind.CHECKIN, value="kiosk")
    rig.run_until("2026-03-29 12:00")  # clocks went forward that night
    assert summary(rig.raised) == summary([missed("2026-03-29")])


def test_a_wall_clock_that_jumps_back_does_not_fire_early() -> None:
    rig = Rig()
    rig.send("2026-03-02 07:00", EventKind.MOTION, "hall-pir")
    rig.skew = -2 * 3600.0  # the wall clock now reads 2 h behind (a Pi without RTC)
    rig.send("2026-03-02 07:30", EventKind.MOTION, "hall-pir")
    rig.send("2026-03-02 11:30", EventKind.CHECKIN, value="kiosk")  # 09:30 on the Pi's clock
    rig.run_until("2026-03-02 14:00")
    assert rig.raised == []
