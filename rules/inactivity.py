"""Inactivity: no sign of life for longer than this flat's own history says is normal.

The limit depends on the local time of day, on the weekday once enough weeks are seen, and on the
context the resident was last seen in (coarse on purpose: every finer split learns from fewer
quiet periods and so meets more "longest ever" ones, each a false alarm):

- **in bed**: a bed mat occupied and the resident just at it (mats stick on). Lying still all
  night is normal; not being up by the usual time is not.
- **seated**: likewise for a seat mat. A film is normal; a whole afternoon without getting up is not.
- **bedroom**: seen in a bedroom in the last minutes, no mat to say more: perhaps asleep. In a flat
  without a bed mat this is what tells sleep from a collapse in the kitchen.
- **active**: anything else.
- **away**: the front door was the last sign of life and nothing moved for `away_confirm_s`;
  the rule is suspended until the door is used again, or until signs of life from
  `return_devices` different devices come close together (one stray sensor, a pet or a switch
  letting go, is not a return).

How limits are learned (after Floeck & Litz, "Inactivity patterns and alarm generation in
senior citizens' houses", 2009): every completed quiet period ("gap") of at least one slot is kept
for `history_days` with its local start, length and context. For every 15-minute slot of the day
the profile holds the longest quiet that was *in progress* within `tolerance_s` of that slot. The
limit at a slot is `margin` times that, clamped to the posture's floor and ceiling. A night that
usually ends by 07:00 therefore stops excusing stillness at 07:00 plus the tolerance:
"no activity since 22:31 (in bed), last in the bedroom; usually up by 07:00 on Tuesdays".
A context seen on fewer than `min_support` days around the time the quiet began is judged by
every context's history instead (the most tolerant); a weekday's own profile is used once
`weekday_min_days` of that weekday are known, the pooled one before.

Until `min_days` complete days are learned, the limit never falls below the posture's ceiling
times the missing confidence (day 0: the ceiling; half-way: half of it): a new flat is protected
by conservative defaults from its first hour. Fixed limits from the installer always apply on
top (the shorter wins).

Safety properties:
- Timers and durations use the monotonic clock; the wall clock only maps instants to the time of
  day. A wall-clock jump (a Pi without RTC) moves where in the profile the rule looks, never the
  quiet it measures, so it neither raises nor hides an incident; the gap it fell in is not learned.
  On DST nights the quiet is an hour longer or shorter than the clocks show; the margin covers it.
- Learning uses only completed gaps, i.e. only the past. A gap that raised an alarm is learned
  only if the resident ended it (a sign of life inside, "I'm OK", a check-in), never when it
  ended with someone coming through the front door or a help call, which is how emergencies end.
- A sensor that goes offline degrades the rule and every reason says so. If every activity
  sensor is offline the rule is blind: it raises "degraded safety", never an inactivity alarm a
  dead radio caused, and restarts its clock when the sensors return.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import enum
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

from hub.clock import Instant
from hub.events import Event, EventKind, Incident, IncidentKind, Severity, Value
from rules.base import ClearIncident, Decision, RaiseIncident, WakeAt
from rules.localtime import DailyWindow, duration_text, hhmm, local

SLOT_S: Final = 15 * 60
SLOTS: Final = 24 * 3600 // SLOT_S
# A wall clock that moves by more than this against the monotonic one has jumped (NTP, RTC-less boot).
WALL_JUMP_S: Final = 120.0
STATE_VERSION: Final = 1
WAKE_KEY: Final = "inactivity"

# Kinds whose every edge is a sign of life: a mat released or a door closed is someone moving.
_BOTH_EDGES: Final = frozenset({EventKind.MOTION, EventKind.CONTACT, EventKind.PRESSURE})
# Kinds whose ON edge only is one: an appliance switching itself off or a flush tank refilling is not.
_ON_EDGE: Final = frozenset(
    {
        EventKind.FLUSH,
        EventKind.APPLIANCE,
        EventKind.BUTTON,
        EventKind.HELP,
        EventKind.RESIDENT_OK,
        EventKind.CHECKIN,
    }
)


def is_sign_of_life(event: Event) -> bool:
    if event.kind in _BOTH_EDGES:
        return isinstance(event.value, bool)
    if event.kind in _ON_EDGE:
        return event.value is not False and event.value is not None
    return False


class Posture(enum.StrEnum):
    """What the mats say about the resident at the last sign of life."""

    ACTIVE = "active"
    SEATED = "seated"
    IN_BED = "in_bed"


class Presence(enum.StrEnum):
    HOME = "home"
    LEAVING = "leaving"  # the front door was the last sign of life, not yet long enough to call it away
    AWAY = "away"


_POSTURE_TEXT: Final = {Posture.ACTIVE: "", Posture.SEATED: " (seated)", Posture.IN_BED: " (in bed)"}
_WEEKDAYS: Final = ("Mondays", "Tuesdays", "Wednesdays", "Thursdays", "Fridays", "Saturdays", "Sundays")


class Context(enum.StrEnum):
    """The situation quiet periods are learned under."""

    ACTIVE = "active"
    BEDROOM = "bedroom"  # last seen in a bedroom, no bed mat to say more: maybe asleep
    SEATED = "seated"
    IN_BED = "in_bed"


_POSTURES: Final = {
    Context.ACTIVE: Posture.ACTIVE,
    Context.BEDROOM: Posture.ACTIVE,
    Context.SEATED: Posture.SEATED,
    Context.IN_BED: Posture.IN_BED,
}


def posture_of(context: str) -> Posture:
    return _POSTURES.get(Context(context), Posture.ACTIVE) if context in _CONTEXTS else Posture.ACTIVE


_CONTEXTS: Final = frozenset(str(c) for c in Context)


@dataclasses.dataclass(frozen=True, slots=True)
class FixedLimit:
    """An installer's limit: no sign of life for `limit_s` within the daily `window` raises."""

    window: DailyWindow
    limit_s: float


@dataclasses.dataclass(frozen=True, slots=True)
class PostureLimits:
    """Per posture: the shortest limit learning may set, and the longest this rule ever waits."""

    floor_s: float
    ceiling_s: float


DEFAULT_LIMITS: Final[Mapping[Posture, PostureLimits]] = {
    Posture.ACTIVE: PostureLimits(floor_s=2 * 3600.0, ceiling_s=12 * 3600.0),
    # Sitting or lying still is what these places are for: learning never goes below these.
    Posture.SEATED: PostureLimits(floor_s=2 * 3600.0, ceiling_s=12 * 3600.0),
    Posture.IN_BED: PostureLimits(floor_s=3 * 3600.0, ceiling_s=16 * 3600.0),
}


@dataclasses.dataclass(frozen=True, slots=True)
class _Gap:
    start_wall: float
    duration_s: float
    context: str


@dataclasses.dataclass(frozen=True, slots=True)
class _Seen:
    mono: float
    wall: float
    device: str
    room: str | None
    context: str

    @property
    def posture(self) -> Posture:
        return posture_of(self.context)


@dataclasses.dataclass(frozen=True, slots=True)
class _Limit:
    """The limit in force at one slot, and why: what an incident's reason explains."""

    seconds: float
    basis: str  # learned, learning, fixed, ceiling
    usual_s: float = 0.0  # learned: the longest quiet seen at this time of day
    weekday: int | None = None  # learned per weekday: which
    pooled: bool = False  # learned from every context (too little history in this one)
    window: DailyWindow | None = None  # fixed: which window


@dataclasses.dataclass(frozen=True, slots=True)
class _Breach:
    """When the running quiet will exceed its limit, the limit then, and the longest quiet that
    began around the same time of day (what "usually by" in the reason is read from)."""

    mono: float
    limit: _Limit
    usual_s: float


def slot_index(moment: dt.datetime) -> int:
    """The 15-minute slot of the local day a moment falls in (0..SLOTS-1)."""
    return (moment.hour * 60 + moment.minute) // (SLOT_S // 60)


class _History:
    """What was learned: quiet periods, days seen, and when each context occurred.

    Profiles (the longest quiet in progress per context and slot, pooled and per weekday) and
    support (on how many days a context was seen near a slot) are derived and rebuilt on load.
    """

    def __init__(self, tz: dt.tzinfo, tolerance_s: float) -> None:
        self._tz = tz
        self._tolerance = tolerance_s
        self._reach = max(0, math.ceil(tolerance_s / SLOT_S))  # the tolerance in whole slots
        self.gaps: list[_Gap] = []
        self.days: set[int] = set()  # local dates (ordinals) with signs of life at home
        self.seen: dict[str, dict[int, int]] = {}  # context -> date -> bit mask of slots
        self.pooled: dict[str, list[float]] = {}
        self.weekday: dict[tuple[str, int], list[float]] = {}
        # The longest quiet that *began* within the tolerance of each slot: "usually by" in reasons.
        self.longest: dict[tuple[str, int | None], list[float]] = {}
        self._support: dict[str, list[int]] = {}
        self._any: list[float] | None = None
        self._weekdays: collections.Counter[int] | None = None
        self._windows = [
            sum(1 << ((slot + offset) % SLOTS) for offset in range(-self._reach, self._reach + 1))
            for slot in range(SLOTS)
        ]

    # -- recording ---------------------------------------------------------------------------

    def saw(self, context: str, wall: float) -> None:
        moment = local(wall, self._tz)
        day = moment.date().toordinal()
        if day not in self.days:
            self.days.add(day)
            self._weekdays = None
        masks = self.seen.setdefault(context, {})
        bit = 1 << slot_index(moment)
        if not masks.get(day, 0) & bit:
            masks[day] = masks.get(day, 0) | bit
            self._support.pop(context, None)

    def add(self, gap: _Gap) -> None:
        self.gaps.append(gap)
        self._profile(gap)

    def _profile(self, gap: _Gap) -> None:
        end = gap.start_wall + gap.duration_s
        pooled = self.pooled.setdefault(gap.context, [0.0] * SLOTS)
        # Every slot whose window (the slot widened by the tolerance) overlaps the gap.
        slot = math.floor((gap.start_wall - self._tolerance) / SLOT_S) * SLOT_S
        while slot - self._tolerance <= end:
            reach = min(slot + SLOT_S + self._tolerance, end) - gap.start_wall
            if reach > 0:
                moment = local(slot, self._tz)
                index = slot_index(moment)
                pooled[index] = max(pooled[index], reach)
                by_day = self.weekday.setdefault((gap.context, moment.weekday()), [0.0] * SLOTS)
                by_day[index] = max(by_day[index], reach)
            slot += SLOT_S
        slot = math.floor((gap.start_wall - self._tolerance) / SLOT_S) * SLOT_S
        while slot <= gap.start_wall + self._tolerance:
            moment = local(slot, self._tz)
            index = slot_index(moment)
            for key in ((gap.context, None), (gap.context, moment.weekday())):
                row = self.longest.setdefault(key, [0.0] * SLOTS)
                row[index] = max(row[index], gap.duration_s)
            slot += SLOT_S
        self._any = None

    def prune(self, oldest: int) -> None:
        first_wall = dt.datetime.combine(dt.date.fromordinal(oldest), dt.time(), self._tz).timestamp()
        days = {day for day in self.days if day >= oldest}
        gaps = [g for g in self.gaps if g.start_wall >= first_wall]
        if len(gaps) == len(self.gaps) and days == self.days:
            return
        self.days, self.gaps = days, gaps
        self.seen = {
            context: kept
            for context, masks in self.seen.items()
            if (kept := {day: mask for day, mask in masks.items() if day >= oldest})
        }
        self.rebuild()

    def rebuild(self) -> None:
        self.pooled, self.weekday, self.longest = {}, {}, {}
        self._support, self._any, self._weekdays = {}, None, None
        for gap in self.gaps:
            self._profile(gap)

    # -- reading -----------------------------------------------------------------------------

    def support(self, context: str, index: int) -> int:
        """On how many days the resident was seen in `context` within the tolerance of slot `index`."""
        counts = self._support.get(context)
        if counts is None:
            counts = [0] * SLOTS
            for mask in self.seen.get(context, {}).values():
                for slot, window in enumerate(self._windows):
                    if mask & window:
                        counts[slot] += 1
            self._support[context] = counts
        return counts[index]

    def longest_from(self, context: str | None, index: int, weekday: int | None) -> float:
        """The longest quiet that began near slot `index` (in `context`, or in any if None)."""
        if context is None:
            rows = [row for (_, day), row in self.longest.items() if day == weekday]
            return max((row[index] for row in rows), default=0.0)
        return self.longest.get((context, weekday), _ZEROS)[index]

    def any_context(self, index: int) -> float:
        if self._any is None:
            self._any = [max((p[i] for p in self.pooled.values()), default=0.0) for i in range(SLOTS)]
        return self._any[index]

    def weekday_days(self, weekday: int) -> int:
        if self._weekdays is None:
            self._weekdays = collections.Counter(dt.date.fromordinal(day).weekday() for day in self.days)
        return self._weekdays[weekday]


class InactivityDetector:
    name = "inactivity"

    def __init__(
        self,
        *,
        tz: dt.tzinfo,
        activity_devices: Iterable[str] = (),
        front_doors: Iterable[str] = (),
        beds: Iterable[str] = (),
        seats: Iterable[str] = (),
        bedrooms: Iterable[str] = (),
        labels: Mapping[str, str] | None = None,
        links: Mapping[str, Iterable[str]] | None = None,
        fixed: Sequence[FixedLimit] = (),
        learned: bool = True,
        min_days: int = 7,
        margin: float = 1.5,
        tolerance_s: float = 90 * 60.0,
        min_support: int = 5,
        limits: Mapping[Posture, PostureLimits] | None = None,
        history_days: int = 56,
        weekday_min_days: int = 6,
        recent_s: float = 10 * 60.0,
        away_confirm_s: float = 10 * 60.0,
        return_devices: int = 2,
        return_window_s: float = 10 * 60.0,
    ) -> None:
        if margin < 1.0:
            raise ValueError("the margin multiplies the longest quiet seen: it must be >= 1")
        if min_days < 0 or history_days < 1 or weekday_min_days < 1 or min_support < 1:
            raise ValueError("min_days >= 0; history_days, weekday_min_days and min_support >= 1")
        self._tz = tz
        self._activity = frozenset(activity_devices)
        self._doors = frozenset(front_doors)
        self._beds = frozenset(beds)
        self._seats = frozenset(seats)
        self._bedrooms = frozenset(bedrooms)
        self._labels = dict(labels or {})
        self._links = {name: frozenset(devices) for name, devices in (links or {}).items()}
        self._fixed = tuple(fixed)
        self._learned = learned
        self._min_days = min_days
        self._margin = margin
        self._tolerance = tolerance_s
        self._min_support = min_support
        self._limits = {**DEFAULT_LIMITS, **(limits or {})}
        # No quiet is ever judged before this long: the precise limit (a walk over the learned
        # profile) is worked out only once a quiet has lasted it, not at every sign of life.
        self._earliest_s = min([b.floor_s for b in self._limits.values()] + [f.limit_s for f in self._fixed])
        self._history_days = history_days
        self._weekday_min = weekday_min_days
        self._recent = recent_s
        self._away_confirm = away_confirm_s
        self._return_devices = return_devices
        self._return_window = return_window_s
        # Live state (not persisted: after a restart the clock restarts at the first event).
        self._last: _Seen | None = None
        self._presence = Presence.HOME
        self._door_mono = -math.inf
        self._returning: collections.deque[tuple[float, str]] = collections.deque()
        self._mats: set[str] = set()
        self._mat_rooms: dict[str, str] = {}  # mat -> its room, as its events say
        self._bedroom_mono = -math.inf  # last sign of life at a bed or in a bedroom
        self._seat_mono = -math.inf  # last sign of life at a seat or in its room
        self._offline: dict[str, float] = {}  # device or link -> wall since
        self._blind_since: float | None = None
        self._offset: float | None = None  # wall - mono at the latest event
        self._unlearnable = False  # the running gap saw a wall jump, an outage or an absence
        self._open: _Seen | None = None  # the gap an open inactivity incident is about
        self._alarm: _Breach | None = None
        self._pending: tuple[_Seen, float] | None = None  # a quiet whose limit is not worked out yet
        # Learned state (persisted through snapshot/restore).
        self._history = _History(tz, tolerance_s)
        # Limits per (context, instant) for the current history: every sign of life walks up to
        # ceiling/15 min slots ahead, and the slots ahead are the same for the next event.
        self._limit_cache: dict[tuple[str, float, bool, float, int], _Limit] = {}
        self._history_version = 0
        self._pruned_for: int | None = None
        self.wall_jumps = 0

    # -- the detector contract --------------------------------------------------------------

    def on_event(self, event: Event, now: Instant) -> Sequence[Decision]:
        decisions: list[Decision] = []
        jumped = self._track_offset(now)
        if event.kind is EventKind.AVAILABILITY:
            decisions.extend(self._availability(event, now))
        elif (
            event.kind is EventKind.PRESSURE
            and isinstance(event.value, bool)
            and (event.device in self._beds or event.device in self._seats)
        ):
            (self._mats.add if event.value else self._mats.discard)(event.device)
        if is_sign_of_life(event) and self._offline:
            # A device that reports is online, and so is the link it came through.
            decisions.extend(self._alive(event.device, now))
        if is_sign_of_life(event) and self._blind_since is None:
            self._where(event, now)
            decisions.extend(self._sign_of_life(event, now))
        elif jumped:
            decisions.append(self._schedule())
        return decisions

    def on_wake(self, key: str, now: Instant) -> Sequence[Decision]:
        if key != WAKE_KEY:
            return ()
        if self._pending is not None:
            seen_then, offset = self._pending
            self._pending = None
            if seen_then is self._last:
                self._alarm = self._first_breach(seen_then, offset)
                if now.mono < self._alarm.mono:
                    return (WakeAt(WAKE_KEY, self._alarm.mono),)
        breach, seen = self._alarm, self._last
        if seen is None or breach is None or now.mono < breach.mono:
            return ()
        self._track_offset(now)
        self._open = seen
        self._alarm = None
        return (RaiseIncident(self._incident(seen, breach, now)),)

    # -- learning state, for the hub to show and persist -------------------------------------

    @property
    def tz(self) -> dt.tzinfo:
        return self._tz

    @property
    def days_learned(self) -> int:
        return len(self._history.days)

    def confidence(self, today: int | None = None) -> float:
        """0..1: how far learned limits have replaced the conservative defaults (complete days)."""
        if not self._learned:
            return 0.0
        if self._min_days == 0:
            return 1.0
        complete = sum(1 for day in self._history.days if today is None or day < today)
        return min(1.0, complete / self._min_days)

    def learning_state(self) -> dict[str, Any]:
        """What the dashboard shows: days seen, confidence, and the learned limits by hour."""
        today = local(self._last.wall, self._tz).date().toordinal() if self._last is not None else None
        hours: dict[str, list[int]] = {}
        for context, profile in sorted(self._history.pooled.items()):
            bounds = self._limits[posture_of(context)]
            hours[context] = [
                round(
                    min(bounds.ceiling_s, max(bounds.floor_s, self._margin * max(profile[h * 4 : h * 4 + 4])))
                    / 60
                )
                for h in range(24)
            ]
        return {
            "enabled": self._learned,
            "days_seen": self.days_learned,
            "min_days": self._min_days,
            "confidence": round(self.confidence(today), 3),
            "gaps_learned": len(self._history.gaps),
            "contexts": sorted(self._history.seen),
            "learned_limit_minutes_by_hour": hours,
        }

    def status(self) -> dict[str, Any]:
        """Where the rule stands now: presence, context and the last sign of life."""
        last = self._last
        return {
            "presence": str(self._presence),
            "context": last.context if last is not None else None,
            "last_wall": last.wall if last is not None else None,
            "last_room": last.room if last is not None else None,
            "alarm_mono": self._next_alarm_mono(),
            "open": self._open is not None,
            "blind": self._blind_since is not None,
            "offline": sorted(self._offline),
        }

    def _next_alarm_mono(self) -> float | None:
        if self._pending is not None:
            return self._first_breach(*self._pending).mono
        return self._alarm.mono if self._alarm is not None else None

    def snapshot(self) -> dict[str, Any]:
        """The learned state as plain JSON data (the store's `detector_state` row)."""
        history = self._history
        return {
            "version": STATE_VERSION,
            "days": sorted(history.days),
            "gaps": [[g.start_wall, g.duration_s, g.context] for g in history.gaps],
            "seen": {
                context: {str(day): mask for day, mask in masks.items()}
                for context, masks in history.seen.items()
            },
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        """Take back a snapshot before the first event; a damaged or foreign one is refused whole.

        A running quiet keeps the limit it was given until the next sign of life.
        """
        if not isinstance(state, Mapping) or state.get("version") != STATE_VERSION:
            raise ValueError(f"not an inactivity state of version {STATE_VERSION}")
        try:
            days = {int(day) for day in state["days"]}
            gaps = [
                _Gap(float(start), float(length), str(context)) for start, length, context in state["gaps"]
            ]
            seen = {
                str(context): {int(day): int(mask) for day, mask in masks.items()}
                for context, masks in state["seen"].items()
            }
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise ValueError(f"damaged inactivity state: {err!r}") from err
        if any(not (math.isfinite(g.start_wall) and 0 <= g.duration_s <= 7 * 86400) for g in gaps):
            raise ValueError("damaged inactivity state: a quiet period out of range")
        if any(not 0 <= mask < 1 << SLOTS for masks in seen.values() for mask in masks.values()):
            raise ValueError("damaged inactivity state: a slot mask out of range")
        history = _History(self._tz, self._tolerance)
        history.days, history.gaps, history.seen = days, sorted(gaps, key=lambda g: g.start_wall), seen
        history.rebuild()
        self._history = history
        self._history_version += 1
        self._pruned_for = None

    # -- events ------------------------------------------------------------------------------

    def _track_offset(self, now: Instant) -> bool:
        offset = now.wall - now.mono
        jumped = self._offset is not None and abs(offset - self._offset) > WALL_JUMP_S
        if jumped:
            self.wall_jumps += 1
            self._unlearnable = True
        self._offset = offset
        return jumped

    def _sign_of_life(self, event: Event, now: Instant) -> list[Decision]:
        if event.device in self._doors:
            # Leaving or letting someone in: what follows decides which (`away_confirm_s`).
            decisions = self._end_gap(event, now) if self._presence is Presence.HOME else []
            self._presence = Presence.LEAVING
            self._door_mono = now.mono
            self._returning.clear()
            self._last = _Seen(now.mono, now.wall, event.device, event.room, self._context(now))
            decisions.append(self._schedule())
            return decisions
        if self._presence is Presence.LEAVING and now.mono - self._door_mono > self._away_confirm:
            self._presence = Presence.AWAY
        if self._presence is Presence.AWAY:
            # One stray sensor (a pet, sunlight on a PIR, a stuck switch letting go) is not a
            # return: without the door, only signs of life from several devices close together are.
            self._returning.append((now.mono, event.device))
            while self._returning and now.mono - self._returning[0][0] > self._return_window:
                self._returning.popleft()
            if len({device for _, device in self._returning}) < self._return_devices:
                return []
        decisions = self._end_gap(event, now) if self._presence is Presence.HOME else []
        if self._presence is not Presence.HOME:
            self._presence = Presence.HOME
            self._returning.clear()
            self._open = None
            self._unlearnable = False
        seen = _Seen(now.mono, now.wall, event.device, event.room, self._context(now))
        if self._learned:
            self._history.saw(seen.context, now.wall)
        self._last = seen
        decisions.append(self._schedule())
        return decisions

    def _end_gap(self, event: Event, now: Instant) -> list[Decision]:
        """A sign of life at home closes the running gap: learn it, clear an open incident."""
        decisions: list[Decision] = []
        seen = self._last
        if seen is not None:
            alarmed = self._open is not None
            # After an alarm, learn the quiet only if the resident ended it on their own: never
            # when someone came in through the front door or help was called.
            by_resident = event.device not in self._doors and event.kind is not EventKind.HELP
            if not self._unlearnable and (not alarmed or by_resident):
                self._learn(_Gap(seen.wall, now.mono - seen.mono, seen.context))
            if alarmed:
                where = self._labels.get(event.device, event.device)
                decisions.append(
                    ClearIncident(
                        IncidentKind.INACTIVITY,
                        seen.room,
                        f"sign of life at {hhmm(now.wall, self._tz)} ({where})",
                    )
                )
        self._open = None
        self._unlearnable = False
        return decisions

    def _where(self, event: Event, now: Instant) -> None:
        """Remember when the resident was last at a bed or a seat, or in their rooms."""
        if event.room is not None and (event.device in self._beds or event.device in self._seats):
            self._mat_rooms[event.device] = event.room
        bed_rooms = {self._mat_rooms.get(b) for b in self._beds} | self._bedrooms
        seat_rooms = {self._mat_rooms.get(s) for s in self._seats}
        if event.device in self._beds or (event.room is not None and event.room in bed_rooms):
            self._bedroom_mono = now.mono
        if event.device in self._seats or (event.room is not None and event.room in seat_rooms):
            self._seat_mono = now.mono

    def _context(self, now: Instant) -> Context:
        # Coarse on purpose: every finer split (per room) learns from fewer quiet periods and
        # meets more "longest ever" ones, each a false alarm. A mat counts only if the resident
        # was just at it (mats stick on); "bedroom" is a visit there in the last few minutes
        # (going to bed often ends with a trip to the bathroom).
        mono = now.mono
        at_bed = mono - self._bedroom_mono <= self._recent
        if at_bed and self._mats & self._beds:
            return Context.IN_BED
        if mono - self._seat_mono <= self._recent and self._mats & self._seats:
            return Context.SEATED
        if at_bed:
            return Context.BEDROOM
        return Context.ACTIVE

    # -- availability ------------------------------------------------------------------------

    def _covered(self, name: str) -> frozenset[str]:
        return self._links.get(name, frozenset({name}))

    def _alive(self, device: str, now: Instant) -> list[Decision]:
        for name in [n for n in self._offline if device in self._covered(n)]:
            del self._offline[name]
        return self._judge_blindness(now)

    def _availability(self, event: Event, now: Instant) -> list[Decision]:
        if not isinstance(event.value, bool):
            return []
        if event.value:
            self._offline.pop(event.device, None)
        else:
            self._offline.setdefault(event.device, now.wall)
        return self._judge_blindness(now)

    def _judge_blindness(self, now: Instant) -> list[Decision]:
        offline_devices = {d for name in self._offline for d in self._covered(name)}
        blind = bool(self._activity) and self._activity <= offline_devices
        if blind and self._blind_since is None:
            self._blind_since = now.wall
            self._alarm = None
            self._pending = None
            return [WakeAt(WAKE_KEY, None), RaiseIncident(self._blind_incident(now))]
        if not blind and self._blind_since is not None:
            self._blind_since = None
            # The silence while blind is no evidence either way: count afresh from the return.
            if self._last is not None and self._presence is Presence.HOME and self._open is None:
                self._last = dataclasses.replace(self._last, mono=now.mono, wall=now.wall)
                self._unlearnable = True
            return [
                ClearIncident(IncidentKind.DEGRADED_SAFETY, None, "activity sensors are back online"),
                self._schedule(),
            ]
        return []

    def _degraded_text(self) -> str:
        if not self._offline:
            return ""
        names = sorted(self._offline, key=lambda name: (self._offline[name], name))
        parts = [f"{self._labels.get(n, n)} offline since {hhmm(self._offline[n], self._tz)}" for n in names]
        return "; degraded: " + ", ".join(parts)

    def _blind_incident(self, now: Instant) -> Incident:
        return Incident(
            kind=IncidentKind.DEGRADED_SAFETY,
            severity=Severity.WARNING,
            room=None,
            reason=(
                f"inactivity rule blind: all {len(self._activity)} activity sensors offline "
                f"since {hhmm(now.wall, self._tz)}; a quiet flat can no longer be told from a dead radio"
            ),
            wall=now.wall,
            mono=now.mono,
            detector=self.name,
            evidence={"offline": ", ".join(sorted(self._offline))},
        )

    # -- limits ------------------------------------------------------------------------------

    def _schedule(self) -> WakeAt:
        seen = self._last
        if (
            seen is None
            or self._presence is not Presence.HOME
            or self._blind_since is not None
            or self._open is not None
            or self._offset is None
        ):
            self._alarm = None
            self._pending = None
            return WakeAt(WAKE_KEY, None)
        self._alarm = None
        self._pending = (seen, self._offset)
        return WakeAt(WAKE_KEY, seen.mono + self._earliest_s)

    def _first_breach(self, seen: _Seen, offset: float) -> _Breach:
        """The first monotonic instant at which the quiet since `seen` exceeds the limit."""
        # Where the last sign of life falls on the wall clock as it reads now (`offset`): after
        # a jump the profile is read at the corrected time of day, the quiet stays monotonic.
        start = seen.mono + offset
        ceiling = self._limits[seen.posture].ceiling_s
        own = self._trusted(seen, start)
        confidence = self.confidence(local(seen.wall, self._tz).date().toordinal())
        slot_start, slot_end = start, math.floor(start / SLOT_S) * SLOT_S + SLOT_S
        while True:  # at most ceiling / SLOT_S + 1 rounds: the limit never exceeds the ceiling
            limit = self._limit_at(seen, slot_start, own, confidence)
            seconds = min(limit.seconds, ceiling)
            if start + seconds < slot_end:
                break
            slot_start, slot_end = slot_end, slot_end + SLOT_S
        # What the reason calls usual: the longest quiet that began around this time of day.
        began = local(start, self._tz)
        weekday = began.weekday() if limit.weekday is not None else None
        usual = self._history.longest_from(seen.context if own else None, slot_index(began), weekday)
        return _Breach(seen.mono + max(slot_start - start, seconds), limit, usual)

    def _trusted(self, seen: _Seen, start_wall: float) -> bool:
        """Whether this context was seen often enough around the time the quiet began to judge it
        by its own history; if not, every context's history judges it (more conservative)."""
        if not self._learned:
            return False
        self._prune(local(seen.wall, self._tz).date().toordinal())
        index = slot_index(local(start_wall, self._tz))
        return self._history.support(seen.context, index) >= self._min_support

    def _limit_at(self, seen: _Seen, wall: float, own: bool, confidence: float) -> _Limit:
        """The limit in force at `wall` for the quiet since `seen`.

        `own`: judged by its context's own history (else by every context's); `confidence`:
        of the learned limits, from the days complete before the quiet began (only the past).
        """
        key = (seen.context, wall, own, confidence, self._history_version * 100_000 + len(self._history.days))
        cached = self._limit_cache.get(key)
        if cached is None:
            if len(self._limit_cache) > 20_000:
                self._limit_cache.clear()
            cached = self._limit_cache[key] = self._compute_limit(seen, wall, own, confidence)
        return cached

    def _compute_limit(self, seen: _Seen, wall: float, own: bool, confidence: float) -> _Limit:
        bounds = self._limits[seen.posture]
        moment = local(wall, self._tz)
        index = slot_index(moment)
        limit = _Limit(bounds.ceiling_s, "ceiling")
        if self._learned:
            history = self._history
            weekday = moment.weekday()
            if not own:
                usual, which = history.any_context(index), None
            elif history.weekday_days(weekday) >= self._weekday_min:
                usual, which = history.weekday.get((seen.context, weekday), _ZEROS)[index], weekday
            else:
                usual, which = history.pooled.get(seen.context, _ZEROS)[index], None
            learned = min(bounds.ceiling_s, max(bounds.floor_s, self._margin * usual))
            # The conservative default fades out as complete days are learned.
            prior = bounds.ceiling_s * (1.0 - confidence)
            if confidence > 0 and learned >= prior:
                limit = _Limit(learned, "learned", usual, which, pooled=not own)
            elif prior < bounds.ceiling_s:
                limit = _Limit(prior, "learning")
        minute = moment.hour * 60 + moment.minute
        for fixed in self._fixed:
            if fixed.window.contains(minute) and fixed.limit_s < limit.seconds:
                limit = _Limit(fixed.limit_s, "fixed", window=fixed.window)
        return limit

    # -- learning ----------------------------------------------------------------------------

    def _learn(self, gap: _Gap) -> None:
        if not self._learned or gap.duration_s < SLOT_S:
            return
        if gap.duration_s > self._limits[posture_of(gap.context)].ceiling_s:
            return  # longer than this rule ever waits: an outage or an absence, not a habit
        self._history.add(gap)
        self._history_version += 1

    def _prune(self, today: int) -> None:
        """Forget what is older than the history window; at most once per local day."""
        if self._pruned_for != today:
            self._pruned_for = today
            self._history.prune(today - self._history_days)
            self._history_version += 1

    # -- the incident ------------------------------------------------------------------------

    def _incident(self, seen: _Seen, breach: _Breach, now: Instant) -> Incident:
        limit = breach.limit
        since = hhmm(seen.wall, self._tz)
        where = f", last in the {seen.room}" if seen.room else ""
        quiet = duration_text(now.mono - seen.mono)
        head = f"no activity since {since}{_POSTURE_TEXT[seen.posture]}{where}"
        if limit.basis == "learned":
            days = f" on {_WEEKDAYS[limit.weekday]}" if limit.weekday is not None else ""
            learned = f"(learned over {self.days_learned} days)"
            if breach.usual_s >= SLOT_S:
                # On the flat's clock: after a DST night "usually by 07:00" still reads 07:00.
                by = local(seen.wall, self._tz).replace(tzinfo=None) + dt.timedelta(seconds=breach.usual_s)
                up = " up" if seen.posture is Posture.IN_BED else ""
                reason = f"{head}; usually{up} by {by:%H:%M}{days} {learned}"
            else:
                reason = f"{head}, {quiet}; never this quiet at this time{days} {learned}"
        elif limit.basis == "fixed" and limit.window is not None:
            reason = f"{head}, {quiet}; limit {duration_text(limit.seconds)} {limit.window.between}"
        elif limit.basis == "learning":
            reason = (
                f"{head}, {quiet}; still learning this flat "
                f"({self.days_learned} of {self._min_days} days), limit {duration_text(limit.seconds)}"
            )
        else:
            reason = f"{head}, {quiet}; the longest this rule ever waits"
        evidence: dict[str, Value] = {
            "since_wall": seen.wall,
            "last_device": seen.device,
            "context": seen.context,
            "quiet_s": round(now.mono - seen.mono, 1),
            "limit_s": round(limit.seconds, 1),
            "basis": limit.basis,
            "days_learned": self.days_learned,
            "confidence": round(self.confidence(), 3),
        }
        if self._offline:
            evidence["offline"] = ", ".join(sorted(self._offline))
        return Incident(
            kind=IncidentKind.INACTIVITY,
            severity=Severity.CRITICAL,
            room=seen.room,
            reason=reason + self._degraded_text(),
            wall=now.wall,
            mono=now.mono,
            detector=self.name,
            evidence=evidence,
        )


_ZEROS: Final = [0.0] * SLOTS
