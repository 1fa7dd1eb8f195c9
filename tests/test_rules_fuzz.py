"""Random event streams never crash a rule, and every decision keeps the contract."""

from __future__ import annotations

import json
from collections.abc import Sequence

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hub.clock import Instant
from hub.config import HubConfig
from hub.detectors import build_detectors
from hub.events import Event, EventKind, Incident
from rules.base import ClearIncident, Decision, RaiseIncident, WakeAt
from rules.device_health import DeviceHealthDetector
from rules.inactivity import InactivityDetector
from tests.conftest import T0

DEVICES = [
    "hall-door",
    "living-motion",
    "chair-mat",
    "kitchen-motion",
    "kettle",
    "bathroom-motion",
    "bed-mat",
    "living-climate",
    "link:simulated",
    "stranger",
]
VALUES = st.one_of(
    st.booleans(),
    st.none(),
    st.integers(-10, 3000),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["single", "kiosk", ""]),
    st.tuples(st.floats(-20, 20), st.floats(-20, 20), st.floats(-20, 20)),
)
STEP = st.tuples(
    st.floats(0, 6 * 3600),  # seconds after the previous event
    st.sampled_from(list(EventKind)),
    st.sampled_from(DEVICES),
    VALUES,
    st.floats(-7200, 7200) | st.just(0.0),  # wall-clock skew from here on (NTP, no RTC)
)


def check(decisions: Sequence[Decision]) -> list[tuple[float, str]]:
    wakes = []
    for decision in decisions:
        assert isinstance(decision, RaiseIncident | ClearIncident | WakeAt)
        if isinstance(decision, RaiseIncident):
            assert isinstance(decision.incident, Incident)
            assert decision.incident.reason
            assert "\n" not in decision.incident.reason
        if isinstance(decision, WakeAt) and decision.mono is not None:
            wakes.append((decision.mono, decision.key))
    return wakes


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(STEP, max_size=60))
def test_random_streams_never_crash_any_rule(demo_config: HubConfig, steps: list[tuple]) -> None:  # type: ignore[type-arg]
    detectors = build_detectors(demo_config)
    mono, skew = 0.0, 0.0
    timers: dict[tuple[int, str], float] = {}
    for gap, kind, device, value, jump in steps:
        mono += gap
        skew = jump or skew
        now = Instant(T0 + mono + skew, mono)
        # Timers due before this event fire first, as the engine does.
        for (index, key), due in sorted(timers.items(), key=lambda item: item[1]):
            if due <= mono:
                del timers[(index, key)]
                at = Instant(now.wall - (mono - due), due)
                for wake_mono, wake_key in check(detectors[index].on_wake(key, at)):
                    timers[(index, wake_key)] = wake_mono
        event = Event(kind=kind, device=device, room="living", value=value, wall=now.wall, mono=mono)
        for index, detector in enumerate(detectors):
            for wake_mono, wake_key in check(detector.on_event(event, now)):
                timers[(index, wake_key)] = wake_mono
    for detector in detectors:
        if isinstance(detector, InactivityDetector | DeviceHealthDetector):
            detector.restore(json.loads(json.dumps(detector.snapshot())))  # always loads back
