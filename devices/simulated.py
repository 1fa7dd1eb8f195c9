"""The demo flat: a resident's day in a small flat, played on the hub's clock.

Hall with front door, living room with chair mat, kitchen with kettle, bathroom, bedroom with bed
mat, and a pendant. Each day is drawn from a routine with a seeded jitter, so two runs with the
same seed emit the same events; scripted moments (a help call, a leak) show the whole chain from
sensor to escalation. On a `ScaledClock` the day passes in minutes with every timer in proportion.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import random
from collections.abc import Iterator
from types import TracebackType
from typing import Final, Self
from zoneinfo import ZoneInfo

from devices.base import Emit
from hub.clock import Clock
from hub.config import HubConfig
from hub.events import Event, EventKind, Value

log = logging.getLogger(__name__)

MOTION_HOLD: Final = 90.0  # seconds a PIR stays "occupied" after the last movement


@dataclasses.dataclass(frozen=True, slots=True)
class Step:
    at: float  # seconds after local midnight
    device: str
    kind: EventKind
    value: Value


@dataclasses.dataclass(frozen=True, slots=True)
class Visit:
    """The resident in one room from `start` for `minutes`, moving now and then."""

    start: str
    minutes: float
    room: str
    mat: str | None = None
    appliance: str | None = None


# One ordinary day. Times are local; the jitter moves each visit by a few minutes.
ROUTINE: Final = (
    Visit("00:00", 185, "bedroom", mat="bed-mat"),
    Visit("03:05", 3, "hall"),
    Visit("03:08", 7, "bathroom"),
    Visit("03:15", 2, "hall"),
    Visit("03:17", 213, "bedroom", mat="bed-mat"),
    Visit("06:55", 20, "bathroom"),
    Visit("07:20", 15, "kitchen", appliance="kettle"),
    Visit("07:40", 55, "living", mat="chair-mat"),
    Visit("08:40", 30, "kitchen"),
    Visit("09:15", 4, "hall"),
    Visit("11:20", 5, "hall"),
    Visit("11:30", 40, "kitchen", appliance="kettle"),
    Visit("12:15", 105, "living", mat="chair-mat"),
    Visit("14:05", 10, "bathroom"),
    Visit("14:20", 110, "living", mat="chair-mat"),
    Visit("16:15", 15, "kitchen", appliance="kettle"),
    Visit("16:35", 75, "living", mat="chair-mat"),
    Visit("17:55", 45, "kitchen"),
    Visit("18:45", 195, "living", mat="chair-mat"),
    Visit("22:05", 15, "bathroom"),
    Visit("22:25", 95, "bedroom", mat="bed-mat"),
)

# Leaving and coming home: the front door opens and closes around the away time.
DOOR_MOMENTS: Final = ("09:18", "11:20")

# Scripted moments a visitor can watch: the pendant's help button, a short leak.
MOMENTS: Final = (
    Step(15 * 3600 + 10 * 60, "pendant", EventKind.HELP, "pendant"),
    Step(20 * 3600, "bathroom-leak", EventKind.WATER_LEAK, True),
    Step(20 * 3600 + 4 * 60, "bathroom-leak", EventKind.WATER_LEAK, False),
)


def _seconds(hhmm: str) -> float:
    hours, minutes = hhmm.split(":")
    return int(hours) * 3600.0 + int(minutes) * 60.0


def day_plan(rng: random.Random, *, with_moments: bool = True) -> list[Step]:
    """Every sensor change of one day, in order."""
    steps: list[Step] = []
    for visit in ROUTINE:
        jitter = rng.uniform(-5, 5) * 60 if visit.start != "00:00" else 0.0
        start = max(0.0, _seconds(visit.start) + jitter)
        end = min(86_399.0, start + visit.minutes * 60)
        motion = f"{visit.room}-motion"
        if visit.mat:
            steps.append(Step(start, visit.mat, EventKind.PRESSURE, True))
            if end < 86_399.0:  # the night's sleep goes on past midnight: no false "out of bed"
                steps.append(Step(end, visit.mat, EventKind.PRESSURE, False))
        if visit.appliance:
            steps.append(Step(start + 120, visit.appliance, EventKind.APPLIANCE, True))
            steps.append(Step(start + 120, visit.appliance, EventKind.POWER, 2000.0))
            steps.append(Step(start + 330, visit.appliance, EventKind.POWER, 0.0))
            steps.append(Step(start + 330, visit.appliance, EventKind.APPLIANCE, False))
        # Moving about: often in kitchen and bathroom, rarely while asleep.
        gap = 1500.0 if visit.room == "bedroom" else 240.0
        at = start
        while at < end:
            steps.append(Step(at, motion, EventKind.MOTION, True))
            steps.append(Step(min(at + MOTION_HOLD, end), motion, EventKind.MOTION, False))
            at += MOTION_HOLD + rng.expovariate(1 / gap)
    # The daily check-in ("Tagestaste") on the way from breakfast to the living room.
    steps.append(
        Step(_seconds("08:35") + rng.uniform(0, 20 * 60), "checkin-button", EventKind.BUTTON, "single")
    )
    for hhmm in DOOR_MOMENTS:
        at = _seconds(hhmm) + rng.uniform(0, 60)
        steps.append(Step(at, "hall-door", EventKind.CONTACT, True))
        steps.append(Step(at + 20, "hall-door", EventKind.CONTACT, False))
    for quarter in range(96):  # climate reports every 15 minutes
        temperature = round(21.0 + rng.uniform(-0.4, 0.4) + (0.8 if 12 <= quarter / 4 < 18 else 0.0), 1)
        steps.append(Step(quarter * 900.0 + 30, "living-climate", EventKind.TEMPERATURE, temperature))
    for device in ("hall-door", "bed-mat", "chair-mat", "pendant", "bathroom-leak"):
        steps.append(Step(4 * 3600.0 + rng.uniform(0, 600), device, EventKind.BATTERY, 87.0))
    if with_moments:
        steps.extend(MOMENTS)
    steps.sort(key=lambda s: s.at)
    return steps


# Every device a day of the routine can drive (the plan does not depend on the seed's draws).
ROUTINE_DEVICES: Final = frozenset(step.device for step in day_plan(random.Random(0)))  # noqa: S311


class SimulatedFlat:
    """The demo flat's sensors, as one adapter."""

    name = "simulated"

    def __init__(self, config: HubConfig, clock: Clock, *, seed: int = 1, with_moments: bool = True) -> None:
        self._devices = {d.id: d for d in config.devices if d.simulated}
        self._tz = ZoneInfo(config.flat.timezone)
        self._clock = clock
        self._seed = seed
        self._with_moments = with_moments
        self.emitted = 0

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None

    def schedule(self, start_wall: float) -> Iterator[tuple[float, Step]]:
        """(wall time, step) from `start_wall` on, day after day, forever."""
        return (item for item in self._days(start_wall) if item[0] >= start_wall)

    def state_at(self, start_wall: float) -> list[Step]:
        """Where things stand when the demo starts: the resident in bed at 06:30, say."""
        latest: dict[tuple[str, EventKind], Step] = {}
        for wall, step in self._days(start_wall):
            if wall >= start_wall:
                break
            if step.kind in {EventKind.PRESSURE, EventKind.MOTION, EventKind.CONTACT, EventKind.APPLIANCE}:
                latest[(step.device, step.kind)] = step
        return list(latest.values())

    def _days(self, start_wall: float) -> Iterator[tuple[float, Step]]:
        # Only the demo flat's own devices have a routine; with none of them configured there is
        # nothing to play, and searching day after day for a step would freeze the event loop.
        if not self._devices.keys() & ROUTINE_DEVICES:
            return
        day = dt.datetime.fromtimestamp(start_wall, self._tz).date()
        while True:
            rng = random.Random(f"{self._seed}:{day.isoformat()}")  # noqa: S311 (not crypto)
            for step in day_plan(rng, with_moments=self._with_moments):
                # Local seconds after midnight, so a DST day keeps its 07:00 at 07:00.
                local = dt.datetime.combine(day, dt.time(0)) + dt.timedelta(seconds=step.at)
                wall = local.replace(tzinfo=self._tz).timestamp()
                if step.device in self._devices:
                    yield wall, step
            day += dt.timedelta(days=1)

    async def run(self, emit: Emit) -> None:
        unknown = sorted(self._devices.keys() - ROUTINE_DEVICES)
        if unknown:
            log.warning("simulated devices without a routine stay silent", extra={"devices": unknown})
        start = self._clock.now().wall
        for step in self.state_at(start):
            self._emit(emit, step)
        for wall, step in self.schedule(start):
            now = self._clock.now()
            await self._clock.sleep_until(now.mono + (wall - now.wall))
            self._emit(emit, step)

    def _emit(self, emit: Emit, step: Step) -> None:
        now = self._clock.now()
        device = self._devices[step.device]
        emit(
            Event(
                kind=step.kind,
                device=step.device,
                room=device.room,
                value=step.value,
                wall=now.wall,
                mono=now.mono,
                source="simulated",
            )
        )
        self.emitted += 1
