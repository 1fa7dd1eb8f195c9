"""Learned per-device reporting intervals, link reconnect policy and counted refusals."""

from __future__ import annotations

import asyncio
import logging

import pytest

from devices.availability import (
    DEFAULT_BATTERY_TIMEOUT,
    DEFAULT_MAINS_TIMEOUT,
    MIN_TIMEOUT,
    AvailabilityTracker,
    Backoff,
    ChangeFilter,
    LinkState,
    Reconnect,
    Rejections,
)
from hub.clock import Instant, VirtualClock
from hub.events import Event, EventKind

T0 = 1772521200.0


def changes(events: list[Event]) -> list[tuple[str, object, float]]:
    return [(e.device, e.value, e.mono) for e in events]


async def settle() -> None:
    # Let the tracker's task run up to its next await (it only ever waits on the clock or a report).
    for _ in range(5):
        await asyncio.sleep(0)


def test_defaults_until_learned_then_learned_timeout() -> None:
    clock = VirtualClock(Instant(T0, 0.0))
    tracker = AvailabilityTracker(clock, "test")
    tracker.watch("plug", "kitchen", mains=True)
    tracker.watch("pir", "hall", mains=False)
    assert tracker.timeout("plug") == DEFAULT_MAINS_TIMEOUT
    assert tracker.timeout("pir") == DEFAULT_BATTERY_TIMEOUT
    events: list[Event] = []
    # A sensor that checks in every 50 minutes (Aqara's heartbeat) with motion bursts between.
    for at in (0, 3000, 3010, 3020, 6000, 9000, 12000):
        clock.advance_to(float(at))
        tracker.seen("pir", events.append)
    assert tracker.timeout("pir") == 2.5 * 3000
    # A chatty BLE sensor does not get a timeout below the floor.
    tracker.watch("ble", None, mains=False)
    for at in range(12000, 12100, 10):
        clock.advance_to(float(at))
        tracker.seen("ble", events.append)
    assert tracker.timeout("ble") == MIN_TIMEOUT
    assert changes(events) == [("pir", True, 0.0), ("ble", True, 12000.0)]


def test_fixed_offline_after_from_config_wins() -> None:
    tracker = AvailabilityTracker(VirtualClock(Instant(T0, 0.0)), "test", offline_after=900.0)
    tracker.watch("pir", None, mains=False)
    assert tracker.timeout("pir") == 900.0


class Sink:
    def __init__(self) -> None:
        self.events: list[Event] = []
        self.queue: asyncio.Queue[Event] = asyncio.Queue()

    def __call__(self, event: Event) -> None:
        self.events.append(event)
        self.queue.put_nowait(event)

    async def next(self) -> tuple[str, object, float]:
        async with asyncio.timeout(5):
            event = await self.queue.get()
        return (event.device, event.value, event.mono)


async def test_run_sleeps_until_the_next_deadline_only() -> None:
    clock = VirtualClock(Instant(T0, 0.0))
    tracker = AvailabilityTracker(clock, "zigbee", offline_after=600.0)
    tracker.watch("pir", "hall", mains=False)
    tracker.watch("door", "hall", mains=False)
    sink = Sink()
    task = asyncio.create_task(tracker.run(sink))
    tracker.seen("pir", sink)
    assert await sink.next() == ("pir", True, 0.0)
    clock.advance_to(300.0)
    tracker.seen("door", sink)
    assert await sink.next() == ("door", True, 300.0)
    clock.advance_to(599.0)
    await settle()
    assert sink.queue.empty()
    clock.advance_to(600.0)  # pir's deadline
    assert await sink.next() == ("pir", False, 600.0)
    clock.advance_to(850.0)
    tracker.seen("door", sink)  # door keeps reporting: its deadline moves to 1450
    clock.advance_to(1200.0)
    await settle()
    assert sink.queue.empty()
    clock.advance_to(1300.0)
    tracker.seen("pir", sink)  # back
    assert await sink.next() == ("pir", True, 1300.0)
    clock.advance_to(1450.0)
    assert await sink.next() == ("door", False, 1450.0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert all(e.kind is EventKind.AVAILABILITY and e.room == "hall" for e in sink.events)
    assert all(e.source == "zigbee" for e in sink.events)


async def test_a_new_earlier_deadline_wakes_the_sleeper() -> None:
    clock = VirtualClock(Instant(T0, 0.0))
    tracker = AvailabilityTracker(clock, "test")
    tracker.watch("battery-pir", None, mains=False)  # 6 h
    sink = Sink()
    task = asyncio.create_task(tracker.run(sink))
    await settle()
    tracker.watch("plug", None, mains=True)  # 2 h: earlier than the deadline run sleeps on
    await settle()
    clock.advance_to(DEFAULT_MAINS_TIMEOUT)
    assert await sink.next() == ("plug", False, DEFAULT_MAINS_TIMEOUT)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def test_explicit_offline_and_online() -> None:
    tracker = AvailabilityTracker(VirtualClock(Instant(T0, 0.0)), "z2m")
    tracker.watch("pir", None, mains=False)
    events: list[Event] = []
    tracker.set_online("pir", False, events.append)
    tracker.set_online("pir", False, events.append)
    tracker.set_online("pir", True, events.append)
    tracker.set_online("unknown", True, events.append)
    assert [(e.device, e.value) for e in events] == [("pir", False), ("pir", True)]


async def test_reconnect_state_machine_and_capped_jittered_backoff() -> None:
    clock = VirtualClock(Instant(T0, 0.0))
    link = Reconnect("zigbee", clock, Backoff(start=1.0, cap=8.0))
    events: list[Event] = []
    assert link.state is LinkState.CONNECTING
    link.connected(events.append)
    link.connected(events.append)
    link.lost(events.append, OSError("radio unplugged"))
    link.lost(events.append, "still gone")
    assert link.state is LinkState.WAITING
    delays = [link.backoff.next_delay() for _ in range(6)]
    assert all(0.8 * d <= got <= 1.2 * d for got, d in zip(delays[:4], [1, 2, 4, 8], strict=True))
    assert max(delays) <= 8.0
    link.backoff.reset()
    waiter = asyncio.create_task(link.wait())
    await settle()
    assert not waiter.done()
    clock.advance_to(1.3)
    await waiter
    assert link.state is LinkState.CONNECTING
    link.connected(events.append)
    assert [(e.device, e.value) for e in events] == [
        ("link:zigbee", True),
        ("link:zigbee", False),
        ("link:zigbee", True),
    ]
    assert link.losses == 1
    assert link.last_error == "still gone"


def test_rejections_log_once_per_device_and_reason(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    rejections = Rejections("ble")
    for _ in range(100):
        rejections.reject("pendant", "decryption failed")
    rejections.reject("pendant", "truncated")
    rejections.reject("pir", "truncated")
    assert rejections.counts == {
        "pendant: decryption failed": 100,
        "pendant: truncated": 1,
        "pir: truncated": 1,
    }
    assert rejections.total == 102
    assert len([r for r in caplog.records if r.name == "devices.availability"]) == 3


def test_change_filter() -> None:
    changes_ = ChangeFilter()
    seq = [
        ("pir", EventKind.MOTION, True),
        ("pir", EventKind.MOTION, True),
        ("pir", EventKind.MOTION, False),
        ("pir", EventKind.MOTION, False),
        ("pir", EventKind.BATTERY, 90.0),
        ("pir", EventKind.BATTERY, 90.0),
        ("btn", EventKind.BUTTON, "single"),
        ("btn", EventKind.BUTTON, "single"),
    ]
    assert [changes_.is_news(*item) for item in seq] == [True, True, True, False, True, False, True, True]
    changes_.forget("pir")
    assert changes_.is_news("pir", EventKind.BATTERY, 90.0)
