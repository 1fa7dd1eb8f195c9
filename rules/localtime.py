"""Local time of the flat for rules: time of day, daily windows, and the next time a clock shows HH:MM.

Rules judge durations on the monotonic clock; the wall clock only says what time of day it is in
the flat (a Pi without RTC jumps its wall clock at boot and on NTP sync). Everything here is pure
and DST-aware through `zoneinfo`: 02:30 on the night clocks go forward does not exist and 02:30
on the night they go back exists twice; see `_resolve` for which instant such a reading means.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Final

MINUTES_PER_DAY: Final = 24 * 60


def local(wall: float, tz: dt.tzinfo) -> dt.datetime:
    return dt.datetime.fromtimestamp(wall, tz)


def minute_of_day(wall: float, tz: dt.tzinfo) -> float:
    moment = local(wall, tz)
    return moment.hour * 60 + moment.minute + moment.second / 60


def hhmm(wall: float, tz: dt.tzinfo) -> str:
    return local(wall, tz).strftime("%H:%M")


def minute_text(minute: float) -> str:
    whole = round(minute) % MINUTES_PER_DAY
    return f"{whole // 60:02d}:{whole % 60:02d}"


def duration_text(seconds: float) -> str:
    """`45 min`, `3 h`, `2 h 05 min`: what a caregiver reads in a reason."""
    minutes = max(0, round(seconds / 60))
    if minutes < 60:
        return f"{minutes} min"
    hours, rest = divmod(minutes, 60)
    return f"{hours} h" if rest == 0 else f"{hours} h {rest:02d} min"


def next_local(wall: float, minute: int, tz: dt.tzinfo) -> float:
    """The first wall instant strictly after `wall` at which the flat's clocks show `minute` (HH:MM)."""
    here = local(wall, tz)
    hour, mins = divmod(minute % MINUTES_PER_DAY, 60)
    day = here.date()
    for _ in range(3):
        naive = dt.datetime.combine(day, dt.time(hour, mins))
        candidate = _resolve(naive, tz)
        if candidate > wall:
            return candidate
        day += dt.timedelta(days=1)
    raise AssertionError("unreachable: a day later the time of day exists")  # pragma: no cover


def _resolve(naive: dt.datetime, tz: dt.tzinfo) -> float:
    """Wall seconds of a local reading.

    fold=0, as the replay reader does: a reading shown twice (autumn) means its first occurrence;
    a reading the clocks skip (spring) counts with the offset before the jump.
    """
    return naive.replace(tzinfo=tz, fold=0).timestamp()


@dataclasses.dataclass(frozen=True, slots=True)
class DailyWindow:
    """A daily span of local time [start, end) in minutes; it may wrap midnight (23:00-06:00)."""

    start: int
    end: int

    def __post_init__(self) -> None:
        for value in (self.start, self.end):
            if not 0 <= value < MINUTES_PER_DAY:
                raise ValueError(f"a time of day lies in 0..1439 minutes, got {value}")

    def contains(self, minute: float) -> bool:
        if self.start == self.end:
            return True  # the whole day
        if self.start < self.end:
            return self.start <= minute < self.end
        return minute >= self.start or minute < self.end

    def contains_wall(self, wall: float, tz: dt.tzinfo) -> bool:
        return self.contains(minute_of_day(wall, tz))

    def next_end(self, wall: float, tz: dt.tzinfo) -> float:
        return next_local(wall, self.end, tz)

    def next_start(self, wall: float, tz: dt.tzinfo) -> float:
        return next_local(wall, self.start, tz)

    @property
    def text(self) -> str:
        return f"{minute_text(self.start)}-{minute_text(self.end)}"

    @property
    def between(self) -> str:
        if self.start == self.end:
            return "all day"
        return f"between {minute_text(self.start)} and {minute_text(self.end)}"
