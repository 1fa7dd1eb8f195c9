"""Replay of recorded homes: the three release formats, their edge cases, and the adapter.

The fixtures under tests/data/replay/ are small hand-written files in each release's layout
(CRLF, tabs and spaces, header tables, `Length:` trailers, files ending without a newline).
Only `test_real_homes` reads the real recordings, and skips when they are not there.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devices.base import SensorAdapter
from devices.replay import (
    ActivityLabel,
    ReplayAdapter,
    ReplayDataset,
    ReplayFormatError,
    ReplaySensor,
    SensorChange,
    _house_row,
    _kasteren_row,
    _ordonez_activity_row,
    _ordonez_sensor_row,
    load_dataset,
    to_events,
    virtual_clock_for,
)
from hub.clock import Instant, VirtualClock
from hub.events import Event, EventKind

DATA = Path(__file__).parent / "data" / "replay"
ORDONEZ = DATA / "ordonez" / "OrdonezA_Sensors.txt"
KASTEREN = DATA / "kasteren" / "kasterenSenseData.txt"
BERLIN = ZoneInfo("Europe/Berlin")
M, C, P, F, A = (
    EventKind.MOTION,
    EventKind.CONTACT,
    EventKind.PRESSURE,
    EventKind.FLUSH,
    EventKind.APPLIANCE,
)


def local(text: str) -> float:
    """Epoch seconds of a Berlin wall-clock time 'YYYY-MM-DD HH:MM:SS'."""
    return dt.datetime.fromisoformat(text).replace(tzinfo=BERLIN).timestamp()


def edges(prefix: str, day: str, *rows: tuple[str, str, bool]) -> list[SensorChange]:
    return [SensorChange(local(f"{day} {at}"), prefix + device, on) for at, device, on in rows]


# ---------------------------------------------------------------------------------------------
# The three formats, whole values


def test_ordonez_home() -> None:
    dataset = load_dataset(DATA / "ordonez")

    assert dataset.name == "ordonez-A"
    assert dict(dataset.sensors) == {
        "ordonez-a-basin": ReplaySensor("ordonez-a-basin", "bathroom", M, "Basin", None),
        "ordonez-a-bed": ReplaySensor("ordonez-a-bed", "bedroom", P, "Bed", "bed"),
        "ordonez-a-cabinet": ReplaySensor("ordonez-a-cabinet", "bathroom", C, "Cabinet", None),
        "ordonez-a-fridge": ReplaySensor("ordonez-a-fridge", "kitchen", C, "Fridge", None),
        "ordonez-a-front-door": ReplaySensor("ordonez-a-front-door", "hall", C, "Maindoor", "front_door"),
        "ordonez-a-microwave": ReplaySensor("ordonez-a-microwave", "kitchen", A, "Microwave", None),
        "ordonez-a-seat": ReplaySensor("ordonez-a-seat", "living", P, "Seat", "seat"),
        "ordonez-a-toilet": ReplaySensor("ordonez-a-toilet", "bathroom", F, "Toilet", "toilet"),
    }
    assert dataset.rooms == ("bathroom", "bedroom", "hall", "kitchen", "living")
    assert list(dataset.changes) == edges(
        "ordonez-a-",
        "2011-11-28",
        ("02:27:59", "bed", True),
        ("08:10:00", "bed", False),
        ("08:12:30", "cabinet", True),
        ("08:12:34", "cabinet", False),
        ("08:13:00", "basin", True),
        ("08:14:05", "toilet", True),  # a row separated by spaces, not tabs
        ("08:14:06", "toilet", False),
        ("08:14:10", "basin", False),
        ("08:20:00", "front-door", True),  # zero length: ON then OFF at one instant
        ("08:20:00", "front-door", False),
        ("08:25:00", "microwave", True),
        ("08:27:00", "microwave", False),
        ("08:30:00", "seat", True),  # 08:30-09:40 and 09:00-09:45 overlap: one interval
        ("09:41:00", "fridge", True),  # the last line has no line end
        ("09:41:30", "fridge", False),
        ("09:45:00", "seat", False),
    )
    assert list(dataset.activities) == [
        ActivityLabel(local("2011-11-28 02:27:59"), local("2011-11-28 08:10:00"), "Sleeping"),
        ActivityLabel(local("2011-11-28 08:12:30"), local("2011-11-28 08:14:10"), "Toileting"),
        ActivityLabel(local("2011-11-28 08:25:00"), local("2011-11-28 08:29:00"), "Breakfast"),
        ActivityLabel(local("2011-11-28 08:30:00"), local("2011-11-28 09:50:00"), "Spare_Time/TV"),
    ]
    # The span covers the labels too: the last one ends after the last edge.
    assert (dataset.start, dataset.end) == (local("2011-11-28 02:27:59"), local("2011-11-28 09:50:00"))


def test_kasteren_house_a() -> None:
    dataset = load_dataset(DATA / "kasteren")

    assert dataset.name == "kasteren-A"
    assert dict(dataset.sensors) == {
        # The release swaps the labels of IDs 5 and 6; device and room follow the evidence.
        "kasteren-a-bathroom-door": ReplaySensor(
            "kasteren-a-bathroom-door", "bathroom", C, "Hall-Toilet door", None
        ),
        "kasteren-a-bedroom-door": ReplaySensor(
            "kasteren-a-bedroom-door", "bedroom", C, "Hall-Bedroom door", None
        ),
        "kasteren-a-front-door": ReplaySensor("kasteren-a-front-door", "hall", C, "Frontdoor", "front_door"),
        # A reed switch on its door, not a power meter.
        "kasteren-a-microwave": ReplaySensor("kasteren-a-microwave", "kitchen", C, "Microwave", None),
        "kasteren-a-toilet-door": ReplaySensor(
            "kasteren-a-toilet-door", "toilet", C, "Hall-Bathroom door", None
        ),
        "kasteren-a-toilet-flush": ReplaySensor(
            "kasteren-a-toilet-flush", "toilet", F, "ToiletFlush", "toilet"
        ),
    }
    assert dataset.rooms == ("bathroom", "bedroom", "hall", "kitchen", "toilet")
    assert list(dataset.changes) == edges(
        "kasteren-a-",
        "2008-02-25",
        ("00:20:14", "bedroom-door", True),
        ("00:22:57", "bedroom-door", False),
        ("09:33:41", "bedroom-door", True),
        ("09:33:42", "bedroom-door", False),  # touching intervals stay two: OFF, then ON
        ("09:33:42", "bedroom-door", True),
        ("09:35:10", "bedroom-door", False),
        ("09:36:43", "toilet-door", True),
        ("09:37:04", "toilet-door", False),
        ("09:37:51", "toilet-flush", True),  # two rows from 09:37:51 overlap: one interval
        ("09:37:53", "toilet-flush", False),
        ("09:49:58", "microwave", True),
        ("09:50:04", "microwave", False),
        ("10:02:00", "bathroom-door", True),
        ("10:02:05", "bathroom-door", False),
        ("10:19:06", "front-door", True),  # equal times across sensors keep file order
        ("10:19:06", "front-door", False),
        ("10:19:06", "bathroom-door", True),
        ("10:19:09", "bathroom-door", False),
    )
    assert list(dataset.activities) == [
        ActivityLabel(local("2008-02-25 00:22:46"), local("2008-02-25 09:34:12"), "go to bed"),
        ActivityLabel(local("2008-02-25 09:36:40"), local("2008-02-25 09:38:02"), "use toilet"),
        ActivityLabel(local("2008-02-25 10:19:06"), local("2008-02-25 16:55:38"), "leave house"),
    ]


def test_kasteren_house_b() -> None:
    dataset = load_dataset(DATA / "houseB")

    assert dataset.name == "kasteren-B"
    assert dict(dataset.sensors) == {
        "kasteren-b-bed-right": ReplaySensor("kasteren-b-bed-right", "bedroom", P, "press bed rechts", "bed"),
        "kasteren-b-bedroom-motion": ReplaySensor(
            "kasteren-b-bedroom-motion", "bedroom", M, "PIR slaapkamer", None
        ),
        "kasteren-b-kitchen-motion": ReplaySensor(
            "kasteren-b-kitchen-motion", "kitchen", M, "PIR keuken", None
        ),
        # Missing from sensor_names: the original release's label.
        "kasteren-b-office-chair": ReplaySensor(
            "kasteren-b-office-chair", None, P, "Drukmat bureaustoel (piano)", "seat"
        ),
        # Named nowhere, but it is the front door (its "frontdoor", ID 7, never fires).
        "kasteren-b-front-door": ReplaySensor("kasteren-b-front-door", "hall", C, "frontdoor", "front_door"),
        "kasteren-b-toilet-door": ReplaySensor("kasteren-b-toilet-door", "toilet", C, "toilet door", None),
    }
    assert dataset.rooms == ("bedroom", "hall", "kitchen", "toilet")
    assert list(dataset.changes) == edges(
        "kasteren-b-",
        "2009-07-21",
        ("13:30:12", "toilet-door", True),
        ("13:30:13", "toilet-door", False),
        ("13:30:18", "kitchen-motion", True),  # zero length
        ("13:30:18", "kitchen-motion", False),
        ("13:30:18", "bedroom-motion", True),
        ("13:30:20", "kitchen-motion", True),  # 13:30:20-30 and 13:30:25-35 overlap
        ("13:30:22", "bedroom-motion", False),
        ("13:30:35", "kitchen-motion", False),
        ("13:30:40", "office-chair", True),
        ("13:30:45", "office-chair", False),
        ("13:30:50", "front-door", True),
        ("13:30:52", "front-door", False),
        ("13:31:00", "bed-right", True),
        ("14:31:00", "bed-right", False),
    )
    assert list(dataset.activities) == [
        ActivityLabel(local("2009-07-21 13:30:12"), local("2009-07-21 13:31:12"), "use-toilet"),
        ActivityLabel(local("2009-07-21 13:31:00"), local("2009-07-21 14:31:00"), "go-to-bed"),
        ActivityLabel(local("2009-07-21 14:20:00"), local("2009-07-21 14:20:30"), "activity 99"),
    ]


def test_epoch_values_are_pinned() -> None:
    """Independent of the `local` helper: the instants as UTC epoch seconds."""
    assert load_dataset(DATA / "ordonez").start == 1322443679.0  # 2011-11-28 01:27:59Z (CET)
    assert load_dataset(DATA / "kasteren").start == 1203895214.0  # 2008-02-24 23:20:14Z (CET)
    # houseB's 1248183012 is 13:30:12 local written as if UTC; CEST makes it 11:30:12Z.
    assert load_dataset(DATA / "houseB").start == 1248175812.0


@pytest.mark.parametrize(
    ("path", "name"),
    [
        ("ordonez/OrdonezA_Sensors.txt", "ordonez-A"),
        ("ordonez/OrdonezA_ADLs.txt", "ordonez-A"),
        ("kasteren/kasterenSenseData.txt", "kasteren-A"),
        ("kasteren/kasterenActData.txt", "kasteren-A"),
        ("houseB/houseB.sensors", "kasteren-B"),
        ("houseB/houseB.activity_names", "kasteren-B"),
    ],
)
def test_any_file_of_a_home_loads_the_home(path: str, name: str) -> None:
    dataset = load_dataset(DATA / path)
    assert dataset.name == name
    assert dataset == load_dataset((DATA / path).parent)


def test_activities_are_optional(tmp_path: Path) -> None:
    for name in ("OrdonezA_Sensors.txt", "kasterenSenseData.txt"):
        source = next(DATA.rglob(name))
        (tmp_path / name).write_bytes(source.read_bytes())
        dataset = load_dataset(tmp_path / name)
        assert dataset.activities == ()
        assert (dataset.start, dataset.end) == (dataset.changes[0].wall, dataset.changes[-1].wall)


def test_known_slip_in_the_ordonez_labels_is_mended(tmp_path: Path) -> None:
    (tmp_path / "OrdonezA_Sensors.txt").write_bytes(ORDONEZ.read_bytes())
    (tmp_path / "OrdonezA_ADLs.txt").write_bytes(
        b"Start time          \tEnd time            \tActivity\t\r\n"
        b"--------------------\t--------------------\t--------\r\n"
        b"2011-12-01 19:28:51\t\t2011-12-01 16:29:59\t\tToileting\t\r\n"
        b"2011-12-01 19:28:51\t\t2011-12-01 16:29:58\t\tToileting\t\r\n"
    )
    # The published row is mended; the same slip anywhere else is still an error.
    with pytest.raises(ReplayFormatError, match="line 4: expected an end time not before"):
        load_dataset(tmp_path)
    adls = (tmp_path / "OrdonezA_ADLs.txt").read_bytes().split(b"\r\n")
    (tmp_path / "OrdonezA_ADLs.txt").write_bytes(b"\r\n".join(adls[:3]))
    assert load_dataset(tmp_path).activities == (
        ActivityLabel(local("2011-12-01 19:28:51"), local("2011-12-01 19:29:59"), "Toileting"),
    )


def test_another_zone(tmp_path: Path) -> None:
    utc = load_dataset(DATA / "houseB", tz=ZoneInfo("UTC"))
    assert utc.start == 1248183012.0


# ---------------------------------------------------------------------------------------------
# Daylight saving time: deterministic with fold=0


def write_house(folder: Path, *rows: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "houseB.sensors").write_text("\n".join(rows) + "\n")
    (folder / "houseB.sensor_names").write_text("16\tPIR slaapkamer\n")
    return folder / "houseB.sensors"


def as_if_utc(text: str) -> int:
    return int(dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC).timestamp())


def test_repeated_hour_when_dst_ends_means_its_first_pass(tmp_path: Path) -> None:
    # 2009-10-25: 02:00-03:00 happens twice in Berlin; fold=0 takes the first (CEST, +2).
    path = write_house(tmp_path, f"{as_if_utc('2009-10-25 02:30:00')}\t3600\t16")
    dataset = load_dataset(path)
    assert [change.wall for change in dataset.changes] == [
        as_if_utc("2009-10-25 00:30:00"),  # 02:30 CEST
        as_if_utc("2009-10-25 02:30:00"),  # 03:30 CET: the interval spans two real hours
    ]


def test_hour_skipped_when_dst_starts(tmp_path: Path) -> None:
    # 2009-03-29 02:30 does not exist in Berlin; fold=0 counts it with CET (+1).
    path = write_house(
        tmp_path,
        f"{as_if_utc('2009-03-29 02:30:00')}\t60\t16",
        # 02:50 (skipped) to 03:10 CEST comes out reversed in UTC: kept with no length.
        f"{as_if_utc('2009-03-29 02:50:00')}\t1200\t16",
    )
    dataset = load_dataset(path)
    assert [(change.wall, change.on) for change in dataset.changes] == [
        (as_if_utc("2009-03-29 01:30:00"), True),
        (as_if_utc("2009-03-29 01:31:00"), False),
        (as_if_utc("2009-03-29 01:50:00"), True),
        (as_if_utc("2009-03-29 01:50:00"), False),
    ]


# ---------------------------------------------------------------------------------------------
# Malformed input: file, line and what was expected


def replace_line(source: Path, target: Path, number: int, text: str) -> Path:
    lines = source.read_bytes().decode().split("\r\n")
    lines[number - 1] = text
    target.write_bytes("\r\n".join(lines).encode())
    return target


@pytest.mark.parametrize(
    ("source", "name", "number", "text", "expected"),
    [
        (ORDONEZ, "OrdonezA_Sensors.txt", 5, "2011-11-28 08:13:00 Basin PIR Bathroom", "7 fields"),
        (
            ORDONEZ,
            "OrdonezA_Sensors.txt",
            6,
            "2011-11-31 08:14:05 2011-11-31 08:14:06 Toilet Flush Bathroom",
            "a valid date and time",
        ),
        (
            ORDONEZ,
            "OrdonezA_Sensors.txt",
            7,
            "2011-11-28 8:20 2011-11-28 08:20:00 Maindoor Magnetic Entrance",
            "a time HH:MM:SS",
        ),
        (
            ORDONEZ,
            "OrdonezA_Sensors.txt",
            8,
            "2011-11-28 08:25:00 2011-11-28 08:27:00 Microwave Gas Kitchen",
            "a sensor type",
        ),
        (
            ORDONEZ,
            "OrdonezA_Sensors.txt",
            9,
            "2011-11-28 08:30:00 2011-11-28 07:40:00 Seat Pressure Living",
            "an end time not before the start time",
        ),
        (
            ORDONEZ,
            "OrdonezA_Sensors.txt",
            10,
            "2011-11-28 09:00:00 2011-11-28 09:45:00 Seat Magnetic Living",
            "the same type and place",
        ),
        (ORDONEZ, "OrdonezA_Sensors.txt", 1, "Start time End time Where", "the header"),
        (ORDONEZ, "OrdonezA_Sensors.txt", 2, "====", "a line of dashes"),
        (KASTEREN, "kasterenSenseData.txt", 16, "25-Feb-2008 00:20:14\t24\t1", "start, end"),
        (
            KASTEREN,
            "kasterenSenseData.txt",
            17,
            "25-Fbr-2008 09:33:41\t25-Feb-2008 09:33:42\t24\t1",
            "a date like 25-Feb-2008",
        ),
        (
            KASTEREN,
            "kasterenSenseData.txt",
            18,
            "25-Feb-2008 09:33:42\t25-Feb-2008 09:35:10\t99\t1",
            "a sensor ID from the header (1, 5, 6, 12, 14, 24)",
        ),
        (
            KASTEREN,
            "kasterenSenseData.txt",
            19,
            "25-Feb-2008 09:36:43\t25-Feb-2008 09:37:04\t6\t0",
            "the value 1",
        ),
        (KASTEREN, "kasterenSenseData.txt", 26, "Length: 11", "'Length: 10'"),
    ],
)
def test_malformed_line(
    tmp_path: Path, source: Path, name: str, number: int, text: str, expected: str
) -> None:
    path = replace_line(source, tmp_path / name, number, text)
    with pytest.raises(ReplayFormatError) as caught:
        load_dataset(path)
    assert (caught.value.path, caught.value.line) == (path, number)
    assert f"{path}, line {number}: expected {expected}" in str(caught.value)


def test_malformed_house_b(tmp_path: Path) -> None:
    path = write_house(tmp_path, "1248183012\t1\t16", "1248183018\t-4\t16")
    with pytest.raises(ReplayFormatError, match=r"houseB\.sensors, line 2: expected start_epoch"):
        load_dataset(path)
    # int() has its own limit of 4300 digits; the parser must stop such a number first.
    (tmp_path / "houseB.sensors").write_text("1248183012\t1\t16\n" + "9" * 5000 + "\t1\t16\n")
    with pytest.raises(ReplayFormatError, match=r"houseB\.sensors, line 2: expected start_epoch"):
        load_dataset(path)
    (tmp_path / "houseB.sensors").write_text("1248183012\t1\t16\n")
    (tmp_path / "houseB.sensor_names").write_text("16\tPIR slaapkamer\n16\tPIR keuken\n")
    with pytest.raises(ReplayFormatError, match=r"houseB\.sensor_names, line 2: expected an id"):
        load_dataset(path)


def test_text_after_the_length_line(tmp_path: Path) -> None:
    path = tmp_path / "kasterenSenseData.txt"
    path.write_bytes(KASTEREN.read_bytes() + b"\r\n25-Feb-2008 10:19:06")
    with pytest.raises(ReplayFormatError, match=r"line 27: expected nothing after the Length"):
        load_dataset(path)


def test_folders_and_files_that_are_no_recording(tmp_path: Path) -> None:
    with pytest.raises(ReplayFormatError, match="a folder or file of a known recording"):
        load_dataset(tmp_path)
    (tmp_path / "notes.txt").write_text("hello\n")
    with pytest.raises(ReplayFormatError, match="a folder or file of a known recording"):
        load_dataset(tmp_path / "notes.txt")
    for name in ("OrdonezA_Sensors.txt", "OrdonezB_Sensors.txt"):
        (tmp_path / name).write_bytes(ORDONEZ.read_bytes())
    with pytest.raises(ReplayFormatError, match="one recording in the folder, found Ordonez"):
        load_dataset(tmp_path)
    with pytest.raises(FileNotFoundError):
        load_dataset(tmp_path / "houseC.sensors")
    empty = write_house(tmp_path / "empty")
    empty.write_text("\n")
    with pytest.raises(ReplayFormatError, match="expected at least one sensor interval"):
        load_dataset(empty)


def test_a_hand_built_dataset_is_checked() -> None:
    sensor = ReplaySensor("a", None, C, "A", None)
    with pytest.raises(ValueError, match="no sensor changes"):
        ReplayDataset("x", {"a": sensor}, (), ())
    with pytest.raises(ValueError, match="unknown device 'b'"):
        ReplayDataset("x", {"a": sensor}, (), (SensorChange(1.0, "b", on=True),))
    unsorted = (SensorChange(2.0, "a", on=True), SensorChange(1.0, "a", on=False))
    with pytest.raises(ValueError, match="not sorted"):
        ReplayDataset("x", {"a": sensor}, (), unsorted)


# ---------------------------------------------------------------------------------------------
# Fuzzing: random text raises ReplayFormatError and nothing else

ROW_PARSERS: list[Callable[[Path, int, str, ZoneInfo], object]] = [
    _ordonez_sensor_row,
    _ordonez_activity_row,
    lambda path, number, line, tz: _kasteren_row(path, number, line, tz, value=True),
    lambda path, number, line, tz: _kasteren_row(path, number, line, tz, value=False),
    _house_row,
]

# Text that looks half right reaches the deeper checks more often than uniform noise.
ROW_TEXT = st.one_of(
    st.text(),
    st.lists(
        st.one_of(
            st.sampled_from(
                [
                    "2011-11-28",
                    "2011-02-30",
                    "9999-12-31",
                    "0000-01-01",
                    "25-Feb-2008",
                    "31-Apr-2008",
                    "23:59:59",
                    "24:00:00",
                    "Bed",
                    "PIR",
                    "Pressure",
                    "Kitchen",
                    "1",
                    "99999999999999999999",
                    "9" * 5000,
                    "-1",
                    "\t",
                ]
            ),
            st.integers(min_value=0, max_value=10**13).map(str),
            st.text(max_size=5),
        ),
        max_size=8,
    ).map(" ".join),
)


@settings(max_examples=300, deadline=None)
@given(parser=st.sampled_from(ROW_PARSERS), text=ROW_TEXT)
def test_row_parsers_raise_only_format_errors(
    parser: Callable[[Path, int, str, ZoneInfo], object], text: str
) -> None:
    error: ReplayFormatError | None = None
    try:
        parser(Path("fuzz.txt"), 7, text, BERLIN)
    except ReplayFormatError as err:
        error = err
    if error is not None:
        assert (error.path, error.line) == (Path("fuzz.txt"), 7)


FILE_NAMES = ["OrdonezA_Sensors.txt", "kasterenSenseData.txt", "houseB.sensors"]


@settings(max_examples=150, deadline=None)
@given(
    name=st.sampled_from(FILE_NAMES),
    prefix=st.sampled_from([b"", b"HEADER"]),
    body=st.one_of(st.binary(max_size=300), ROW_TEXT.map(lambda text: text.encode())),
)
def test_loader_raises_only_format_errors(name: str, prefix: bytes, body: bytes) -> None:
    if prefix:
        # Keep a valid header so the fuzzed rows reach the row parsers.
        source = {"OrdonezA_Sensors.txt": ORDONEZ, "kasterenSenseData.txt": KASTEREN}.get(name)
        if source is not None:
            header = 2 if source is ORDONEZ else 15
            prefix = b"\r\n".join(source.read_bytes().split(b"\r\n")[:header]) + b"\r\n"
        else:
            prefix = b""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / name
        path.write_bytes(prefix + body)
        error: ReplayFormatError | None = None
        try:
            load_dataset(path)
        except ReplayFormatError as err:
            error = err
        if error is not None:
            assert error.path in (path, Path(folder) / "houseB.sensor_names")


# ---------------------------------------------------------------------------------------------
# Events and the adapter


def test_to_events() -> None:
    dataset = load_dataset(DATA / "kasteren")
    events = list(to_events(dataset, mono_origin=500.0))

    start = dataset.start
    assert events[:3] == [
        Event(
            kind=C,
            device="kasteren-a-bedroom-door",
            room="bedroom",
            value=True,
            wall=start,
            mono=500.0,
            source="replay",
        ),
        Event(
            kind=C,
            device="kasteren-a-bedroom-door",
            room="bedroom",
            value=False,
            wall=start + 163,
            mono=663.0,
            source="replay",
        ),
        Event(
            kind=C,
            device="kasteren-a-bedroom-door",
            room="bedroom",
            value=True,
            wall=local("2008-02-25 09:33:41"),
            mono=500.0 + 9 * 3600 + 13 * 60 + 27,
            source="replay",
        ),
    ]
    sensors = dataset.sensors
    assert [
        (event.device, event.kind, event.room, event.value, event.wall, event.mono - 500.0)
        for event in events
    ] == [
        (
            change.device,
            sensors[change.device].kind,
            sensors[change.device].room,
            change.on,
            change.wall,
            change.wall - start,
        )
        for change in dataset.changes
    ]
    assert [event.is_activity for event in events] == [change.on for change in dataset.changes]


def test_virtual_clock_for() -> None:
    dataset = load_dataset(DATA / "ordonez")
    assert virtual_clock_for(dataset).now() == Instant(dataset.start, 0.0)
    assert virtual_clock_for(dataset, mono_origin=42.0).now() == Instant(dataset.start, 42.0)


async def test_adapter_replays_everything_in_order_and_ends_at_the_end() -> None:
    dataset = load_dataset(DATA / "ordonez")
    clock = virtual_clock_for(dataset, mono_origin=1000.0)
    adapter: SensorAdapter = ReplayAdapter(dataset, clock)
    seen: list[tuple[Event, Instant]] = []

    async with adapter:
        await adapter.run(lambda event: seen.append((event, clock.now())))

    assert [event for event, _ in seen] == list(to_events(dataset, mono_origin=1000.0))
    # When each event is emitted the clock stands exactly at it.
    assert all(now == Instant(event.wall, event.mono) for event, now in seen)
    assert clock.now() == Instant(dataset.end, 1000.0 + dataset.end - dataset.start)
    assert adapter.name == "replay"


async def test_adapter_lets_other_tasks_run_and_wakes_timers_in_order() -> None:
    dataset = load_dataset(DATA / "houseB")
    clock = virtual_clock_for(dataset)
    emitted: list[Event] = []
    woke: list[tuple[float, int]] = []

    async def timer(at: float) -> None:
        await clock.sleep_until(at)
        woke.append((at, len(emitted)))

    deadlines = [25.0, 50.0]  # 13:30:37 and 13:31:02 local
    async with asyncio.TaskGroup() as group:
        for at in deadlines:
            group.create_task(timer(at))
        await asyncio.sleep(0)
        await ReplayAdapter(dataset, clock, yield_every=1).run(emitted.append)

    # Each timer ran right after the first event at or past its deadline, not at the end.
    first_past = [next(i for i, e in enumerate(emitted) if e.mono >= at) + 1 for at in deadlines]
    assert woke == list(zip(deadlines, first_past, strict=True))
    assert len(emitted) == len(dataset.changes)


def test_adapter_needs_the_clock_of_the_recording() -> None:
    dataset = load_dataset(DATA / "ordonez")
    with pytest.raises(ValueError, match="virtual_clock_for"):
        ReplayAdapter(dataset, VirtualClock(Instant(0.0, 0.0)))
    with pytest.raises(ValueError, match="speed"):
        ReplayAdapter(dataset, virtual_clock_for(dataset), speed=0.0)


async def test_adapter_at_speed() -> None:
    sensor = ReplaySensor("d", "hall", M, "D", None)
    dataset = ReplayDataset(
        name="tiny",
        sensors={"d": sensor},
        rooms=("hall",),
        changes=(
            SensorChange(1000.0, "d", on=True),
            SensorChange(1010.0, "d", on=False),  # 10 s: 0.05 s real at speed 200
            SensorChange(1010.0, "d", on=True),  # same instant: no pause
            SensorChange(4610.0, "d", on=False),  # an hour: 18 s real, capped at 0.1 s
        ),
        activities=(ActivityLabel(1000.0, 4620.0, "Resting"),),  # 10 s more: 0.05 s real
    )
    clock = virtual_clock_for(dataset)
    emitted: list[tuple[float, Event]] = []
    woke: list[tuple[float, float, int]] = []

    async def timer(at: float) -> None:
        await clock.sleep_until(at)
        woke.append((at, clock.now().mono, len(emitted)))

    began = time.monotonic()
    async with asyncio.TaskGroup() as group:
        group.create_task(timer(1800.0))  # half-way through the hour
        adapter = ReplayAdapter(dataset, clock, speed=200.0, max_pause=0.1)
        await adapter.run(lambda event: emitted.append((time.monotonic() - began, event)))
    took = time.monotonic() - began

    assert [event.mono for _, event in emitted] == [0.0, 10.0, 10.0, 3610.0]
    assert [at for at, _ in emitted] == sorted(at for at, _ in emitted)
    assert 0.04 <= emitted[1][0] < 1.0
    assert 0.18 <= took < 2.0
    # The timer inside the hour woke during the pause (the clock moves in steps), before the
    # last event, and not long after its deadline.
    ((at, now, count),) = woke
    assert at == 1800.0
    assert 1800.0 <= now < 2300.0
    assert count == 3
    assert clock.now() == Instant(4620.0, 3620.0)


# ---------------------------------------------------------------------------------------------
# The real recordings, when they are there


def shared_data() -> Path | None:
    repo = Path(__file__).resolve().parents[1]
    for candidate in (repo.parent / "shared" / "data", repo / ".." / "shared" / "data"):
        if candidate.is_dir():
            return candidate
    return None


@pytest.mark.skipif(shared_data() is None, reason="the shared evaluation data is not present")
@pytest.mark.parametrize(
    ("folder", "name", "days", "sensors", "activities"),
    [
        ("ordonez", "ordonez-A", (13.5, 15.0), 12, (200, 300)),
        ("kasteren", "kasteren-A", (27.0, 29.0), 14, (200, 300)),
        ("kasteren/houseB", "kasteren-B", (25.0, 29.0), (18, 28), (80, 150)),
    ],
)
def test_real_homes(
    folder: str,
    name: str,
    days: tuple[float, float],
    sensors: int | tuple[int, int],
    activities: tuple[int, int],
) -> None:
    root = shared_data()
    assert root is not None
    dataset = load_dataset(root / folder)

    assert dataset.name == name
    low, high = (sensors, sensors) if isinstance(sensors, int) else sensors
    assert low <= len(dataset.sensors) <= high
    assert days[0] <= dataset.days <= days[1]
    assert activities[0] <= len(dataset.activities) <= activities[1]
    # Edges alternate per sensor, starting with ON, and every sensor fires at least once.
    state: dict[str, bool] = {}
    for change in dataset.changes:
        assert state.get(change.device, False) is not change.on
        state[change.device] = change.on
    assert set(state) == set(dataset.sensors)
    assert not any(state.values())
    assert all(activity.start <= activity.end for activity in dataset.activities)
    assert len(list(to_events(dataset))) == len(dataset.changes)
