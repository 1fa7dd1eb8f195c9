"""Config -> detectors: which rules a flat gets, with what parameters, and time-of-day helpers."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from hub.config import HubConfig, parse_config
from hub.detectors import (
    bathrooms,
    bedrooms,
    build_detectors,
    dependents,
    device_labels,
    inactivity_params,
    links,
)
from rules.localtime import DailyWindow, duration_text, next_local

BERLIN = ZoneInfo("Europe/Berlin")


def test_the_demo_flat_gets_the_whole_rule_set(demo_config: HubConfig) -> None:
    names = [d.name for d in build_detectors(demo_config)]
    assert names == [
        "hazards",
        "fall",
        "inactivity",
        "checkin",
        "night_wandering",
        "out_of_bed",
        "bathroom_stay",
        "appliance_on",
        "climate",
        "device_health",
    ]
    assert dependents(demo_config)["bathroom-motion"] == ["inactivity", "bathroom-stay"]
    assert dependents(demo_config)["bed-mat"] == ["inactivity", "out-of-bed"]
    assert device_labels(demo_config)["bathroom-motion"] == "bathroom motion sensor (Bad Bewegung)"
    assert device_labels(demo_config)["hall-door"] == "hall front door contact (Wohnungstür)"
    params = inactivity_params(demo_config)
    assert (params["front_doors"], params["beds"], params["seats"], params["bedrooms"]) == (
        ["hall-door"],
        ["bed-mat"],
        ["chair-mat"],
        ["bedroom"],
    )
    [fixed] = params["fixed"]
    assert (fixed.window, fixed.limit_s) == (DailyWindow(7 * 60, 22 * 60), 3 * 3600.0)
    assert links(demo_config)["link:simulated"] >= {"bed-mat", "hall-door"}


def test_rules_without_their_devices_are_not_built(small_config: HubConfig) -> None:
    bare = parse_config(
        """
flat: {id: bare, name: Bare}
rooms: [kitchen, toilet]
devices:
  - {id: k, room: kitchen, kind: contact}
  - {id: t, room: toilet, kind: flush, role: toilet}
rules:
  checkin: {enabled: false}
  inactivity: {learned: {enabled: false}}
""",
        "bare.yaml",
    )
    assert [d.name for d in build_detectors(bare)] == [
        "hazards",
        "fall",
        "inactivity",
        "climate",
        "device_health",
    ]
    assert bathrooms(bare) == []  # a toilet with only a flush: nobody can be seen *in* it
    assert bedrooms(small_config) == ["bedroom"]
    assert inactivity_params(bare)["learned"] is False


def test_next_local_time_over_the_daylight_saving_nights() -> None:
    spring = dt.datetime(2026, 3, 28, 12, 0, tzinfo=BERLIN).timestamp()
    after = next_local(spring, 7 * 60, BERLIN)
    assert dt.datetime.fromtimestamp(after, BERLIN).isoformat() == "2026-03-29T07:00:00+02:00"
    autumn = dt.datetime(2026, 10, 24, 12, 0, tzinfo=BERLIN).timestamp()
    gone = next_local(autumn, 2 * 60 + 30, BERLIN)  # 02:30 happens twice: the first one
    assert dt.datetime.fromtimestamp(gone, BERLIN).isoformat() == "2026-10-25T02:30:00+02:00"


def test_daily_windows_and_durations() -> None:
    night = DailyWindow(23 * 60, 6 * 60)
    assert [night.contains(m) for m in (22 * 60 + 59, 23 * 60, 0, 5 * 60 + 59, 6 * 60)] == [
        False,
        True,
        True,
        True,
        False,
    ]
    assert (night.text, night.between, DailyWindow(0, 0).between) == (
        "23:00-06:00",
        "between 23:00 and 06:00",
        "all day",
    )
    assert [duration_text(s) for s in (0, 59, 3600, 3600 + 300, 7 * 3600 + 3599)] == [
        "0 min",
        "1 min",
        "1 h",
        "1 h 05 min",
        "8 h",
    ]
    with pytest.raises(ValueError, match="time of day"):
        DailyWindow(0, 24 * 60)


def test_installer_advice_names_the_gaps_the_evaluation_found() -> None:
    from hub.detectors import coverage_advice

    config = parse_config(
        """
flat: {id: f, name: F}
rooms: [living, kitchen, hall, bedroom]
devices:
  - {id: chair, kind: pressure_mat, room: living, role: seat}
  - {id: bed, kind: pressure_mat, room: bedroom, role: bed}
  - {id: bed-pir, kind: motion, room: bedroom}
  - {id: kitchen-pir, kind: motion, room: kitchen}
"""
    )
    advice = coverage_advice(config)
    assert any(a.startswith("living: a collapse on the seat (chair)") for a in advice)
    assert not any(a.startswith("bedroom:") for a in advice)  # the bedroom has a motion sensor
    assert "no activity sensor in: hall;" in " ".join(advice)
    assert any("front door" in a for a in advice)
    assert any("help button" in a for a in advice)


def test_the_demo_flat_has_no_protection_gap(demo_config: HubConfig) -> None:
    from hub.detectors import coverage_advice

    assert coverage_advice(demo_config) == []
