"""The demo flat and the clocks it runs on."""

from __future__ import annotations

import asyncio
import datetime as dt
import random
from zoneinfo import ZoneInfo

import pytest

from devices.simulated import MOMENTS, SimulatedFlat, day_plan
from hub.clock import Instant, ScaledClock, VirtualClock
from hub.config import HubConfig
from hub.events import Event, EventKind

BERLIN = ZoneInfo("Europe/Berlin")


def test_a_day_is_ordered_deterministic_and_uses_only_demo_devices(demo_config: HubConfig) -> None:
    first = day_plan(random.Random("1:2026-03-03"))
    again = day_plan(random.Random("1:2026-03-03"))
    other = day_plan(random.Random("1:2026-03-04"))
    assert first == again
    assert first != other
    assert [s.at for s in first] == sorted(s.at for s in first)
    assert all(0 <= s.at < 86_400 for s in first)
    assert {s.device for s in first} <= {d.id for d in demo_config.devices}
    assert set(MOMENTS) <= set(first)


def test_every_on_has_its_off_and_the_night_is_spent_in_bed() -> None:
    plan = day_plan(random.Random(3), with_moments=False)
    state: dict[tuple[str, EventKind], object] = {}
    for step in plan:
        if step.kind in {EventKind.MOTION, EventKind.PRESSURE, EventKind.CONTACT, EventKind.APPLIANCE}:
            state[(step.device, step.kind)] = step.value
    # By the end of the day every sensor is back off, but the resident is in bed.
    assert {k: v for k, v in state.items() if v is True} == {("bed-mat", EventKind.PRESSURE): True}
    bed = [s for s in plan if s.device == "bed-mat" and s.kind is EventKind.PRESSURE]
    assert (bed[0].value, bed[0].at) == (True, 0)


async def test_the_demo_starts_from_the_morning_state_and_plays_on_the_clock(demo_config: HubConfig) -> None:
    start = dt.datetime(2026, 3, 3, 6, 30, tzinfo=BERLIN).timestamp()
    clock = VirtualClock(Instant(start, 0.0))
    flat = SimulatedFlat(demo_config, clock, seed=1)
    events: list[Event] = []
    task = asyncio.create_task(flat.run(events.append))
    await asyncio.sleep(0)
    # At 06:30 the resident is in bed: the bed mat says so before anything moves.
    assert [(e.device, e.value) for e in events if e.kind is EventKind.PRESSURE] == [("bed-mat", True)]
    for minute in range(1, 121):
        clock.advance_to(minute * 60.0)
        for _ in range(5):
            await asyncio.sleep(0)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    times = [dt.datetime.fromtimestamp(e.wall, BERLIN) for e in events]
    assert times == sorted(times)
    assert all(dt.time(6, 30) <= t.time() <= dt.time(8, 30) for t in times)
    getting_up = next(e for e in events if e.device == "bed-mat" and e.value is False)
    assert dt.time(6, 40) <= dt.datetime.fromtimestamp(getting_up.wall, BERLIN).time() <= dt.time(7, 10)
    assert any(e.device == "kettle" and e.kind is EventKind.POWER and e.value == 2000.0 for e in events)
    assert all(e.source == "simulated" and e.room == demo_config.device(e.device).room for e in events)


def test_a_dst_day_keeps_its_routine_at_local_times(demo_config: HubConfig) -> None:
    # 2026-03-29: clocks go from 02:00 to 03:00 in Berlin; getting up stays near 07:00 local.
    start = dt.datetime(2026, 3, 29, 0, 0, tzinfo=BERLIN).timestamp()
    flat = SimulatedFlat(demo_config, VirtualClock(Instant(start, 0.0)), seed=1, with_moments=False)
    kettle = next(w for w, s in flat.schedule(start) if s.device == "kettle")
    assert dt.time(7, 10) <= dt.datetime.fromtimestamp(kettle, BERLIN).time() <= dt.time(7, 40)


async def test_scaled_clock_runs_faster_and_never_backwards() -> None:
    clock = ScaledClock(start_wall=1_000_000.0, speed=1000.0)
    first = clock.now()
    await clock.sleep_until(first.mono + 50.0)  # 50 flat seconds: 50 ms
    second = clock.now()
    assert second.mono - first.mono >= 50.0
    assert second.wall - first.wall == pytest.approx(second.mono - first.mono)
    with pytest.raises(ValueError, match="speed must be positive"):
        ScaledClock(0.0, 0.0)


async def test_virtual_clock_wakes_sleepers_in_order_and_ignores_going_back() -> None:
    clock = VirtualClock(Instant(100.0, 0.0))
    woke: list[float] = []

    async def sleeper(at: float) -> None:
        await clock.sleep_until(at)
        woke.append(clock.now().mono)

    tasks = [asyncio.create_task(sleeper(t)) for t in (30.0, 10.0, 20.0)]
    await asyncio.sleep(0)
    clock.advance_to(25.0)
    await asyncio.sleep(0)
    clock.advance_to(5.0)  # never backwards
    assert clock.now() == Instant(125.0, 25.0)
    clock.advance_to(30.0)
    await asyncio.gather(*tasks)
    assert woke == [25.0, 25.0, 30.0]
    clock.set_wall(50.0)  # an NTP jump moves wall time only
    assert clock.now() == Instant(50.0, 30.0)


async def test_simulated_devices_without_a_routine_end_quietly_instead_of_freezing() -> None:
    from hub.config import parse_config

    config = parse_config(
        "flat: {id: f, name: F}\nrooms: [hall]\ndevices:\n  - {id: door, room: hall, kind: contact, simulated: true}\n"
    )
    flat = SimulatedFlat(config, VirtualClock(Instant(1_772_521_200.0, 0.0)))
    events: list[Event] = []
    await asyncio.wait_for(flat.run(events.append), 2)  # returned, and the loop was never blocked
    assert events == []
