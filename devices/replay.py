"""Replay of public recordings of real homes as sensor events.

Three homes with binary sensors are supported, each in its own release format:

- Ordóñez home A (and B, same format): `OrdonezA_Sensors.txt` + `OrdonezA_ADLs.txt`.
- van Kasteren house A, original text release: `kasterenSenseData.txt` + `kasterenActData.txt`.
- van Kasteren house B, third-party conversion: `houseB.sensors`, `houseB.sensor_names`,
  `houseB.activities`, `houseB.activity_names`.

All of them record *intervals* in local wall-clock time without a zone; a sensor is ON from
start to end. Loading turns them into ON/OFF edges in UTC epoch seconds, and `ReplayAdapter`
feeds the edges to the hub as events while moving a `VirtualClock`, so weeks of a real flat run
through the real rules in seconds. The data itself stays outside the repository: callers pass
the path (e.g. `../shared/data/ordonez`). Loading reads files synchronously; from inside the
event loop call it through `asyncio.to_thread`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import heapq
import math
import re
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import Final, NamedTuple, Self
from zoneinfo import ZoneInfo

from devices.base import Emit
from hub.clock import Instant, VirtualClock
from hub.events import Event, EventKind

__all__ = [
    "ActivityLabel",
    "ReplayAdapter",
    "ReplayDataset",
    "ReplayFormatError",
    "ReplaySensor",
    "SensorChange",
    "load_dataset",
    "to_events",
    "virtual_clock_for",
]

DEFAULT_TZ: Final = ZoneInfo("Europe/Berlin")


class ReplayFormatError(ValueError):
    """A recording that does not have the expected layout; names file, line and expectation."""

    def __init__(self, path: Path, line: int | None, expected: str, got: str | None = None) -> None:
        self.path = path
        self.line = line
        self.expected = expected
        self.got = got
        where = f"{path}, line {line}" if line is not None else str(path)
        message = f"{where}: expected {expected}"
        if got is not None:
            shown = got if len(got) <= 80 else got[:77] + "..."
            message += f", got {shown!r}"
        super().__init__(message)


@dataclasses.dataclass(frozen=True, slots=True)
class ReplaySensor:
    device: str
    room: str | None
    kind: EventKind
    label: str
    role: str | None


@dataclasses.dataclass(frozen=True, slots=True)
class SensorChange:
    wall: float
    device: str
    on: bool


@dataclasses.dataclass(frozen=True, slots=True)
class ActivityLabel:
    start: float
    end: float
    label: str


@dataclasses.dataclass(frozen=True, slots=True)
class ReplayDataset:
    """One recorded home: its sensors, their ON/OFF edges in time order, and the annotations.

    `start`/`end` span both the edges and the annotated activities, so an evaluation sees the
    whole labelled period.
    """

    name: str
    sensors: Mapping[str, ReplaySensor]
    rooms: tuple[str, ...]
    changes: tuple[SensorChange, ...]
    activities: tuple[ActivityLabel, ...] = ()

    def __post_init__(self) -> None:
        # Checked here so a hand-built dataset fails at construction, not midway through a replay.
        if not self.changes:
            raise ValueError(f"dataset {self.name!r} has no sensor changes")
        previous = -math.inf
        for change in self.changes:
            if change.device not in self.sensors:
                raise ValueError(f"dataset {self.name!r}: change of unknown device {change.device!r}")
            if change.wall < previous:
                raise ValueError(f"dataset {self.name!r}: changes are not sorted by wall time")
            previous = change.wall

    @property
    def start(self) -> float:
        first = self.changes[0].wall
        return min(first, self.activities[0].start) if self.activities else first

    @property
    def end(self) -> float:
        last = self.changes[-1].wall
        return max([last, *(activity.end for activity in self.activities)])

    @property
    def days(self) -> float:
        return (self.end - self.start) / 86_400.0


# ---------------------------------------------------------------------------------------------
# Sensor tables: what each home's sensor is, where it is, and what it means to the rules


class _Spec(NamedTuple):
    slug: str
    room: str | None
    kind: EventKind
    role: str | None = None


_C, _M, _P, _F, _A = (
    EventKind.CONTACT,
    EventKind.MOTION,
    EventKind.PRESSURE,
    EventKind.FLUSH,
    EventKind.APPLIANCE,
)

# Ordóñez: the file names each sensor's type and place itself.
_ORDONEZ_TYPES: Final[Mapping[str, EventKind]] = {
    "pir": _M,
    "magnetic": _C,
    "pressure": _P,
    "flush": _F,
    "electric": _A,
}
_ORDONEZ_PLACES: Final[Mapping[str, str]] = {"entrance": "hall"}
_ORDONEZ_SLUGS: Final[Mapping[str, str]] = {"maindoor": "front-door"}
_FRONT_DOORS: Final = frozenset({"maindoor", "frontdoor", "front door", "entrance"})

# van Kasteren house A: every sensor is a reed switch except the toilet's float, so the
# microwave, dishwasher and washing machine entries mean "its door was open", not "it ran":
# CONTACT, never APPLIANCE (an "appliance left on" rule must not see a door left ajar).
_KASTEREN_A: Final[Mapping[str, _Spec]] = {
    "microwave": _Spec("microwave", "kitchen", _C),
    # The release swaps these two labels: ID 5 ("Hall-Toilet door") brackets the showers and
    # ID 6 ("Hall-Bathroom door") the toilet visits with their flushes. Device and room follow
    # the evidence; the label stays the dataset's own.
    "hall-toilet door": _Spec("bathroom-door", "bathroom", _C),
    "hall-bathroom door": _Spec("toilet-door", "toilet", _C),
    "cups cupboard": _Spec("cups-cupboard", "kitchen", _C),
    "fridge": _Spec("fridge", "kitchen", _C),
    "plates cupboard": _Spec("plates-cupboard", "kitchen", _C),
    "frontdoor": _Spec("front-door", "hall", _C, "front_door"),
    "dishwasher": _Spec("dishwasher", "kitchen", _C),
    "toiletflush": _Spec("toilet-flush", "toilet", _F, "toilet"),
    "freezer": _Spec("freezer", "kitchen", _C),
    "pans cupboard": _Spec("pans-cupboard", "kitchen", _C),
    # Where the washing machine stands is not in the release.
    "washingmachine": _Spec("washing-machine", None, _C),
    "groceries cupboard": _Spec("groceries-cupboard", "kitchen", _C),
    "hall-bedroom door": _Spec("bedroom-door", "bedroom", _C),
}

# van Kasteren house B (Dutch names). "kwik" is a mercury tilt switch (a drawer or lid moved),
# "gootsteen float" a float (reed) switch in the kitchen sink; toaster and magnetron (microwave)
# are switches too, ON for a second with rare stuck intervals of days, so none of them is
# APPLIANCE. A door between the hall and a room belongs to that room.
_KASTEREN_B: Final[Mapping[str, _Spec]] = {
    "toilet door": _Spec("toilet-door", "toilet", _C),
    "fridge": _Spec("fridge", "kitchen", _C),
    "cupboard groceries": _Spec("groceries-cupboard", "kitchen", _C),
    "toilet flush": _Spec("toilet-flush", "toilet", _F, "toilet"),
    "frontdoor": _Spec("front-door", "hall", _C, "front_door"),
    "cupboard plates": _Spec("plates-cupboard", "kitchen", _C),
    "bedroom door": _Spec("bedroom-door", "bedroom", _C),
    "press bed rechts": _Spec("bed-right", "bedroom", _P, "bed"),
    "press bed links": _Spec("bed-left", "bedroom", _P, "bed"),
    "kwik cutlary drawer": _Spec("cutlery-drawer", "kitchen", _C),
    "kwik stove lid": _Spec("stove-lid", "kitchen", _C),
    "pir slaapkamer": _Spec("bedroom-motion", "bedroom", _M),
    # Fires together with the bedroom PIR and the bed mats.
    "kwik dresser": _Spec("dresser", "bedroom", _C),
    "pir badkamer": _Spec("bathroom-motion", "bathroom", _M),
    "gootsteen float": _Spec("sink-float", "kitchen", _C),
    "toaster": _Spec("toaster", "kitchen", _C),
    "magnetron": _Spec("microwave", "kitchen", _C),
    "pir keuken": _Spec("kitchen-motion", "kitchen", _M),
    # The rooms of these four are not recorded.
    "drukmat bureaustoel (piano)": _Spec("office-chair", None, _P, "seat"),
    "drukmat stoel serverhoekje": _Spec("server-corner-chair", None, _P, "seat"),
    "balkon deur": _Spec("balcony-door", None, _C),
    "raam": _Spec("window", None, _C),
}
# IDs that fire in houseB.sensors but are missing from the conversion's houseB.sensor_names;
# names as in the original release's label table. ID 23 stays unnamed. ID 4 is the front door:
# the table's "frontdoor" (ID 7) never fires, while ID 4 fires within 35 s of 20 of the 24
# "leave-house" starts and within 15 s of 20 of their ends (checked on the release's own data).
_KASTEREN_B_UNNAMED: Final[Mapping[int, str]] = {
    4: "frontdoor",
    20: "Drukmat bureaustoel (piano)",
    22: "drukmat stoel serverhoekje",
    24: "balkon deur",
    25: "raam",
}
_HOME_TABLES: Final[Mapping[str, Mapping[str, _Spec]]] = {
    "kasteren-A": _KASTEREN_A,
    "kasteren-B": _KASTEREN_B,
}
_HOME_UNNAMED: Final[Mapping[str, Mapping[int, str]]] = {"kasteren-B": _KASTEREN_B_UNNAMED}

# For sensors no table knows (another house of a conversion): words in the name. A reed switch
# is the common case in these homes, hence CONTACT by default.
_KIND_WORDS: Final = (
    ("pir", _M),
    ("flush", _F),
    ("press", _P),
    ("drukmat", _P),
)
_ROOM_WORDS: Final = (
    ("toilet", "toilet"),
    ("bathroom", "bathroom"),
    ("badkamer", "bathroom"),
    ("bedroom", "bedroom"),
    ("slaapkamer", "bedroom"),
    ("bed", "bedroom"),
    ("kitchen", "kitchen"),
    ("keuken", "kitchen"),
    ("living", "living"),
    ("huiskamer", "living"),
    ("couch", "living"),
)


def _normalise(name: str) -> str:
    return " ".join(name.lower().split())


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def _guess(name: str) -> _Spec:
    words = _normalise(name)
    kind = next((kind for word, kind in _KIND_WORDS if word in words), _C)
    room = next((room for word, room in _ROOM_WORDS if word in words), None)
    if words in _FRONT_DOORS:
        return _Spec(_slug(name), "hall", _C, "front_door")
    role = {_F: "toilet", _P: "bed" if "bed" in words else "seat"}.get(kind)
    return _Spec(_slug(name), room, kind, role)


# ---------------------------------------------------------------------------------------------
# Lines and times


# Bounded: int() refuses strings of more than 4300 digits with a ValueError of its own.
_DIGITS = re.compile(r"[0-9]{1,18}", re.ASCII)
_ISO_DATE = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})", re.ASCII)
_KASTEREN_DATE = re.compile(r"([0-9]{1,2})-([A-Za-z]{3})-([0-9]{4})", re.ASCII)
_TIME = re.compile(r"([0-9]{2}):([0-9]{2}):([0-9]{2})", re.ASCII)
_MONTHS: Final[Mapping[str, int]] = {
    name: number
    for number, name in enumerate(
        ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"),
        start=1,
    )
}
_UTC_EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


class _Interval(NamedTuple):
    start: float
    end: float
    device: str
    line: int


# Known slips in the published files, matched by file name and the whole row (whitespace
# normalised) so that nothing else is ever touched. Each fix is argued from the data around it.
_ERRATA: Final[Mapping[str, Mapping[str, str]]] = {
    # Three labels end before they start. In each the end's minutes and seconds fit between the
    # start and the next label (and the sensors agree), but its day and hour came from another
    # row: keep the minutes and seconds, take the day and hour of the start.
    "OrdonezA_ADLs.txt": {
        # Flush 19:28:51-19:29:17; the next label starts 19:30:01.
        "2011-12-01 19:28:51 2011-12-01 16:29:59 Toileting": (
            "2011-12-01 19:28:51 2011-12-01 19:29:59 Toileting"
        ),
        # Basin and cabinet until 12:21:06; the next label starts 12:21:19.
        "2011-12-02 12:20:41 2011-12-01 10:20:59 Grooming": (
            "2011-12-02 12:20:41 2011-12-02 12:20:59 Grooming"
        ),
        # Toaster and microwave until 12:31:50; the next label starts 12:37:47.
        "2011-12-02 12:27:47 2011-12-01 11:35:49 Breakfast": (
            "2011-12-02 12:27:47 2011-12-02 12:35:49 Breakfast"
        ),
    },
}


def _read_lines(path: Path) -> list[str]:
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        # The 2008-2013 releases came out of Windows and Matlab tools.
        text = data.decode("latin-1")
    # Split on "\n" only (not str.splitlines) so line numbers match what an editor shows.
    lines = [line.removesuffix("\r") for line in text.split("\n")]
    fixes = _ERRATA.get(path.name)
    if fixes:
        lines = [fixes.get(" ".join(line.split()), line) for line in lines]
    return lines


def _local(
    path: Path, number: int, line: str, date: tuple[int, int, int], clock: str, tz: ZoneInfo
) -> dt.datetime:
    time = _TIME.fullmatch(clock)
    if time is None:
        raise ReplayFormatError(path, number, "a time HH:MM:SS", line)
    hour, minute, second = (int(part) for part in time.groups())
    try:
        # fold=0: a wall time repeated when DST ends means its first occurrence, and a time
        # skipped when DST starts counts with the offset before the jump. Deterministic.
        return dt.datetime(*date, hour, minute, second, tzinfo=tz, fold=0)
    except ValueError as err:
        raise ReplayFormatError(path, number, "a valid date and time", line) from err


def _iso(path: Path, number: int, line: str, day: str, clock: str, tz: ZoneInfo) -> dt.datetime:
    date = _ISO_DATE.fullmatch(day)
    if date is None:
        raise ReplayFormatError(path, number, "a date YYYY-MM-DD", line)
    year, month, mday = (int(part) for part in date.groups())
    return _local(path, number, line, (year, month, mday), clock, tz)


def _kasteren_time(path: Path, number: int, line: str, day: str, clock: str, tz: ZoneInfo) -> dt.datetime:
    date = _KASTEREN_DATE.fullmatch(day)
    month = _MONTHS.get(date.group(2).lower()) if date is not None else None
    if date is None or month is None:
        raise ReplayFormatError(path, number, "a date like 25-Feb-2008", line)
    return _local(path, number, line, (int(date.group(3)), month, int(date.group(1))), clock, tz)


def _as_if_utc(path: Path, number: int, line: str, seconds: int, tz: ZoneInfo) -> dt.datetime:
    """houseB writes local wall-clock time as if it were UTC: read it back as local time."""
    try:
        moment = _UTC_EPOCH + dt.timedelta(seconds=seconds)
    except OverflowError as err:
        raise ReplayFormatError(path, number, "a time before the year 10000", line) from err
    return moment.replace(tzinfo=tz, fold=0)


def _span(path: Path, number: int, line: str, start: dt.datetime, end: dt.datetime) -> tuple[float, float]:
    """Epoch seconds of an interval given in local wall-clock time."""
    # Same tzinfo on both: Python compares the wall-clock readings, as the recorder wrote them.
    if end < start:
        raise ReplayFormatError(path, number, "an end time not before the start time", line)
    try:
        first, last = start.timestamp(), end.timestamp()
    except (OverflowError, ValueError) as err:
        raise ReplayFormatError(path, number, "a time between the years 1 and 9999", line) from err
    # Only a start inside the hour skipped when DST begins can come out after its end: keep
    # such an interval with no length rather than reject a real recording.
    return first, max(first, last)


def _header(path: Path, lines: list[str], titles: tuple[str, ...], at: int = 0) -> None:
    """The two-line table header both Ordóñez and van Kasteren use: titles, then dashes."""
    if at >= len(lines) or tuple(lines[at].split()) != titles:
        got = lines[at] if at < len(lines) else None
        raise ReplayFormatError(path, at + 1, "the header " + repr(" ".join(titles)), got)
    underline = lines[at + 1].split() if at + 1 < len(lines) else []
    if not underline or any(token.strip("-") for token in underline):
        got = lines[at + 1] if at + 1 < len(lines) else None
        raise ReplayFormatError(path, at + 2, "a line of dashes under the header", got)


# ---------------------------------------------------------------------------------------------
# Row parsers: one line of text in, one typed tuple out, ReplayFormatError on anything else


class _OrdonezRow(NamedTuple):
    start: float
    end: float
    location: str
    type: str
    place: str


def _ordonez_sensor_row(path: Path, number: int, line: str, tz: ZoneInfo) -> _OrdonezRow:
    tokens = line.split()
    if len(tokens) != 7:
        raise ReplayFormatError(
            path, number, "7 fields: start date and time, end date and time, location, type, place", line
        )
    start, end = _span(
        path,
        number,
        line,
        _iso(path, number, line, tokens[0], tokens[1], tz),
        _iso(path, number, line, tokens[2], tokens[3], tz),
    )
    location, kind, place = tokens[4:]
    if kind.lower() not in _ORDONEZ_TYPES:
        raise ReplayFormatError(
            path, number, "a sensor type PIR, Magnetic, Pressure, Flush or Electric", line
        )
    if not _slug(location) or not _slug(place):
        raise ReplayFormatError(path, number, "a location and place with letters or digits", line)
    return _OrdonezRow(start, end, location, kind, place)


def _ordonez_activity_row(path: Path, number: int, line: str, tz: ZoneInfo) -> ActivityLabel:
    tokens = line.split()
    if len(tokens) < 5:
        raise ReplayFormatError(path, number, "start date and time, end date and time, activity", line)
    start, end = _span(
        path,
        number,
        line,
        _iso(path, number, line, tokens[0], tokens[1], tz),
        _iso(path, number, line, tokens[2], tokens[3], tz),
    )
    return ActivityLabel(start, end, " ".join(tokens[4:]))


class _KasterenRow(NamedTuple):
    start: float
    end: float
    id: int


def _kasteren_row(path: Path, number: int, line: str, tz: ZoneInfo, value: bool) -> _KasterenRow:
    """`start<TAB>end<TAB>ID` and, for sensors (`value`), `<TAB>1`; dates are 'DD-Mon-YYYY HH:MM:SS'."""
    tokens = line.split()
    expected = 6 if value else 5
    if len(tokens) != expected or not _DIGITS.fullmatch(tokens[4]):
        what = "start, end, sensor ID, value 1" if value else "start, end, activity ID"
        raise ReplayFormatError(path, number, what, line)
    if value and tokens[5] != "1":
        raise ReplayFormatError(path, number, "the value 1 (the sensor fired)", line)
    start, end = _span(
        path,
        number,
        line,
        _kasteren_time(path, number, line, tokens[0], tokens[1], tz),
        _kasteren_time(path, number, line, tokens[2], tokens[3], tz),
    )
    return _KasterenRow(start, end, int(tokens[4]))


def _house_row(path: Path, number: int, line: str, tz: ZoneInfo) -> _KasterenRow:
    """`start_epoch_s<TAB>duration_s<TAB>id` of the houseB conversion."""
    tokens = line.split()
    if len(tokens) != 3 or not all(_DIGITS.fullmatch(token) for token in tokens):
        raise ReplayFormatError(path, number, "start_epoch_s<TAB>duration_s<TAB>id, whole numbers", line)
    first, length, ident = (int(token) for token in tokens)
    start, end = _span(
        path,
        number,
        line,
        _as_if_utc(path, number, line, first, tz),
        _as_if_utc(path, number, line, first + length, tz),
    )
    return _KasterenRow(start, end, ident)


def _names(path: Path) -> dict[int, str]:
    """`id<TAB>name` lines of houseB.sensor_names / houseB.activity_names."""
    names: dict[int, str] = {}
    for number, line in enumerate(_read_lines(path), start=1):
        if not line.strip():
            continue
        parts = line.split(None, 1)
        if len(parts) != 2 or not _DIGITS.fullmatch(parts[0]):
            raise ReplayFormatError(path, number, "id<TAB>name", line)
        ident = int(parts[0])
        if ident in names:
            raise ReplayFormatError(path, number, f"an id not named before ({ident} is)", line)
        names[ident] = parts[1].strip()
    return names


# ---------------------------------------------------------------------------------------------
# One loader per home format


class _Parsed(NamedTuple):
    sensors: dict[str, ReplaySensor]
    intervals: list[_Interval]
    activities: list[ActivityLabel]


def _add_sensor(
    sensors: dict[str, ReplaySensor],
    sensor: ReplaySensor,
    path: Path,
    number: int | None,
    line: str | None,
) -> None:
    known = sensors.get(sensor.device)
    if known is None:
        sensors[sensor.device] = sensor
    elif (known.room, known.kind, known.role) != (sensor.room, sensor.kind, sensor.role):
        raise ReplayFormatError(path, number, f"the same type and place as before for {sensor.label!r}", line)


def _load_ordonez(sensors_file: Path, activities_file: Path | None, prefix: str, tz: ZoneInfo) -> _Parsed:
    lines = _read_lines(sensors_file)
    _header(sensors_file, lines, ("Start", "time", "End", "time", "Location", "Type", "Place"))
    sensors: dict[str, ReplaySensor] = {}
    intervals: list[_Interval] = []
    for number, line in enumerate(lines[2:], start=3):
        if not line.strip():
            continue
        row = _ordonez_sensor_row(sensors_file, number, line, tz)
        location = _normalise(row.location)
        kind = _ORDONEZ_TYPES[row.type.lower()]
        role = None
        if location in _FRONT_DOORS:
            role = "front_door"
        elif kind is _F:
            role = "toilet"
        elif kind is _P:
            role = "bed" if "bed" in location else "seat"
        device = prefix + _ORDONEZ_SLUGS.get(location, _slug(row.location))
        room = _ORDONEZ_PLACES.get(row.place.lower(), _slug(row.place))
        _add_sensor(sensors, ReplaySensor(device, room, kind, row.location, role), sensors_file, number, line)
        intervals.append(_Interval(row.start, row.end, device, number))
    activities: list[ActivityLabel] = []
    if activities_file is not None:
        lines = _read_lines(activities_file)
        _header(activities_file, lines, ("Start", "time", "End", "time", "Activity"))
        activities.extend(
            _ordonez_activity_row(activities_file, number, line, tz)
            for number, line in enumerate(lines[2:], start=3)
            if line.strip()
        )
    return _Parsed(sensors, intervals, activities)


_TABLE_ENTRY = re.compile(r"\s*\[\s*([0-9]{1,18})\s*\]\s*'([^']*)'\s*", re.ASCII)
_ACTIVITY_ENTRY = re.compile(r"\s*([0-9]{1,18})\s*:\s*'([^']*)'\s*", re.ASCII)
_LENGTH = re.compile(r"Length:\s*([0-9]{1,18})\s*", re.ASCII)


def _kasteren_table(
    path: Path, lines: list[str], entry: re.Pattern[str], titles: tuple[str, ...]
) -> tuple[dict[int, str], int]:
    """The free-text header with its `ID -> name` table; returns the table and the data's first line."""
    table: dict[int, str] = {}
    for index, line in enumerate(lines):
        if tuple(line.split()) == titles:
            _header(path, lines, titles, index)
            if not table:
                raise ReplayFormatError(path, index + 1, "an ID table before the column header")
            return table, index + 2
        match = entry.fullmatch(line)
        if match is not None:
            ident = int(match.group(1))
            if ident in table:
                raise ReplayFormatError(path, index + 1, f"an ID not listed before ({ident} is)", line)
            table[ident] = match.group(2).strip()
    raise ReplayFormatError(path, None, "the column header " + repr(" ".join(titles)))


def _kasteren_rows(
    path: Path, lines: list[str], first: int, tz: ZoneInfo, value: bool
) -> list[tuple[int, _KasterenRow]]:
    rows: list[tuple[int, _KasterenRow]] = []
    for index in range(first, len(lines)):
        line, number = lines[index], index + 1
        if not line.strip():
            continue
        length = _LENGTH.fullmatch(line)
        if length is None:
            rows.append((number, _kasteren_row(path, number, line, tz, value)))
            continue
        # The release ends with `Length: <rows>`: a cheap check that the file is complete.
        if int(length.group(1)) != len(rows):
            raise ReplayFormatError(path, number, f"'Length: {len(rows)}' (the number of rows)", line)
        for rest in range(index + 1, len(lines)):
            if lines[rest].strip():
                raise ReplayFormatError(path, rest + 1, "nothing after the Length line", lines[rest])
        break
    return rows


def _spec_for(name: str, label: str) -> _Spec:
    return _HOME_TABLES.get(name, {}).get(_normalise(label)) or _guess(label)


def _sensor_for(name: str, prefix: str, label: str) -> ReplaySensor:
    spec = _spec_for(name, label)
    return ReplaySensor(prefix + spec.slug, spec.room, spec.kind, label, spec.role)


def _load_kasteren(
    sensors_file: Path, activities_file: Path | None, name: str, prefix: str, tz: ZoneInfo
) -> _Parsed:
    lines = _read_lines(sensors_file)
    table, first = _kasteren_table(
        sensors_file, lines, _TABLE_ENTRY, ("Start", "time", "End", "time", "ID", "Val")
    )
    by_id: dict[int, ReplaySensor] = {}
    sensors: dict[str, ReplaySensor] = {}
    for ident, label in table.items():
        sensor = _sensor_for(name, prefix, label)
        if sensor.device in sensors or not sensor.device.removeprefix(prefix):
            raise ReplayFormatError(sensors_file, None, f"a distinct sensor name for ID {ident}", label)
        sensors[sensor.device] = by_id[ident] = sensor
    intervals: list[_Interval] = []
    for number, row in _kasteren_rows(sensors_file, lines, first, tz, value=True):
        found = by_id.get(row.id)
        if found is None:
            known = ", ".join(str(ident) for ident in sorted(by_id))
            raise ReplayFormatError(
                sensors_file, number, f"a sensor ID from the header ({known})", lines[number - 1]
            )
        intervals.append(_Interval(row.start, row.end, found.device, number))
    activities: list[ActivityLabel] = []
    if activities_file is not None:
        lines = _read_lines(activities_file)
        names, first = _kasteren_table(
            activities_file, lines, _ACTIVITY_ENTRY, ("Start", "time", "End", "time", "ID")
        )
        for number, row in _kasteren_rows(activities_file, lines, first, tz, value=False):
            if row.id not in names:
                known = ", ".join(str(ident) for ident in sorted(names))
                raise ReplayFormatError(
                    activities_file, number, f"an activity ID from the header ({known})", lines[number - 1]
                )
            activities.append(ActivityLabel(row.start, row.end, names[row.id]))
    return _Parsed(sensors, intervals, activities)


def _load_house(stem: Path, name: str, prefix: str, tz: ZoneInfo) -> _Parsed:
    sensors_file = stem.with_name(stem.name + ".sensors")
    names_file = stem.with_name(stem.name + ".sensor_names")
    labels = {**_HOME_UNNAMED.get(name, {}), **(_names(names_file) if names_file.is_file() else {})}
    by_id: dict[int, ReplaySensor] = {}
    sensors: dict[str, ReplaySensor] = {}
    intervals: list[_Interval] = []
    for number, line in enumerate(_read_lines(sensors_file), start=1):
        if not line.strip():
            continue
        row = _house_row(sensors_file, number, line, tz)
        sensor = by_id.get(row.id)
        if sensor is None:
            label = labels.get(row.id)
            # An ID nobody named is still a real signal; it replays as an unplaced contact.
            sensor = (
                _sensor_for(name, prefix, label)
                if label is not None and _slug(label)
                else ReplaySensor(f"{prefix}sensor-{row.id}", None, _C, f"sensor {row.id}", None)
            )
            if sensor.device in sensors:
                raise ReplayFormatError(names_file, None, f"a distinct name for sensor ID {row.id}", label)
            sensors[sensor.device] = by_id[row.id] = sensor
        intervals.append(_Interval(row.start, row.end, sensor.device, number))
    activities: list[ActivityLabel] = []
    activities_file = stem.with_name(stem.name + ".activities")
    if activities_file.is_file():
        activity_names_file = stem.with_name(stem.name + ".activity_names")
        activity_names = _names(activity_names_file) if activity_names_file.is_file() else {}
        for number, line in enumerate(_read_lines(activities_file), start=1):
            if line.strip():
                row = _house_row(activities_file, number, line, tz)
                label = activity_names.get(row.id, f"activity {row.id}")
                activities.append(ActivityLabel(row.start, row.end, label))
    return _Parsed(sensors, intervals, activities)


# ---------------------------------------------------------------------------------------------
# Intervals -> edges


def _edges(intervals: Iterable[_Interval]) -> tuple[SensorChange, ...]:
    """ON at each start, OFF at each end; overlapping intervals of one sensor become one.

    Merging keeps every sensor strictly alternating ON, OFF, ON, ... (a second ON without an
    OFF would read as a new activation). Intervals that merely touch stay apart: OFF then ON at
    the same instant. A zero-length interval gives ON then OFF at the same instant.
    """
    per_device: dict[str, list[_Interval]] = {}
    # Stable: equal starts keep file order.
    for interval in sorted(intervals, key=lambda item: item.start):
        per_device.setdefault(interval.device, []).append(interval)
    streams: list[list[tuple[float, int, SensorChange]]] = []
    for device, items in per_device.items():
        stream: list[tuple[float, int, SensorChange]] = []
        start, end, _, line = items[0]
        for item in items[1:]:
            if item.start < end:
                end = max(end, item.end)
                continue
            stream.append((start, line, SensorChange(start, device, on=True)))
            stream.append((end, line, SensorChange(end, device, on=False)))
            start, end, _, line = item
        stream.append((start, line, SensorChange(start, device, on=True)))
        stream.append((end, line, SensorChange(end, device, on=False)))
        streams.append(stream)
    # Each stream is in wall order; merge keeps each stream's own order at equal times and
    # breaks ties between sensors by file line, so the result is deterministic.
    merged = heapq.merge(*streams, key=lambda entry: (entry[0], entry[1]))
    return tuple(change for _, _, change in merged)


# ---------------------------------------------------------------------------------------------
# Public entry points

_ORDONEZ_FILE = re.compile(r"Ordonez([A-Za-z])_(?:Sensors|ADLs|Description)\.txt")
_HOUSE_SUFFIXES: Final = (".sensors", ".activities", ".sensor_names", ".activity_names")
_KASTEREN_FILES: Final = ("kasterenSenseData.txt", "kasterenActData.txt")
_KNOWN: Final = (
    "a folder or file of a known recording: OrdonezA_Sensors.txt, kasterenSenseData.txt or <house>.sensors"
)


def _candidates(folder: Path) -> list[Path]:
    found = sorted(folder.glob("Ordonez?_Sensors.txt"))
    if (folder / _KASTEREN_FILES[0]).is_file():
        found.append(folder / _KASTEREN_FILES[0])
    found.extend(sorted(folder.glob("*.sensors")))
    return found


def _house_name(stem: str) -> str:
    match = re.fullmatch(r"house([A-Za-z])", stem)
    return f"kasteren-{match.group(1).upper()}" if match else _slug(stem) or "house"


def load_dataset(path: Path, tz: ZoneInfo = DEFAULT_TZ) -> ReplayDataset:
    """Load one recorded home from its folder or any of its files; the format is detected.

    `tz` is the zone the home's clock showed (Madrid and Amsterdam keep Berlin's rules).
    """
    path = Path(path)
    if path.is_dir():
        found = _candidates(path)
        if len(found) != 1:
            what = "one recording in the folder, found " + (", ".join(p.name for p in found) or "none")
            raise ReplayFormatError(path, None, what if found else _KNOWN)
        path = found[0]
    folder, filename = path.parent, path.name
    if not path.exists():
        raise FileNotFoundError(path)

    ordonez = _ORDONEZ_FILE.fullmatch(filename)
    if ordonez is not None:
        home = ordonez.group(1).upper()
        sensors_file = folder / f"Ordonez{home}_Sensors.txt"
        adls = folder / f"Ordonez{home}_ADLs.txt"
        name = f"ordonez-{home}"
        parsed = _load_ordonez(sensors_file, adls if adls.is_file() else None, name.lower() + "-", tz)
    elif filename in _KASTEREN_FILES:
        name = "kasteren-A"
        acts = folder / _KASTEREN_FILES[1]
        parsed = _load_kasteren(
            folder / _KASTEREN_FILES[0], acts if acts.is_file() else None, name, name.lower() + "-", tz
        )
    elif path.suffix in _HOUSE_SUFFIXES:
        name = _house_name(path.stem)
        parsed = _load_house(folder / path.stem, name, name.lower() + "-", tz)
    else:
        raise ReplayFormatError(path, None, _KNOWN)

    if not parsed.intervals:
        raise ReplayFormatError(path, None, "at least one sensor interval")
    sensors = dict(sorted(parsed.sensors.items()))
    rooms = tuple(sorted({sensor.room for sensor in sensors.values() if sensor.room is not None}))
    return ReplayDataset(
        name=name,
        sensors=MappingProxyType(sensors),
        rooms=rooms,
        changes=_edges(parsed.intervals),
        activities=tuple(sorted(parsed.activities, key=lambda activity: activity.start)),
    )


def to_events(dataset: ReplayDataset, mono_origin: float = 0.0) -> Iterator[Event]:
    """Every edge as an Event; `mono` counts from `mono_origin` at `dataset.start`."""
    start = dataset.start
    sensors = dataset.sensors
    for change in dataset.changes:
        sensor = sensors[change.device]
        yield Event(
            kind=sensor.kind,
            device=sensor.device,
            room=sensor.room,
            value=change.on,
            wall=change.wall,
            mono=mono_origin + (change.wall - start),
            source="replay",
        )


def virtual_clock_for(dataset: ReplayDataset, mono_origin: float = 0.0) -> VirtualClock:
    """The clock a `ReplayAdapter` drives: wall time starts where the recording starts."""
    return VirtualClock(Instant(wall=dataset.start, mono=mono_origin))


class ReplayAdapter:
    """Plays a recorded home into the hub as a `SensorAdapter`, moving a `VirtualClock`.

    The clock must start at the recording: `VirtualClock(Instant(wall=dataset.start,
    mono=origin))`, which `virtual_clock_for(dataset)` builds; the events' `mono` then counts
    from that origin. `speed=None` replays as fast as possible; `speed=60.0` plays one minute
    of the home per real second, each quiet gap cut to at most `max_pause` real seconds (a
    night would otherwise take minutes), during which the clock still moves in small steps so
    timers wake in order. Every `yield_every` events the loop gets a turn, so streams and the
    store keep up with a replay that never sleeps.
    """

    name = "replay"

    # Real seconds between clock steps while pausing for a gap.
    _TICK: Final = 0.05

    def __init__(
        self,
        dataset: ReplayDataset,
        clock: VirtualClock,
        speed: float | None = None,
        *,
        max_pause: float = 5.0,
        yield_every: int = 64,
    ) -> None:
        if speed is not None and not (speed > 0 and math.isfinite(speed)):
            raise ValueError(f"speed must be a positive number or None, not {speed!r}")
        if not max_pause >= 0:
            raise ValueError(f"max_pause must be >= 0, not {max_pause!r}")
        if yield_every < 1:
            raise ValueError(f"yield_every must be >= 1, not {yield_every!r}")
        now = clock.now()
        if now.wall != dataset.start:
            raise ValueError(
                "the clock must start at the recording: use virtual_clock_for(dataset) "
                f"(clock wall {now.wall}, dataset start {dataset.start})"
            )
        self._dataset = dataset
        self._clock = clock
        self._speed = speed
        self._max_pause = max_pause
        self._yield_every = yield_every
        self._origin = now.mono

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None

    async def run(self, emit: Emit) -> None:
        """Emit every edge in order, advancing the clock to each; return at the recording's end."""
        clock = self._clock
        at = self._origin
        for count, event in enumerate(to_events(self._dataset, self._origin), start=1):
            if self._speed is not None:
                await self._pause(at, event.mono, self._speed)
            clock.advance_to(event.mono)
            emit(event)
            at = event.mono
            if count % self._yield_every == 0:
                await asyncio.sleep(0)
        end = self._origin + (self._dataset.end - self._dataset.start)
        if self._speed is not None:
            await self._pause(at, end, self._speed)
        clock.advance_to(end)

    async def _pause(self, since: float, until: float, speed: float) -> None:
        gap = until - since
        real = min(gap / speed, self._max_pause)
        if real <= 0:
            return
        steps = max(1, math.ceil(real / self._TICK))
        for step in range(1, steps + 1):
            await asyncio.sleep(real / steps)
            # Timers inside a long gap wake in order, not all at once at its end.
            self._clock.advance_to(since + gap * step / steps)
