"""Inactivity: learned limits per time of day and context, away, bed, offline sensors, clocks that lie.

A flat lives a fixed routine for some days (fed through the real rule engine on a virtual clock);
then the resident stops, and the whole incident is checked: when, which room, and the reason.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from hub.clock import Instant, VirtualClock
from hub.engine import RuleEngine
from hub.events import Event, EventKind, Incident, IncidentKind, Severity, Value
from rules.base import ClearIncident
from rules.inactivity import FixedLimit, InactivityDetector, is_sign_of_life
from rules.localtime import DailyWindow

BERLIN = ZoneInfo("Europe/Berlin")
M, C, P = EventKind.MOTION, EventKind.CONTACT, EventKind.PRESSURE
ROOMS = {
    "kitchen-pir": "kitchen",
    "bath-pir": "bathroom",
    "bedroom-pir": "bedroom",
    "living-pir": "living",
    "bed": "bedroom",
    "seat": "living",
    "door": "hall",
}
LABELS = {
    "kitchen-pir": "kitchen motion sensor",
    "bath-pir": "bathroom motion sensor",
    "link:zigbee": "zigbee radio link",
}


def wall(text: str) -> float:
    """Epoch seconds of a local time of the flat, "2026-03-03 08:00"."""
    return dt.datetime.fromisoformat(text).replace(tzinfo=BERLIN).timestamp()


class Flat:
    """One detector behind the real engine, on a virtual clock whose mono starts at 1000."""

    def __init__(self, detector: InactivityDetector, start: str = "2026-02-01 00:00") -> None:
        self.origin = wall(start)
        self.clock = VirtualClock(Instant(self.origin, 1000.0))
        self.detector = detector
        self.raised: list[Incident] = []
        self.cleared: list[ClearIncident] = []
        self.engine = RuleEngine([detector], self.clock, self.raised.append, self._clear)
        self.wall_skew = 0.0  # what a jumped wall clock adds to the truth

    def _clear(self, clear: ClearIncident, now: Instant) -> None:
        self.cleared.append(clear)

    def at(self, when: float) -> Instant:
        return Instant(when + self.wall_skew, 1000.0 + (when - self.origin))

    def send(self, when: str | float, device: str, kind: EventKind = M, value: Value = True) -> None:
        moment = self.at(wall(when) if isinstance(when, str) else when)
        self.clock.advance_to(moment.mono)
        room = ROOMS.get(device)
        self.engine.handle(
            Event(kind=kind, device=device, room=room, value=value, wall=moment.wall, mono=moment.mono)
        )

    def run_until(self, when: str | float) -> None:
        moment = self.at(wall(when) if isinstance(when, str) else when)
        self.clock.advance_to(moment.mono)
        self.engine.fire_due(moment)

    def inactivity(self) -> list[Incident]:
        return [i for i in self.raised if i.kind is IncidentKind.INACTIVITY]


def detector(**overrides: Any) -> InactivityDetector:
    params: dict[str, Any] = {
        "tz": BERLIN,
        "activity_devices": list(ROOMS),
        "front_doors": ["door"],
        "beds": ["bed"],
        "seats": ["seat"],
        "bedrooms": ["bedroom"],
        "labels": LABELS,
        "links": {"link:zigbee": frozenset(ROOMS)},
    }
    params.update(overrides)
    return InactivityDetector(**params)


def day_of_routine(day: dt.date, get_up: str = "07:00") -> list[tuple[str, str, EventKind, bool]]:
    """Up at `get_up` (bed released), about the flat every 30 min, in bed at 22:31."""
    d = day.isoformat()
    events = [(f"{d} {get_up}", "bed", P, False), (f"{d} {get_up}", "bedroom-pir", M, True)]
    start = dt.datetime.fromisoformat(f"{d} {get_up}") + dt.timedelta(minutes=5)
    t = start
    while t.time() < dt.time(22, 0):
        device = "kitchen-pir" if t.minute < 30 else "living-pir"
        events.append((t.isoformat(sep=" ", timespec="minutes"), device, M, True))
        t += dt.timedelta(minutes=30)
    events += [(f"{d} 22:30", "bedroom-pir", M, True), (f"{d} 22:31", "bed", P, True)]
    return events


def live(
    flat: Flat,
    days: Iterable[dt.date],
    get_up: dict[int, str] | None = None,
    since: str = "00:00",
    until: str = "24:00",
) -> None:
    """The routine on these days; on each, only what happens from `since` to before `until`."""
    for day in days:
        for when, device, kind, value in day_of_routine(day, (get_up or {}).get(day.weekday(), "07:00")):
            if since <= when[11:] < until:
                flat.send(when, device, kind, value)


def dates(first: str, count: int) -> list[dt.date]:
    start = dt.date.fromisoformat(first)
    return [start + dt.timedelta(days=n) for n in range(count)]


# -- learned limits -------------------------------------------------------------------------------


def test_not_up_by_the_usual_time_raises_with_the_learned_reason() -> None:
    flat = Flat(detector())
    live(flat, dates("2026-02-02", 9))  # Mon 2 .. Tue 10 February
    flat.run_until("2026-02-11 12:00")  # Wednesday: the bed mat is never released
    [incident] = flat.inactivity()
    assert incident.kind is IncidentKind.INACTIVITY
    assert incident.severity is Severity.CRITICAL
    assert incident.room == "bedroom"
    assert incident.reason == (
        "no activity since 22:31 (in bed), last in the bedroom; usually up by 07:00 (learned over 9 days)"
    )
    # Usually up by 07:00; the profile excuses lying still until 90 min (the tolerance) later.
    assert incident.wall == wall("2026-02-11 08:45")
    assert incident.evidence["basis"] == "learned"
    assert incident.evidence["context"] == "in_bed"


def test_into_the_bedroom_but_never_into_bed() -> None:
    flat = Flat(detector())
    live(flat, dates("2026-02-02", 9))
    live(flat, dates("2026-02-11", 1), until="22:31")  # the bed mat stays empty
    flat.run_until("2026-02-12 06:00")
    [incident] = flat.inactivity()
    assert (incident.wall, incident.room) == (wall("2026-02-12 00:30"), "bedroom")
    assert incident.reason == (
        "no activity since 22:30, last in the bedroom, 2 h; never this quiet at this time (learned over 10 days)"
    )


def test_a_day_of_the_routine_raises_nothing() -> None:
    flat = Flat(detector())
    live(flat, dates("2026-02-02", 20))
    flat.run_until("2026-02-22 06:59")
    assert flat.raised == []
    state = flat.detector.learning_state()
    assert (state["days_seen"], state["confidence"]) == (20, 1.0)
    assert state["learned_limit_minutes_by_hour"]["active"][12] == 120  # 1.5 x 30 min, floor 2 h


def test_limits_are_learned_per_weekday_once_enough_weeks_are_seen() -> None:
    flat = Flat(detector())
    # Six weeks (six Sundays): up at 08:00 on Saturdays, at 07:00 on other days.
    live(flat, dates("2026-01-04", 6 * 7), get_up={5: "08:00"})  # Sun 4 Jan .. Sat 14 Feb
    flat.run_until("2026-02-15 12:00")  # Sunday 15th: not up
    [sunday] = flat.inactivity()
    assert sunday.reason == (
        "no activity since 22:31 (in bed), last in the bedroom; usually up by 07:00 on Sundays "
        "(learned over 42 days)"
    )
    assert sunday.wall == wall("2026-02-15 08:45")


def test_weekday_profile_waits_longer_on_the_late_day() -> None:
    flat = Flat(detector())
    live(flat, dates("2026-01-03", 6 * 7), get_up={5: "08:00"})  # Sat 3 Jan .. Fri 13 Feb
    flat.run_until("2026-02-14 12:00")  # Saturday: usually up at 08:00
    [saturday] = flat.inactivity()
    assert saturday.reason == (
        "no activity since 22:31 (in bed), last in the bedroom; usually up by 08:00 on Saturdays "
        "(learned over 42 days)"
    )
    assert saturday.wall == wall("2026-02-14 09:45")


def test_cold_start_waits_the_conservative_ceiling() -> None:
    flat = Flat(detector())
    flat.send("2026-02-01 08:00", "kitchen-pir")
    flat.run_until("2026-02-02 08:00")
    [incident] = flat.inactivity()
    assert (
        incident.reason
        == "no activity since 08:00, last in the kitchen, 12 h; the longest this rule ever waits"
    )
    assert (incident.wall, incident.room) == (wall("2026-02-01 20:00"), "kitchen")


def test_while_learning_the_default_fades_with_each_complete_day() -> None:
    flat = Flat(detector())
    live(flat, dates("2026-02-02", 3))  # 3 complete days of 7
    flat.send("2026-02-05 07:00", "bed", P, False)
    flat.send("2026-02-05 07:10", "kitchen-pir")
    flat.run_until("2026-02-06 07:00")
    [incident] = flat.inactivity()
    # 12 h x (1 - 3/7) = 6 h 51 min, longer than anything learned at this time of day
    assert incident.reason == (
        "no activity since 07:10, last in the kitchen, 6 h 51 min; "
        "still learning this flat (4 of 7 days), limit 6 h 51 min"
    )


def test_fixed_limit_applies_from_the_first_hour() -> None:
    fixed = [FixedLimit(DailyWindow(7 * 60, 22 * 60), 3 * 3600.0)]
    flat = Flat(detector(fixed=fixed))
    flat.send("2026-02-01 08:00", "kitchen-pir")
    flat.run_until("2026-02-01 23:00")
    [incident] = flat.inactivity()
    assert (
        incident.reason
        == "no activity since 08:00, last in the kitchen, 3 h; limit 3 h between 07:00 and 22:00"
    )
    assert incident.wall == wall("2026-02-01 11:00")


def test_sign_of_life_clears_and_a_resident_ended_false_alarm_is_learned() -> None:
    flat = Flat(detector())
    live(flat, dates("2026-02-02", 9))
    live(flat, dates("2026-02-11", 1), until="10:06")  # then quiet from 10:05 (usually 30 min)
    flat.run_until("2026-02-11 14:00")
    [first] = flat.inactivity()
    assert (first.wall, first.room) == (wall("2026-02-11 12:05"), "kitchen")
    assert (
        first.reason
        == "no activity since 10:05, last in the kitchen; usually by 10:35 (learned over 10 days)"
    )
    flat.send("2026-02-11 14:00", "kitchen-pir")  # the resident, on their own
    assert flat.cleared == [
        ClearIncident(IncidentKind.INACTIVITY, "kitchen", "sign of life at 14:00 (kitchen motion sensor)")
    ]
    live(flat, dates("2026-02-11", 1), since="14:05")
    # The same quiet the next day is now within what was seen: no second alarm.
    live(flat, dates("2026-02-12", 1), until="10:06")
    flat.run_until("2026-02-12 13:59")
    assert len(flat.inactivity()) == 1


def test_an_alarm_ended_by_someone_coming_in_is_never_learned() -> None:
    flat = Flat(detector())
    live(flat, dates("2026-02-02", 9))
    live(flat, dates("2026-02-11", 1), until="10:06")
    flat.run_until("2026-02-11 14:00")
    flat.send("2026-02-11 14:00", "door", C, True)  # the neighbour with the key
    flat.send("2026-02-11 14:01", "kitchen-pir")
    live(flat, dates("2026-02-11", 1), since="14:05")
    live(flat, dates("2026-02-12", 1), until="10:06")
    flat.run_until("2026-02-12 14:00")
    assert [i.wall for i in flat.inactivity()] == [wall("2026-02-11 12:05"), wall("2026-02-12 12:05")]


# -- context: away, visitors, mats ------------------------------------------------------------------


def test_away_suspends_until_back_and_a_stray_sensor_is_not_a_return() -> None:
    flat = Flat(detector())
    flat.send("2026-02-01 09:00", "kitchen-pir")
    flat.send("2026-02-01 09:05", "door", C, True)
    flat.send("2026-02-01 09:05:10", "door", C, False)
    flat.send("2026-02-01 15:00", "living-pir")  # the cat
    flat.run_until("2026-02-03 09:00")  # two days away
    assert flat.inactivity() == []
    assert flat.detector.status()["presence"] == "away"
    flat.send("2026-02-03 09:00", "door", C, True)
    flat.send("2026-02-03 09:01", "kitchen-pir")
    flat.run_until("2026-02-04 09:00")
    [incident] = flat.inactivity()
    # One complete day learned (1 February): the 12 h default has faded to 12 h x 6/7.
    assert incident.wall == wall("2026-02-03 09:01") + 12 * 3600 * 6 / 7


def test_several_sensors_without_the_door_count_as_a_return() -> None:
    flat = Flat(detector())
    flat.send("2026-02-01 09:05", "door", C, True)
    flat.send("2026-02-01 20:00", "kitchen-pir")
    flat.send("2026-02-01 20:02", "bath-pir")
    assert flat.detector.status()["presence"] == "home"


def test_door_then_activity_is_a_visitor_not_an_absence() -> None:
    flat = Flat(detector())
    flat.send("2026-02-01 09:00", "door", C, True)
    flat.send("2026-02-01 09:02", "kitchen-pir")
    flat.run_until("2026-02-02 09:00")
    [incident] = flat.inactivity()
    assert incident.wall == wall("2026-02-01 21:02")


def test_a_stuck_bed_mat_does_not_make_the_kitchen_a_bed() -> None:
    flat = Flat(detector())
    flat.send("2026-02-01 08:00", "bed", P, True)
    flat.send("2026-02-01 08:30", "kitchen-pir")
    assert flat.detector.status()["context"] == "active"
    flat.send("2026-02-01 23:00", "bed", P, False)
    flat.send("2026-02-01 23:00:05", "bed", P, True)
    assert flat.detector.status()["context"] == "in_bed"


# -- sensors that go away -----------------------------------------------------------------------------


def test_an_offline_sensor_degrades_the_rule_and_says_so() -> None:
    flat = Flat(detector(fixed=[FixedLimit(DailyWindow(0, 0), 3 * 3600.0)]))
    flat.send("2026-02-01 08:00", "kitchen-pir")
    flat.send("2026-02-01 09:00", "bath-pir", EventKind.AVAILABILITY, False)
    flat.run_until("2026-02-01 12:00")
    [incident] = flat.inactivity()
    assert incident.reason == (
        "no activity since 08:00, last in the kitchen, 3 h; limit 3 h all day; "
        "degraded: bathroom motion sensor offline since 09:00"
    )
    assert incident.evidence["offline"] == "bath-pir"


def test_a_dead_radio_raises_degraded_safety_never_inactivity() -> None:
    flat = Flat(detector())
    flat.send("2026-02-01 08:00", "kitchen-pir")
    flat.send("2026-02-01 10:00", "link:zigbee", EventKind.AVAILABILITY, False)
    flat.run_until("2026-02-02 10:00")
    assert [(i.kind, i.reason) for i in flat.raised] == [
        (
            IncidentKind.DEGRADED_SAFETY,
            (
                "inactivity rule blind: all 7 activity sensors offline since 10:00; "
                "a quiet flat can no longer be told from a dead radio"
            ),
        )
    ]
    flat.send("2026-02-02 10:00", "link:zigbee", EventKind.AVAILABILITY, True)
    assert flat.cleared == [
        ClearIncident(IncidentKind.DEGRADED_SAFETY, None, "activity sensors are back online")
    ]
    # The clock restarts at the radio's return (the default limit, one day learned, from 10:00).
    flat.run_until("2026-02-03 10:00")
    assert [i.wall for i in flat.inactivity()] == [wall("2026-02-02 10:00") + 12 * 3600 * 6 / 7]


def test_a_sensor_that_reports_again_is_back_even_without_an_online_event() -> None:
    flat = Flat(detector(activity_devices=["kitchen-pir", "bath-pir"]))
    flat.send("2026-02-01 08:00", "kitchen-pir")
    flat.send("2026-02-01 09:00", "kitchen-pir", EventKind.AVAILABILITY, False)
    flat.send("2026-02-01 09:00", "bath-pir", EventKind.AVAILABILITY, False)
    flat.send("2026-02-01 09:30", "bath-pir")
    assert [type(c).__name__ for c in flat.cleared] == ["ClearIncident"]
    assert flat.detector.status()["offline"] == ["kitchen-pir"]
    assert flat.detector.status()["blind"] is False


# -- clocks -------------------------------------------------------------------------------------------


def test_a_wall_clock_jump_neither_raises_nor_hides_an_incident() -> None:
    def alarm_mono(skew: float) -> float:
        flat = Flat(detector())
        flat.send("2026-02-01 08:00", "kitchen-pir")
        flat.wall_skew = skew  # NTP moves the wall clock; monotonic time goes on
        flat.send("2026-02-01 09:00", "kitchen-pir", EventKind.TEMPERATURE, 21.0)
        flat.run_until("2026-02-02 08:00")
        [incident] = flat.inactivity()
        return incident.mono

    assert alarm_mono(3 * 3600) == alarm_mono(-3 * 3600) == alarm_mono(0.0)


def test_learned_limits_follow_local_time_across_daylight_saving() -> None:
    flat = Flat(detector(), start="2026-03-15 00:00")
    live(flat, dates("2026-03-16", 13))  # Mon 16 .. Sat 28 March; clocks go forward on Sunday 29th
    live(flat, dates("2026-03-29", 1))  # up at 07:00 summer time: no alarm
    assert flat.raised == []
    flat.run_until("2026-03-30 12:00")  # Monday: not up
    [incident] = flat.inactivity()
    assert incident.reason == (
        "no activity since 22:31 (in bed), last in the bedroom; usually up by 07:00 (learned over 14 days)"
    )
    assert incident.wall == wall("2026-03-30 08:45")


# -- learning state and persistence ---------------------------------------------------------------------


def test_snapshot_survives_json_and_a_restart() -> None:
    flat = Flat(detector())
    live(flat, dates("2026-02-02", 9))
    saved = json.loads(json.dumps(flat.detector.snapshot()))
    fresh = detector()
    fresh.restore(saved)
    assert fresh.learning_state() == flat.detector.learning_state()
    # After the restart the first sign of life starts the clock; the learned limits hold.
    restarted = Flat(fresh, start="2026-02-10 22:00")
    restarted.send("2026-02-10 22:31", "bed", P, True)
    restarted.run_until("2026-02-11 12:00")
    [incident] = restarted.inactivity()
    assert incident.wall == wall("2026-02-11 08:45")


@pytest.mark.parametrize(
    "state",
    [
        {},
        {"version": 99, "days": [], "gaps": [], "seen": {}},
        {"version": 1, "days": ["x"], "gaps": [], "seen": {}},
        {"version": 1, "days": [], "gaps": [[0, -5, "active"]], "seen": {}},
        {"version": 1, "days": [], "gaps": [], "seen": {"active": {"1": 2**200}}},
        {"version": 1, "days": [], "gaps": [[0, 5]], "seen": {}},
    ],
)
def test_a_damaged_snapshot_is_refused_whole(state: dict[str, object]) -> None:
    fresh = detector()
    with pytest.raises(ValueError, match="state"):
        fresh.restore(state)
    assert fresh.learning_state()["gaps_learned"] == 0


def test_learning_uses_only_the_past() -> None:
    """The decision on a day is the same whether or not later days exist in the log."""
    short, long = Flat(detector()), Flat(detector())
    for flat in (short, long):
        live(flat, dates("2026-02-02", 8))
        live(flat, dates("2026-02-10", 1), until="10:06")
        flat.run_until("2026-02-10 16:00")
    live(long, dates("2026-02-11", 10))
    day = wall("2026-02-11 00:00")
    judged = [(i.wall, i.reason) for i in short.inactivity()]
    assert judged
    assert judged == [(i.wall, i.reason) for i in long.inactivity() if i.wall < day]


def test_signs_of_life() -> None:
    def ev(kind: EventKind, value: Value) -> Event:
        return Event(kind=kind, device="d", room=None, value=value, wall=0.0, mono=0.0)

    assert is_sign_of_life(ev(M, False))  # motion seen until just now
    assert is_sign_of_life(ev(P, False))  # got up
    assert not is_sign_of_life(ev(EventKind.APPLIANCE, False))  # the toaster popped by itself
    assert not is_sign_of_life(ev(EventKind.TEMPERATURE, 21.0))
    assert not is_sign_of_life(ev(M, "garbage"))
    assert is_sign_of_life(ev(EventKind.RESIDENT_OK, "kiosk"))


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ValueError, match="margin"):
        detector(margin=0.5)
    with pytest.raises(ValueError, match="min_days"):
        detector(min_days=-1)
