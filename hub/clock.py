"""Real and virtual clocks.

Timers run on monotonic time; wall time is only for people and records (safety rule 3). The
virtual clock moves only when told to, so a replay of 28 days runs in seconds and gives exactly
the decisions a live run would.
"""

from __future__ import annotations

import asyncio
import dataclasses
import heapq
import itertools
import time
from typing import Protocol


@dataclasses.dataclass(frozen=True, slots=True)
class Instant:
    """One moment on both clocks."""

    wall: float
    mono: float

    def after(self, seconds: float) -> Instant:
        return Instant(self.wall + seconds, self.mono + seconds)


class Clock(Protocol):
    def now(self) -> Instant: ...

    async def sleep_until(self, mono: float) -> None:
        """Return once `now().mono >= mono`."""
        ...


class RealClock:
    def now(self) -> Instant:
        return Instant(time.time(), time.monotonic())

    async def sleep_until(self, mono: float) -> None:
        delay = mono - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)


class VirtualClock:
    """A clock that moves only by `advance_to`; sleepers wake in deadline order."""

    def __init__(self, start: Instant) -> None:
        self._now = start
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def now(self) -> Instant:
        return self._now

    async def sleep_until(self, mono: float) -> None:
        if mono <= self._now.mono:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (mono, next(self._order), future))
        await future

    def advance_to(self, mono: float) -> None:
        """Move time forward (never back) and wake every sleeper that is due."""
        if mono < self._now.mono:
            return
        self._now = self._now.after(mono - self._now.mono)
        while self._sleepers and self._sleepers[0][0] <= mono:
            _, _, future = heapq.heappop(self._sleepers)
            if not future.done():
                future.set_result(None)

    def set_wall(self, wall: float) -> None:
        """Jump the wall clock only, as NTP does on a Pi without RTC."""
        self._now = Instant(wall, self._now.mono)


class ScaledClock:
    """Real time, sped up: the demo flat lives a day in minutes with every timer in proportion.

    `speed=60` makes a 5-minute acknowledgement timeout pass in 5 real seconds. It starts at
    `start_wall` (e.g. 06:30 local this morning) and never jumps.
    """

    def __init__(self, start_wall: float, speed: float) -> None:
        if speed <= 0:
            raise ValueError("speed must be positive")
        self.speed = speed
        self._real_origin = time.monotonic()
        self._start_wall = start_wall

    def now(self) -> Instant:
        elapsed = (time.monotonic() - self._real_origin) * self.speed
        return Instant(self._start_wall + elapsed, elapsed)

    async def sleep_until(self, mono: float) -> None:
        delay = (mono - self.now().mono) / self.speed
        if delay > 0:
            await asyncio.sleep(delay)
