"""The daemon end to end: adapters -> bus -> rules -> store, supervised services, web, signals."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

import aiohttp
import pytest

from devices.base import Emit
from hub.clock import Instant, VirtualClock
from hub.config import HubConfig
from hub.daemon import Hub, ServiceState
from hub.events import Event, EventKind, IncidentKind
from tests.alerts_receivers import Receiver
from tests.brokers import free_port
from tests.conftest import T0


class ScriptedAdapter:
    """Plays a list of (seconds after start, device, kind, value) on the hub's virtual clock."""

    name = "scripted"

    def __init__(
        self,
        clock: VirtualClock,
        script: Sequence[tuple[float, str, EventKind, object]],
        rooms: dict[str, str],
    ) -> None:
        self.clock, self.script, self.rooms = clock, script, rooms
        self.entered = self.exited = 0

    async def __aenter__(self) -> Self:
        self.entered += 1
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.exited += 1

    async def run(self, emit: Emit) -> None:
        start = self.clock.now()
        for offset, device, kind, value in self.script:
            self.clock.advance_to(start.mono + offset)
            now = self.clock.now()
            emit(
                Event(
                    kind=kind,
                    device=device,
                    room=self.rooms.get(device),
                    value=value,  # type: ignore[arg-type]
                    wall=now.wall,
                    mono=now.mono,
                    source="scripted",
                )
            )
            await asyncio.sleep(0)


class FailingAdapter:
    name = "flaky-radio"

    def __init__(self) -> None:
        self.attempts = 0

    async def __aenter__(self) -> Self:
        self.attempts += 1
        raise ConnectionError("serial port /dev/ttyUSB0 vanished")

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def run(self, emit: Emit) -> None:
        raise AssertionError("never entered")


ROOMS = {"door": "hall", "bath-pir": "bathroom", "leak": "bathroom", "bed": "bedroom"}


async def run_until(hub: Hub, condition, limit: float = 10.0) -> None:
    task = asyncio.create_task(hub.run())
    try:
        await asyncio.wait(
            {task, asyncio.ensure_future(hub.ready.wait())},
            timeout=limit,
            return_when=asyncio.FIRST_COMPLETED,
        )
        deadline = time.monotonic() + limit
        while not condition():
            assert not task.done(), task.exception() if task.done() else None
            assert time.monotonic() < deadline, "condition not reached"
            await asyncio.sleep(0.01)
        await hub.store.flush()
    finally:
        hub.request_stop()
        await asyncio.wait_for(task, 10)


async def test_events_flow_to_store_state_and_rules(tmp_path: Path, small_config: HubConfig, clock) -> None:
    script = [
        (0, "bath-pir", EventKind.MOTION, True),
        (60, "bath-pir", EventKind.MOTION, False),
        (120, "leak", EventKind.WATER_LEAK, True),
        (180, "leak", EventKind.WATER_LEAK, False),
        (240, "leak", EventKind.WATER_LEAK, True),  # the same leak again, while still open
        (300, "stranger", EventKind.MOTION, True),
        (310, "bed", EventKind.BATTERY, 12),
    ]
    adapter = ScriptedAdapter(clock, script, ROOMS)
    hub = Hub(small_config, clock=clock, db_path=tmp_path / "hub.db", adapters=[adapter], web=False)
    await run_until(
        hub,
        lambda: (
            hub.bus.published == len(script)
            and hub.incidents_raised == 3
            and len(hub.state.open_incidents) == 2
            and hub.store.events_written == len(script)
        ),
    )
    conn = sqlite3.connect(tmp_path / "hub.db")
    stored = conn.execute("SELECT device, kind, value, wall - ? FROM events ORDER BY id", [T0]).fetchall()
    incidents = conn.execute("SELECT kind, room, state, reason FROM incidents ORDER BY wall").fetchall()
    actions = [
        r[0]
        for r in conn.execute(
            "SELECT action FROM audit WHERE actor != 'escalation' AND incident_id = ? ORDER BY id",
            [next(i.id for i in hub.state.open_incidents.values() if i.kind is IncidentKind.WATER_LEAK)],
        )
    ]
    # With no contacts configured the escalation says so, loudly, rather than pretending.
    escalation = [r[0] for r in conn.execute("SELECT action FROM audit WHERE actor = 'escalation'")]
    bed = conn.execute("SELECT battery, last_seen - ? FROM devices WHERE id = 'bed'", [T0]).fetchone()
    conn.close()
    assert stored[0] == ("bath-pir", "motion", "true", 0.0)
    assert stored[5] == ("stranger", "motion", "true", 300.0)  # unknown devices are kept, and warned about
    # The second leak report merged into the open incident: one page, not two.
    assert incidents[0] == ("water_leak", "bathroom", "open", "water detected by leak in the bathroom")
    # A battery at 12 % is a safety matter of its own: the bed mat may stop protecting soon.
    assert incidents[1][:3] == ("degraded_safety", "bedroom", "open")
    assert "battery" in incidents[1][3]
    assert len(incidents) == 2
    assert actions == ["raised", "merged"]
    assert escalation == ["no_contacts", "no_contacts"]
    assert bed == (12.0, 310.0)
    assert hub.state.devices["bath-pir"].values == {"motion": False}
    assert hub.state.rooms["bathroom"].last_activity == T0
    assert adapter.entered == adapter.exited == 1


async def test_open_incidents_survive_a_restart(tmp_path: Path, small_config: HubConfig, clock) -> None:
    db = tmp_path / "hub.db"
    first = Hub(
        small_config,
        clock=clock,
        db_path=db,
        adapters=[ScriptedAdapter(clock, [(0, "leak", EventKind.WATER_LEAK, True)], ROOMS)],
        web=False,
    )
    await run_until(first, lambda: len(first.state.open_incidents) == 1)
    second = Hub(small_config, clock=clock, db_path=db, adapters=[], web=False)
    await run_until(second, second.ready.is_set)
    assert [i.kind for i in second.state.open_incidents.values()] == [IncidentKind.WATER_LEAK]


class StopRightAfter(ScriptedAdapter):
    """Emits its script, then stops the hub in the same instant: nothing may be lost."""

    hub: Hub

    async def run(self, emit: Emit) -> None:
        now = self.clock.now()
        for _, device, kind, value in self.script:
            emit(
                Event(
                    kind=kind,
                    device=device,
                    room=self.rooms.get(device),
                    value=value,  # type: ignore[arg-type]
                    wall=now.wall,
                    mono=now.mono,
                )
            )
        self.hub.request_stop()
        await asyncio.Event().wait()


async def test_an_incident_raised_as_the_hub_stops_is_committed(
    tmp_path: Path, small_config: HubConfig, clock
) -> None:
    # Twenty leak sensors at once: the desk is still busy with the first when the stop comes.
    script = [(0, f"leak-{n}", EventKind.WATER_LEAK, True) for n in range(20)]
    adapter = StopRightAfter(clock, script, {f"leak-{n}": "bathroom" for n in range(20)})
    hub = Hub(small_config, clock=clock, db_path=tmp_path / "hub.db", adapters=[adapter], web=False)
    adapter.hub = hub
    await asyncio.wait_for(hub.run(), 10)
    conn = sqlite3.connect(tmp_path / "hub.db")
    assert conn.execute("SELECT kind, state FROM incidents").fetchall() == [("water_leak", "open")]
    assert conn.execute(
        "SELECT action, count(*) FROM audit WHERE actor != 'escalation' GROUP BY action ORDER BY action"
    ).fetchall() == [
        ("merged", 19),
        ("raised", 1),
    ]
    assert conn.execute("SELECT count(*) FROM events").fetchone() == (20,)
    conn.close()


async def test_a_failing_adapter_is_retried_and_reported_not_fatal(
    tmp_path: Path, small_config: HubConfig, clock, monkeypatch
) -> None:
    monkeypatch.setattr("hub.daemon.BACKOFF_START", 0.01)
    flaky = FailingAdapter()
    good = ScriptedAdapter(clock, [(0, "bath-pir", EventKind.MOTION, True)], ROOMS)
    hub = Hub(small_config, clock=clock, db_path=tmp_path / "hub.db", adapters=[flaky, good], web=False)
    await run_until(hub, lambda: flaky.attempts >= 3 and len(hub.state.open_incidents) == 1)
    status = hub.services["adapter:flaky-radio"]
    assert status.state is ServiceState.BACKOFF
    assert status.last_error == "ConnectionError: serial port /dev/ttyUSB0 vanished"
    (incident,) = hub.state.open_incidents.values()
    # A dead radio is not a quiet resident: it is its own incident, raised once.
    assert incident.kind is IncidentKind.DEGRADED_SAFETY
    assert "flaky-radio sensors stopped" in incident.reason
    assert hub.health()["status"] == "degraded"
    assert hub.bus.published == 1


async def test_web_answers_health_state_page_and_buttons(
    tmp_path: Path, small_config: HubConfig, clock
) -> None:
    hub = Hub(small_config, clock=clock, db_path=tmp_path / "hub.db", adapters=[], web=True, web_port=0)
    task = asyncio.create_task(hub.run())
    try:
        await asyncio.wait_for(hub.ready.wait(), 10)
        base = f"http://127.0.0.1:{hub.bound_port}"
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/api/health") as response:
                health = await response.json()
                assert response.status == 200
            assert health["status"] == "ok"
            assert set(health["services"]) == {"rules", "incidents", "retention", "escalation", "web"}
            assert all(s["state"] == "running" for s in health["services"].values())
            async with http.get(f"{base}/") as response:
                page = await response.text()
                assert response.status == 200
                assert "default-src 'self'" in response.headers["Content-Security-Policy"]
            assert "<h1>Testwohnung</h1>" in page
            assert 'data-room="bathroom"' in page
            async with http.get(f"{base}/static/hub.js") as response:
                assert response.status == 200
            async with http.get(f"{base}/api/stream") as stream:
                async with http.post(f"{base}/api/buttons/help") as response:
                    assert (await response.json()) == {"ok": True, "button": "help"}
                line = await asyncio.wait_for(stream.content.readline(), 5)
                assert json.loads(line.decode().removeprefix("data: ")) == {
                    "kind": "help",
                    "device": "kiosk",
                    "room": None,
                    "value": "kiosk",
                }
            async with http.post(f"{base}/api/buttons/self-destruct") as response:
                assert response.status == 404
                assert (await response.json())["error"].startswith("unknown button; expected one of: help")
            async with http.get(f"{base}/api/buttons/help") as response:
                assert response.status == 405
                assert (await response.json())["status"] == 405
            async with http.get(f"{base}/api/privacy") as response:
                privacy = await response.json()
            assert (privacy["raw_events_days"], privacy["incidents_days"]) == (30, 730)
            async with http.get(f"{base}/datenschutz") as response:
                text = await response.text()
            assert "Einzelne Sensorereignisse werden nach 30 Tagen gelöscht" in text
            async with http.get(f"{base}/api/state") as response:
                state = await response.json()
            assert {r["name"] for r in state["rooms"]} == {"hall", "bathroom", "bedroom"}
            assert [d["id"] for d in state["devices"]] == ["door", "bath-pir", "leak", "bed"]
    finally:
        hub.request_stop()
        await asyncio.wait_for(task, 10)


# -- the real process ---------------------------------------------------------------------------


def _notify_socket(tmp_path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify.sock"))
    sock.settimeout(20)
    return sock


@pytest.mark.slow
def test_demo_process_notifies_ready_and_stops_on_sigterm(tmp_path: Path) -> None:
    sock = _notify_socket(tmp_path)
    env = {**os.environ, "NOTIFY_SOCKET": str(tmp_path / "notify.sock"), "WATCHDOG_USEC": "2000000"}
    started = time.monotonic()
    port = free_port()
    with subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hub.cli",
            "demo",
            "--port",
            str(port),
            "--db",
            str(tmp_path / "demo.db"),
            "--speed",
            "600",
        ],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        try:
            messages = []
            while not any(m.startswith("READY=1") for m in messages):
                messages.append(sock.recv(4096).decode())
            ready_after = time.monotonic() - started
            # The watchdog is fed while the hub is healthy.
            assert sock.recv(4096).decode() == "WATCHDOG=1"
            time.sleep(1.0)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=15) == 0
        finally:
            proc.kill()
            sock.close()
        log = proc.stderr.read() if proc.stderr else ""
    assert 'msg="hub ready" flat=demo-flat mode=demo' in log
    assert ready_after < 15
    conn = sqlite3.connect(tmp_path / "demo.db")
    assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert conn.execute("SELECT count(*) FROM events").fetchone()[0] > 0
    conn.close()


def test_run_refuses_a_broken_config_with_file_and_line(tmp_path: Path) -> None:
    config = tmp_path / "flat.yaml"
    config.write_text(
        "flat: {id: f, name: F}\nrooms: [hall]\ndevices:\n  - {id: x, kind: motion, rom: hall}\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "hub.cli", "run", "--config", str(config)],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert result.returncode == 1
    assert f"{config}:4: devices[0].rom: unknown key" in result.stderr


def test_run_refuses_a_damaged_database_clearly(tmp_path: Path) -> None:
    config = tmp_path / "flat.yaml"
    db = tmp_path / "hub.db"
    db.write_bytes(b"garbage" * 1000)
    config.write_text(f"flat: {{id: f, name: F}}\nrooms: [hall]\nstore: {{path: {db}}}\nweb: {{port: 0}}\n")
    result = subprocess.run(
        [sys.executable, "-m", "hub.cli", "run", "--config", str(config)],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert result.returncode == 3
    assert f"database error: the database {db} is damaged" in result.stderr


class CountingLearner:
    """A detector that learns something (how many motions it saw) and keeps it across restarts."""

    name = "counting"

    def __init__(self) -> None:
        self.seen = 0

    def on_event(self, event: Event, now) -> Sequence[object]:
        self.seen += 1
        return ()

    def on_wake(self, key: str, now) -> Sequence[object]:
        return ()

    def snapshot(self) -> dict[str, int]:
        return {"seen": self.seen}

    def restore(self, state: dict[str, int]) -> None:
        self.seen = state["seen"]


async def test_learned_state_survives_a_restart(tmp_path: Path, small_config: HubConfig, clock) -> None:
    db = tmp_path / "hub.db"
    first_learner = CountingLearner()
    script = [(n, "bath-pir", EventKind.MOTION, n % 2 == 0) for n in range(5)]
    first = Hub(
        small_config,
        clock=clock,
        db_path=db,
        adapters=[ScriptedAdapter(clock, script, ROOMS)],
        detectors=[first_learner],
        web=False,
    )
    await run_until(first, lambda: first.bus.published == 5)
    second_learner = CountingLearner()
    second = Hub(small_config, clock=clock, db_path=db, adapters=[], detectors=[second_learner], web=False)
    await run_until(second, second.ready.is_set)
    assert second_learner.seen == 5
    conn = sqlite3.connect(db)
    conn.execute("UPDATE detector_state SET state = 'not json'")
    conn.commit()
    conn.close()
    third_learner = CountingLearner()
    third = Hub(small_config, clock=clock, db_path=db, adapters=[], detectors=[third_learner], web=False)
    await run_until(third, third.ready.is_set)  # unreadable learning is logged, the hub still starts
    assert third_learner.seen == 0


def test_devices_command_lists_rooms_battery_and_last_seen(tmp_path: Path) -> None:
    db = tmp_path / "hub.db"
    config = tmp_path / "flat.yaml"
    config.write_text(
        "flat: {id: f, name: F}\nrooms: [bathroom, bedroom]\n"
        "devices:\n  - {id: bath-pir, room: bathroom, kind: motion, zigbee2mqtt: bath_pir}\n"
        "  - {id: bed, room: bedroom, kind: pressure_mat}\n"
        f"store: {{path: {db}}}\n"
    )
    before = subprocess.run(
        [sys.executable, "-m", "hub.cli", "devices", "--config", str(config), "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert [d["id"] for d in json.loads(before.stdout)] == ["bath-pir", "bed"]

    async def seed() -> None:
        clock = VirtualClock(Instant(T0, 0.0))
        from hub.config import load_config

        hub = Hub(
            load_config(config),
            clock=clock,
            web=False,
            adapters=[
                ScriptedAdapter(
                    clock,
                    [(0, "bath-pir", EventKind.MOTION, True), (5, "bath-pir", EventKind.BATTERY, 64)],
                    ROOMS,
                )
            ],
        )
        await run_until(hub, lambda: hub.store.events_written == 2)

    asyncio.run(seed())
    table = subprocess.run(
        [sys.executable, "-m", "hub.cli", "devices", "--config", str(config)],
        capture_output=True,
        text=True,
        check=True,
    )
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["device", "room", "kind", "via", "battery", "last", "seen"]
    assert lines[1].split()[:5] == ["bath-pir", "bathroom", "motion", "zigbee2mqtt", "64%"]
    assert lines[2].split() == ["bed", "bedroom", "pressure_mat", "none", "-", "never"]


def test_replay_command_runs_a_home_through_the_hub(tmp_path: Path) -> None:
    data = Path(__file__).parent / "data" / "replay" / "ordonez"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "hub.cli",
            "--log-level",
            "warning",
            "replay",
            "--data",
            str(data),
            "--json",
            "--db",
            str(tmp_path / "r.db"),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    summary = json.loads(result.stdout)
    conn = sqlite3.connect(tmp_path / "r.db")
    stored = conn.execute("SELECT count(*) FROM events").fetchone()[0]
    conn.close()
    assert summary["home"] == "ordonez-A"
    assert summary["events"] == stored > 0
    broken = subprocess.run(
        [sys.executable, "-m", "hub.cli", "replay", "--data", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert broken.returncode == 4
    assert f"cannot read {tmp_path}" in broken.stderr


class PairingRadio(ScriptedAdapter):
    """A radio that pairs: records the permit-join requests it gets."""

    name = "zigbee"

    def __init__(self, clock: VirtualClock) -> None:
        super().__init__(clock, [], ROOMS)
        self.permits: list[int] = []

    async def permit(self, seconds: int) -> None:
        self.permits.append(seconds)

    async def run(self, emit: Emit) -> None:
        await asyncio.Event().wait()


async def test_pairing_from_the_command_line_goes_through_the_running_hub(tmp_path: Path, clock) -> None:
    port = free_port()
    config_file = tmp_path / "flat.yaml"
    config_file.write_text(f"flat: {{id: f, name: F}}\nrooms: [hall]\nweb: {{port: {port}}}\n")
    from hub.config import load_config

    radio = PairingRadio(clock)
    hub = Hub(load_config(config_file), clock=clock, db_path=tmp_path / "hub.db", adapters=[radio])
    task = asyncio.create_task(hub.run())
    try:
        await asyncio.wait_for(hub.ready.wait(), 10)
        cli = [
            sys.executable,
            "-m",
            "hub.cli",
            "devices",
            "pair",
            "--seconds",
            "90",
            "--config",
            str(config_file),
        ]
        result = await asyncio.to_thread(subprocess.run, cli, capture_output=True, text=True, check=False)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "joining open for 90 s on: zigbee"
        assert radio.permits == [90]
        async with aiohttp.ClientSession() as http:
            async with http.post(
                f"http://127.0.0.1:{port}/api/devices/pair", json={"seconds": 999}
            ) as response:
                assert response.status == 400
                assert (await response.json())["error"] == "seconds must lie between 0 and 254"
            async with http.post(f"http://127.0.0.1:{port}/api/devices/pair", data=b"{not json") as response:
                assert response.status == 400
    finally:
        hub.request_stop()
        await asyncio.wait_for(task, 10)
    stopped = await asyncio.to_thread(subprocess.run, cli, capture_output=True, text=True, check=False)
    assert stopped.returncode == 4
    assert "no running hub answers" in stopped.stderr


@pytest.mark.parametrize("broken", ["_after", "start_within"])
async def test_a_fault_after_the_commit_still_pages_from_the_database(
    tmp_path: Path, clock, monkeypatch, broken: str
) -> None:
    from alerts.escalation import AlertSettings, EscalationEngine
    from hub.config import parse_config

    receiver = await Receiver().__aenter__()
    url = f"{receiver.url}/hook"
    config = parse_config(
        "flat: {id: f, name: F}\nrooms: [hall]\n"
        f"contacts: [{{id: care, channels: [{{webhook: '{url}'}}]}}]\n"
        "escalation: {default: {cancel_window: 0s, steps: [{notify: [care], ack_timeout: 1h}]}}\n"
    )
    original = getattr(EscalationEngine, broken)
    calls = {"n": 0}

    def flaky(self: EscalationEngine, *args: object) -> object:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("bug between commit and scheduling")
        return original(self, *args)

    monkeypatch.setattr(EscalationEngine, broken, flaky)
    hub = Hub(
        config,
        clock=clock,
        db_path=tmp_path / "hub.db",
        adapters=[],
        web=False,
        alert_settings=AlertSettings(heartbeat_every=0),
    )
    task = asyncio.create_task(hub.run())
    try:
        await asyncio.wait_for(hub.ready.wait(), 10)
        assert hub.escalation is not None
        await asyncio.wait_for(hub.escalation.ready.wait(), 10)
        now = clock.now()
        hub.emit(
            Event(kind=EventKind.HELP, device="kiosk", room=None, value="kiosk", wall=now.wall, mono=now.mono)
        )
        [message] = await receiver.wait_for(1, 10)
        assert message["type"] == "alert"
        assert calls["n"] >= 1
    finally:
        hub.request_stop()
        await asyncio.wait_for(task, 10)
        await receiver.__aexit__()


async def test_after_an_acknowledged_help_call_the_next_one_pages_again(tmp_path: Path, clock) -> None:
    from alerts.escalation import AlertSettings
    from hub.config import parse_config

    receiver = await Receiver().__aenter__()
    url = f"{receiver.url}/hook"
    port = free_port()
    config = parse_config(
        f"flat: {{id: f, name: F}}\nrooms: [hall]\nweb: {{port: {port}}}\n"
        f"contacts: [{{id: care, channels: [{{webhook: '{url}'}}]}}]\n"
        "escalation: {default: {cancel_window: 0s, steps: [{notify: [care], ack_timeout: 1h}]}}\n"
    )
    hub = Hub(
        config,
        clock=clock,
        db_path=tmp_path / "hub.db",
        adapters=[],
        alert_settings=AlertSettings(heartbeat_every=0),
    )
    task = asyncio.create_task(hub.run())
    base = f"http://127.0.0.1:{port}"
    try:
        await asyncio.wait_for(hub.ready.wait(), 10)
        assert hub.escalation is not None
        await asyncio.wait_for(hub.escalation.ready.wait(), 10)
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{base}/api/buttons/help") as response:
                assert response.status == 200
            [first] = await receiver.wait_for(1, 10)
            first_id = first["incident"]["id"]  # type: ignore[index]
            async with http.post(f"{base}/api/incidents/{first_id}/ack", json={"by": "Anna"}) as response:
                assert (await response.json()) == {"outcome": "acknowledged"}
            # Someone has taken the first call; the resident's next call is a new alarm, not a footnote.
            clock.advance_to(clock.now().mono + 3600)
            async with http.post(f"{base}/api/buttons/help") as response:
                assert response.status == 200
            seen = 1
            message = (await receiver.wait_for(seen + 1, 10))[seen]
            while message["type"] != "alert":
                seen += 1
                message = (await receiver.wait_for(seen + 1, 10))[seen]
            assert message["incident"]["kind"] == "help"  # type: ignore[index]
            assert message["incident"]["id"] != first_id  # type: ignore[index]
            # A page on another site cannot press the resident's buttons through a browser.
            async with http.post(
                f"{base}/api/buttons/ok", headers={"Origin": "http://evil.example"}
            ) as response:
                assert response.status == 403
                assert (await response.json())["error"] == "cross-site request refused"
            async with http.post(f"{base}/api/buttons/ok", headers={"Origin": base}) as response:
                assert response.status == 200
    finally:
        hub.request_stop()
        await asyncio.wait_for(task, 10)
        await receiver.__aexit__()


async def test_the_alarm_api_needs_a_token_from_beyond_this_machine(tmp_path: Path, clock) -> None:
    from hub.config import parse_config

    port = free_port()
    config = parse_config(
        f"flat: {{id: f, name: F}}\nrooms: [hall]\nweb: {{host: 0.0.0.0, port: {port}, api_token: t0ken}}\n"
    )
    hub = Hub(config, clock=clock, db_path=tmp_path / "hub.db", adapters=[])
    task = asyncio.create_task(hub.run())
    base = f"http://127.0.0.1:{port}"
    try:
        await asyncio.wait_for(hub.ready.wait(), 10)
        # 127.0.0.2 is another host as far as the hub can tell (a tablet, a laptop on the LAN).
        lan = aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))
        async with aiohttp.ClientSession(connector=lan) as http:
            async with http.post(f"{base}/api/buttons/ok") as response:
                assert response.status == 401
            async with http.get(f"{base}/api/incidents") as response:
                assert response.status == 401
            async with http.get(
                f"{base}/api/incidents", headers={"Authorization": "Bearer wrong"}
            ) as response:
                assert response.status == 401
            async with http.get(
                f"{base}/api/incidents", headers={"Authorization": "Bearer t0ken"}
            ) as response:
                assert response.status == 200
            async with http.get(f"{base}/api/health") as response:
                assert response.status == 200  # what is not an action stays readable
        async with aiohttp.ClientSession() as http, http.post(f"{base}/api/buttons/ok") as response:
            assert response.status == 200  # the hub's own kiosk and CLI need no token
    finally:
        hub.request_stop()
        await asyncio.wait_for(task, 10)


async def test_a_missing_key_file_degrades_one_radio_not_the_hub(tmp_path: Path, clock, monkeypatch) -> None:
    from hub.config import load_config

    monkeypatch.setattr("hub.daemon.BACKOFF_START", 0.01)
    config_file = tmp_path / "flat.yaml"
    config_file.write_text(
        "flat: {id: f, name: F}\nrooms: [hall]\nweb: {port: 0}\n"
        "devices:\n  - {id: pendant, kind: pendant, ble: 'A4:C1:38:00:11:22', bindkey_file: pendant.key}\n"
        "  - {id: hall-door, room: hall, kind: contact, simulated: true}\n"
    )
    checked = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "hub.cli", "check-config", str(config_file)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 1
    assert "ble: device pendant: cannot read bindkey_file" in checked.stderr
    hub = Hub(
        load_config(config_file), clock=clock, db_path=tmp_path / "hub.db", web=False, config_dir=tmp_path
    )
    seen: dict[str, ServiceState] = {}

    def degraded_while_the_rest_runs() -> bool:
        seen.update({name: status.state for name, status in hub.services.items()})
        return any(i.detector == "adapter:ble" for i in hub.state.open_incidents.values())

    await run_until(hub, degraded_while_the_rest_runs)
    assert seen["adapter:ble"] is ServiceState.BACKOFF
    assert seen["adapter:simulated"] is ServiceState.RUNNING
    (degraded,) = [i for i in hub.state.open_incidents.values() if i.detector == "adapter:ble"]
    assert "cannot read bindkey_file" in degraded.reason


def test_a_second_radio_going_down_is_news_not_a_repeat(small_config: HubConfig) -> None:
    from hub.events import Incident, Severity
    from hub.state import LiveState

    state = LiveState(small_config)

    def down(source: str) -> Incident:
        return Incident(
            kind=IncidentKind.DEGRADED_SAFETY,
            severity=Severity.WARNING,
            room=None,
            reason=f"{source} stopped",
            wall=T0,
            mono=0.0,
            detector=source,
        )

    first = down("adapter:ble")
    state.incident_opened(first)
    assert state.open_incident_like(down("adapter:ble")) == first.id
    assert state.open_incident_like(down("adapter:zigbee2mqtt")) is None
