"""The rule engine: detectors judged at event time, timers fired in order, crashes loud."""

from __future__ import annotations

import asyncio
import pickle
from collections.abc import Sequence

from hub.clock import Instant, VirtualClock
from hub.config import HubConfig
from hub.engine import RuleEngine
from hub.events import Event, EventKind, Incident, IncidentKind, Severity, Value
from rules.base import Decision, RaiseIncident, WakeAt
from tests.conftest import T0


class QuietBathroom:
    """Raise if the bathroom PIR goes quiet for `limit` seconds after the last motion."""

    name = "quiet-bathroom"

    def __init__(self, limit: float) -> None:
        self.limit = limit
        self.seen: list[tuple[str, float]] = []

    def on_event(self, event: Event, now: Instant) -> Sequence[Decision]:
        self.seen.append(("event", now.mono))
        if event.kind is EventKind.MOTION and event.value:
            return (WakeAt("quiet", now.mono + self.limit),)
        if event.kind is EventKind.CONTACT:
            return (WakeAt("quiet", None),)  # left the flat: cancel
        return ()

    def on_wake(self, key: str, now: Instant) -> Sequence[Decision]:
        self.seen.append((key, now.mono))
        return (
            RaiseIncident(
                Incident(
                    kind=IncidentKind.BATHROOM_STAY,
                    severity=Severity.WARNING,
                    room="bathroom",
                    reason=f"quiet since {now.mono - self.limit:.0f}",
                    wall=now.wall,
                    mono=now.mono,
                    detector=self.name,
                )
            ),
        )


class Broken:
    name = "broken"

    def on_event(self, event: Event, now: Instant) -> Sequence[Decision]:
        raise ZeroDivisionError("bug in a rule")

    def on_wake(self, key: str, now: Instant) -> Sequence[Decision]:
        return ()


def ev(kind: EventKind, mono: float, value: object = True) -> Event:
    return Event(kind=kind, device="d", room="bathroom", value=value, wall=T0 + mono, mono=mono)


def test_timers_fire_before_a_later_event_at_their_own_instant() -> None:
    clock = VirtualClock(Instant(T0, 0.0))
    raised: list[Incident] = []
    rule = QuietBathroom(limit=600)
    engine = RuleEngine([rule], clock, raised.append)
    engine.handle(ev(EventKind.MOTION, 10))
    engine.handle(ev(EventKind.MOTION, 100))  # replaces the first timer
    engine.handle(ev(EventKind.TEMPERATURE, 5000, 21.0))
    assert rule.seen == [("event", 10), ("event", 100), ("quiet", 700), ("event", 5000)]
    assert [(i.mono, i.wall, i.reason) for i in raised] == [(700, T0 + 700, "quiet since 100")]


def test_cancelled_timer_never_fires() -> None:
    raised: list[Incident] = []
    engine = RuleEngine([QuietBathroom(600)], VirtualClock(Instant(T0, 0.0)), raised.append)
    engine.handle(ev(EventKind.MOTION, 10))
    engine.handle(ev(EventKind.CONTACT, 20))
    engine.fire_due(Instant(T0 + 10_000, 10_000))
    assert raised == []
    assert engine.next_due() is None


async def test_live_sleeper_and_replay_reach_the_same_decisions() -> None:
    events = [ev(EventKind.MOTION, t) for t in (10, 50, 2000, 2100)] + [ev(EventKind.TEMPERATURE, 9000, 20.0)]

    # Replay: events only; due timers fire as later events arrive.
    replayed: list[Incident] = []
    replay = RuleEngine([QuietBathroom(600)], VirtualClock(Instant(T0, 0.0)), replayed.append)
    for event in events:
        replay.handle(event)

    # Live: the engine's own task sleeps on the clock and wakes for each timer.
    clock = VirtualClock(Instant(T0, 0.0))
    live: list[Incident] = []
    engine = RuleEngine([QuietBathroom(600)], clock, live.append)
    runner = asyncio.create_task(engine.run())
    for event in events:
        for step in range(int(clock.now().mono), int(event.mono), 50):
            clock.advance_to(step)
            await asyncio.sleep(0)
            await asyncio.sleep(0)
        clock.advance_to(event.mono)
        engine.handle(event)
        await asyncio.sleep(0)
    runner.cancel()
    await asyncio.gather(runner, return_exceptions=True)
    assert [(i.mono, i.reason) for i in live] == [(i.mono, i.reason) for i in replayed]
    assert [i.mono for i in replayed] == [650, 2700]


def test_a_crashing_detector_is_loud_and_raises_degraded_safety_once(caplog) -> None:
    raised: list[Incident] = []
    engine = RuleEngine([Broken(), QuietBathroom(60)], VirtualClock(Instant(T0, 0.0)), raised.append)
    engine.handle(ev(EventKind.MOTION, 1))
    engine.handle(ev(EventKind.MOTION, 2))
    engine.handle(ev(EventKind.MOTION, 500))
    assert engine.failures["broken"] == 3
    kinds = [i.kind for i in raised]
    # The other detector kept working; the broken one was reported once, not per event.
    assert kinds.count(IncidentKind.DEGRADED_SAFETY) == 1
    assert kinds.count(IncidentKind.BATHROOM_STAY) == 1
    degraded = next(i for i in raised if i.kind is IncidentKind.DEGRADED_SAFETY)
    assert "broken rule failed" in degraded.reason
    assert "bug in a rule" in degraded.reason
    assert any(r.levelname == "ERROR" and r.exc_info for r in caplog.records)


def test_a_detector_that_names_its_kinds_is_asked_only_about_those() -> None:
    class OnlyHelp(QuietBathroom):
        kinds = frozenset({EventKind.HELP})

    clock = VirtualClock(Instant(T0, 0.0))
    every, only_help = QuietBathroom(60), OnlyHelp(60)
    engine = RuleEngine([every, only_help], clock, lambda _incident: None)
    for kind in (EventKind.MOTION, EventKind.HELP, EventKind.BATTERY):
        engine.handle(Event(kind=kind, device="d", room="hall", value=True, wall=T0, mono=0.0))
    assert len(every.seen) == 3
    assert len(only_help.seen) == 1


def test_declared_kinds_are_all_a_detector_ever_reacts_to(demo_config: HubConfig) -> None:
    """A wrong `kinds` would silently hide events from a safety rule: every detector that
    declares kinds must neither decide nor change its state on any other kind, whatever the
    value and device, also once its declared kinds have given it state to lose."""
    from hub.detectors import build_detectors

    values: list[Value] = [True, False, None, 0, 21.5, -40.0, "single", "long", (0.1, 0.2, 2.9)]
    devices = [d.id for d in demo_config.devices]
    declared = [d for d in build_detectors(demo_config) if getattr(d, "kinds", None) is not None]
    assert {d.name for d in declared} >= {"fall", "climate", "hazards", "out_of_bed"}
    for detector in declared:
        mono = 0
        # Warm up on what it reads: streams, mats, spells and hazards under way.
        for kind in sorted(detector.kinds):
            for value in values:
                for device in devices:
                    mono += 1
                    now = Instant(T0 + mono / 50, mono / 50)
                    detector.on_event(
                        Event(
                            kind=kind,
                            device=device,
                            room="bedroom",
                            value=value,
                            wall=now.wall,
                            mono=now.mono,
                        ),
                        now,
                    )
        before = pickle.dumps(detector)
        for kind in (k for k in EventKind if k not in detector.kinds):
            for value in values:
                for device in devices:
                    mono += 1
                    now = Instant(T0 + mono / 50, mono / 50)
                    event = Event(
                        kind=kind, device=device, room="bedroom", value=value, wall=now.wall, mono=now.mono
                    )
                    assert list(detector.on_event(event, now)) == [], (detector.name, kind, value, device)
        assert pickle.dumps(detector) == before, f"{detector.name} changed on a kind it does not declare"
