"""The store: one writer thread, WAL, migrations, and nothing committed is ever lost."""

from __future__ import annotations

import asyncio
import json
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from hub.events import Event, EventKind, Incident, IncidentKind, Severity
from hub.retention import expire
from hub.store import SCHEMA_VERSION, Store, StoreError, audit, decode_value, migrate
from tests.conftest import T0


def motion(i: int, *, room: str = "bathroom", value: bool = True, wall: float = T0) -> Event:
    return Event(
        kind=EventKind.MOTION,
        device="bath-pir",
        room=room,
        value=value,
        wall=wall + i,
        mono=100.0 + i,
        source="test",
    )


async def test_events_are_batched_committed_and_counted(tmp_path: Path) -> None:
    async with Store(tmp_path / "hub.db") as store:
        for i in range(2500):
            store.append_event(motion(i, value=i % 2 == 0))
        await store.flush()
        rows = await store.call(
            lambda db: db.execute("SELECT count(*), min(wall), max(wall) FROM events").fetchone()
        )
        assert rows == (2500, T0, T0 + 2499)
        assert store.batches < 50  # batched, not one transaction per event
        counts = await store.call(
            lambda db: db.execute("SELECT hour, room, count FROM activity_hourly ORDER BY hour").fetchall()
        )
    # Only ON edges are signs of life: 1250 of them, over the hours they fell into.
    assert sum(c for _, _, c in counts) == 1250
    assert {room for _, room, _ in counts} == {"bathroom"}
    assert all(hour % 3600 == 0 for hour, _, _ in counts)


async def test_events_linger_on_the_loop_and_ride_with_the_next_query(tmp_path: Path) -> None:
    """A burst of events costs one transaction, not one each."""
    async with Store(tmp_path / "hub.db") as store:
        before = store.batches
        for i in range(50):
            store.append_event(motion(i))
        count = await store.call(
            lambda db: db.execute("SELECT count(*) FROM events").fetchone()[0], durable=False
        )
        assert count == 50  # a query sees what happened before it
        assert store.batches == before + 1
        # Without a call, events still reach the disk by themselves within the linger time.
        store.append_event(motion(50))
        deadline = time.monotonic() + 5
        while store.events_written < 51 and time.monotonic() < deadline:  # noqa: ASYNC110 (the writer thread counts; no event to await)
            await asyncio.sleep(0.02)
        assert store.events_written == 51
        assert store.batches == before + 2


async def test_events_appended_just_before_close_are_written(tmp_path: Path) -> None:
    async with Store(tmp_path / "hub.db") as store:
        store.append_event(motion(0))
    with sqlite3.connect(tmp_path / "hub.db") as conn:
        assert conn.execute("SELECT count(*) FROM events").fetchone()[0] == 1


async def test_values_round_trip(tmp_path: Path) -> None:
    values = [True, False, None, 21.5, 3, "single", (0.1, -0.98, 0.05)]
    async with Store(tmp_path / "hub.db") as store:
        for i, value in enumerate(values):
            store.append_event(
                Event(kind=EventKind.BUTTON, device="x", room=None, value=value, wall=T0 + i, mono=float(i))
            )
        stored = await store.call(
            lambda db: [decode_value(r[0]) for r in db.execute("SELECT value FROM events ORDER BY id")]
        )
    assert stored == values


async def test_incident_is_durable_before_record_returns(tmp_path: Path) -> None:
    incident = Incident(
        kind=IncidentKind.FALL,
        severity=Severity.CRITICAL,
        room="bathroom",
        reason="fall detected by pendant",
        wall=T0,
        mono=5.0,
        detector="fall",
        evidence={"impact_g": 3.4},
    )
    path = tmp_path / "hub.db"
    async with Store(path) as store:
        await store.record_incident(incident)
        # A second connection (another process would do the same) sees it committed already.
        other = sqlite3.connect(path)
        row = other.execute("SELECT kind, state, reason, evidence FROM incidents").fetchone()
        trail = other.execute("SELECT incident_id, actor, action FROM audit").fetchall()
        other.close()
    assert row[:3] == ("fall", "open", "fall detected by pendant")
    assert json.loads(row[3]) == {"impact_g": 3.4}
    assert trail == [(incident.id, "rules", "raised")]


async def test_a_failing_call_does_not_undo_others_in_its_batch(tmp_path: Path) -> None:
    async with Store(tmp_path / "hub.db") as store:

        def good(db) -> None:
            audit(db, T0, None, "test", "kept")

        def bad(db) -> None:
            audit(db, T0, None, "test", "undone")
            raise ValueError("broken call")

        results = await asyncio.gather(
            store.call(good), store.call(bad), store.call(good), return_exceptions=True
        )
        assert results[0] is None
        assert results[2] is None
        assert isinstance(results[1], ValueError)
        actions = await store.call(lambda db: [r[0] for r in db.execute("SELECT action FROM audit")])
    assert actions == ["kept", "kept"]


async def test_devices_are_touched_with_last_seen_battery_and_link(tmp_path: Path) -> None:
    async with Store(tmp_path / "hub.db") as store:
        await store.call(
            lambda db: db.execute(
                "INSERT INTO devices (id, kind, transport, updated) VALUES ('bath-pir', 'motion', 'zigbee', 0)"
            )
        )
        store.append_event(motion(0))
        store.append_event(
            Event(
                kind=EventKind.BATTERY, device="bath-pir", room="bathroom", value=42, wall=T0 + 10, mono=110.0
            )
        )
        store.append_event(
            Event(
                kind=EventKind.AVAILABILITY,
                device="bath-pir",
                room="bathroom",
                value=False,
                wall=T0 + 20,
                mono=120.0,
            )
        )
        await store.flush()
        row = await store.call(
            lambda db: db.execute("SELECT last_seen, battery, online FROM devices").fetchone()
        )
    assert row == (T0 + 20, 42.0, 0)


def test_migrations_bring_an_empty_database_to_the_newest_schema(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "old.db", isolation_level=None)
    assert migrate(conn) == SCHEMA_VERSION
    assert migrate(conn) == SCHEMA_VERSION  # idempotent
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {
        "devices",
        "events",
        "activity_hourly",
        "incidents",
        "escalation",
        "audit",
        "outbox",
        "detector_state",
    } <= tables


def test_a_database_from_a_newer_hub_is_refused(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "new.db", isolation_level=None)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(StoreError, match="newer than this hub"):
        migrate(conn)


async def test_a_file_that_is_not_a_database_gets_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "hub.db"
    path.write_bytes(b"this is not sqlite" * 500)
    with pytest.raises(StoreError, match=r"is damaged .* move it aside"):
        async with Store(path):
            pass


async def test_a_damaged_page_is_found_at_start(tmp_path: Path) -> None:
    path = tmp_path / "hub.db"
    async with Store(path) as store:
        for i in range(3000):
            store.append_event(motion(i))
    data = bytearray(path.read_bytes())
    page = 4096
    data[page * 3 : page * 3 + 200] = b"\xa5" * 200  # scribble over a b-tree page
    path.write_bytes(bytes(data))
    with pytest.raises(StoreError, match="damaged"):
        async with Store(path):
            pass


@pytest.fixture
def small_disk(tmp_path: Path):
    """A real 8 MB tmpfs of our own, to make read-only or remount (root only; skipped otherwise)."""
    mountpoint = tmp_path / "disk"
    mountpoint.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mountpoint)], capture_output=True, check=False
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False)


def remount(mountpoint: Path, mode: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{mode}", str(mountpoint)], check=True)


async def test_a_read_only_disk_at_start_gets_a_clear_error(small_disk: Path) -> None:
    remount(small_disk, "ro")
    with pytest.raises(
        StoreError, match=f"cannot create the folder {small_disk / 'state'}|cannot be written"
    ):
        async with Store(small_disk / "state" / "hub.db"):
            pass


async def test_a_really_full_disk_keeps_events_until_space_is_back(small_disk: Path) -> None:
    filler = small_disk / "filler"
    async with Store(small_disk / "hub.db") as store:
        store.append_event(motion(0))
        await store.flush()
        # Fill the card to the last byte, as a runaway log would.
        with filler.open("wb") as out:
            try:
                while True:
                    out.write(b"\0" * 65536)
                    out.flush()
            except OSError:
                pass
        for i in range(1, 5001):
            store.append_event(motion(i, room="kitchen"))
        with pytest.raises(StoreError, match="is full: free space"):
            await store.call(lambda db: audit(db, T0, None, "test", "x" * 100_000))
        assert store.last_error is not None
        filler.unlink()
        await store.flush()
        assert store.last_error is None
        count = await store.call(lambda db: db.execute("SELECT count(*) FROM events").fetchone()[0])
    assert count == 5001
    assert store.events_dropped == 0


async def test_a_full_disk_keeps_events_puts_incidents_first_and_fails_clearly(tmp_path: Path) -> None:
    path = tmp_path / "hub.db"
    async with Store(path) as store:
        # SQLite's page limit stands in for a full SD card: the same SQLITE_FULL error.
        page_count = await store.call(lambda db: db.execute("PRAGMA page_count").fetchone()[0])
        await store.call(lambda db: db.execute(f"PRAGMA max_page_count = {page_count + 3}"))
        for i in range(20_000):
            store.append_event(motion(i))
        incident = Incident(
            kind=IncidentKind.HELP,
            severity=Severity.CRITICAL,
            room=None,
            reason="help button",
            wall=T0,
            mono=1.0,
            detector="t",
        )
        # The raw events no longer fit; the incident still does, and goes first.
        await store.record_incident(incident)
        assert store.last_error is not None
        assert "is full" in store.last_error

        def big(db) -> None:
            for n in range(5000):
                audit(db, T0, None, "test", "x" * 200, {"n": n})

        with pytest.raises(StoreError, match="is full: free space"):
            await store.call(big)
        # Space comes back (the card was cleared): the waiting events are written.
        await store.call(lambda db: db.execute("PRAGMA max_page_count = 1073741823"))
        await store.flush()
        assert store.last_error is None
        count = await store.call(lambda db: db.execute("SELECT count(*) FROM events").fetchone()[0])
        assert await store.call(lambda db: db.execute("SELECT id FROM incidents").fetchall()) == [
            (incident.id,)
        ]
    assert count == 20_000
    assert store.events_dropped == 0


async def test_retention_folds_raw_events_and_keeps_open_incidents(tmp_path: Path) -> None:
    day = 86400.0
    async with Store(tmp_path / "hub.db") as store:
        store.append_event(motion(0, wall=T0 - 40 * day))
        store.append_event(motion(1, wall=T0 - 1 * day))
        old_open = Incident(
            kind=IncidentKind.INACTIVITY,
            severity=Severity.WARNING,
            room=None,
            reason="no activity",
            wall=T0 - 900 * day,
            mono=0.0,
            detector="t",
        )
        old_closed = Incident(
            kind=IncidentKind.SMOKE,
            severity=Severity.CRITICAL,
            room="kitchen",
            reason="smoke",
            wall=T0 - 900 * day,
            mono=0.0,
            detector="t",
        )
        await store.record_incident(old_open)
        await store.record_incident(old_closed)
        await store.call(
            lambda db: db.execute(
                "UPDATE incidents SET state = 'resolved', closed = ? WHERE id = ?",
                [T0 - 899 * day, old_closed.id],
            )
        )
        removed = await store.call(
            lambda db: expire(db, T0, raw_events=30 * day, incidents=730 * day, activity=730 * day)
        )
        left = await store.call(
            lambda db: (
                db.execute("SELECT count(*) FROM events").fetchone()[0],
                sum(r[0] for r in db.execute("SELECT count FROM activity_hourly")),
                [r[0] for r in db.execute("SELECT id FROM incidents")],
            )
        )
    assert removed["events"] == 1
    assert removed["incidents"] == 1
    # The expired event still counts in the hourly activity the learned rules read.
    assert left == (1, 2, [old_open.id])


WRITER = textwrap.dedent(
    """
    import asyncio, sys, time
    from hub.store import Store
    from hub.events import Event, EventKind, Incident, IncidentKind, Severity

    async def main(path):
        async with Store(path) as store:
            i = 0
            while True:
                for _ in range(200):
                    store.append_event(Event(kind=EventKind.MOTION, device="d", room="r", value=True,
                                             wall=time.time(), mono=float(i), source=f"{sys.argv[2]}:{i}"))
                    i += 1
                incident = Incident(kind=IncidentKind.HELP, severity=Severity.CRITICAL, room=None,
                                    reason=f"{sys.argv[2]}:{i}", wall=time.time(), mono=float(i), detector="t")
                await store.record_incident(incident)
                # Everything up to i is committed now: say so, then keep going.
                print(i, flush=True)

    asyncio.run(main(sys.argv[1]))
    """
)


@pytest.mark.slow
def test_kill_9_at_random_instants_loses_nothing_committed(tmp_path: Path) -> None:
    path = tmp_path / "hub.db"
    rng = random.Random(7)
    total_acknowledged = 0
    for _round in range(8):
        with subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path), str(_round)], stdout=subprocess.PIPE, text=True
        ) as child:
            assert child.stdout is not None
            acknowledged = 0
            deadline = time.monotonic() + rng.uniform(0.3, 1.2)
            while time.monotonic() < deadline:
                line = child.stdout.readline()
                if not line:
                    break
                acknowledged = int(line)
            child.send_signal(signal.SIGKILL)
            child.wait()
        conn = sqlite3.connect(path)
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        # Every event and incident the writer was told is committed is there.
        incidents = {r[0] for r in conn.execute("SELECT reason FROM incidents")}
        (stored,) = conn.execute(
            "SELECT count(*) FROM events WHERE source = ?", [f"{_round}:{acknowledged - 1}"]
        ).fetchone()
        conn.close()
        assert acknowledged == 0 or f"{_round}:{acknowledged}" in incidents
        assert acknowledged == 0 or stored == 1
        total_acknowledged += acknowledged > 0
    assert total_acknowledged >= 6  # the writer got going in (nearly) every round


async def test_only_what_must_survive_a_power_cut_pays_for_an_fsync(tmp_path: Path) -> None:
    def synchronous(db) -> int:
        return db.execute("PRAGMA synchronous").fetchone()[0]

    async with Store(tmp_path / "hub.db") as store:
        full, normal = 2, 1
        assert await store.call(synchronous) == full  # an incident, an outbox entry
        assert await store.call(synchronous, durable=False) == normal  # delivery bookkeeping
        store.append_event(motion(0))
        durable_again = store.call(synchronous)
        assert await durable_again == full  # events in the same batch ride along


async def test_an_event_no_encoder_takes_never_stops_the_writer(tmp_path: Path) -> None:
    """A button payload with a lone surrogate (msgspec refuses it) is stored escaped, and the
    incident that follows it into the same transaction is committed."""
    async with Store(tmp_path / "hub.db") as store:
        store.append_event(
            Event(kind=EventKind.BUTTON, device="x", room=None, value="\ud800", wall=T0, mono=1.0)
        )
        incident = Incident(
            kind=IncidentKind.HELP,
            severity=Severity.CRITICAL,
            room=None,
            reason="help",
            wall=T0,
            mono=1.0,
            detector="test",
        )
        await asyncio.wait_for(store.record_incident(incident), 10)
        values = await store.call(lambda db: db.execute("SELECT value FROM events").fetchall(), durable=False)
        assert [decode_value(v) for (v,) in values] == ["\ud800"]
        # And a call whose events break in a way nobody foresaw still gets an answer.
        store.append_event(
            Event(kind=EventKind.BUTTON, device="x", room=None, value=object(), wall=T0, mono=2.0)  # type: ignore[arg-type]
        )
        assert await asyncio.wait_for(store.call(lambda _db: "still here"), 10) == "still here"
