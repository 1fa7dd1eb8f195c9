"""BLE through bleak's real BlueZ backend against python-dbusmock's bluez5 on a private D-Bus."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devices.availability import Backoff
from devices.base import AdapterError
from devices.ble import BleAdapter, events_of, load_bindkey
from devices.bthome import SERVICE_UUID, encrypt, parse
from hub.clock import Instant, RealClock, VirtualClock
from hub.config import HubConfig, parse_config
from hub.events import Event, EventKind
from tests.dbus_bluez import FakeBlueZ, bluez, bluez_bus
from tests.hardware_plugin import ble_adapter

__all__ = ["ble_adapter", "bluez", "bluez_bus"]

T0 = 1772521200.0
KEY = "231d39c1d7cc1ab1aee224cd096db932"
PENDANT = "C0:FF:EE:00:00:01"
CLIMATE = "A4:C1:38:8D:18:B2"
WINDOW = "3C:2E:F5:A1:B2:C3"
SOS = "3C:2E:F5:A1:B2:C4"


def make_config(adapter: str = "hci0") -> HubConfig:
    return parse_config(
        f"""
flat: {{id: ble-flat, name: Testwohnung}}
rooms: [living, bedroom]
radios:
  ble: {{adapter: {adapter}}}
devices:
  - {{id: pendant, kind: pendant, ble: "{PENDANT}", bindkey: {KEY}}}
  - {{id: living-climate, room: living, kind: climate, ble: "{CLIMATE.lower()}"}}
  - {{id: bedroom-window, room: bedroom, kind: contact, ble: "{WINDOW}"}}
  - {{id: sos, room: bedroom, kind: button, role: help_button, ble: "{SOS}"}}
""",
        "ble.yaml",
    )


def pendant_advert(counter: int, payload_hex: str) -> bytes:
    return encrypt(bytes.fromhex(payload_hex), address=PENDANT, key=bytes.fromhex(KEY), counter=counter)


class Sink:
    def __init__(self) -> None:
        self.events: list[Event] = []
        self._queue: asyncio.Queue[Event] = asyncio.Queue()

    def __call__(self, event: Event) -> None:
        self.events.append(event)
        self._queue.put_nowait(event)

    async def take(self, count: int) -> list[tuple[EventKind, str, str | None, object]]:
        out = []
        async with asyncio.timeout(15):
            for _ in range(count):
                event = await self._queue.get()
                out.append((event.kind, event.device, event.room, event.value))
        return out


class Running:
    def __init__(self, adapter: BleAdapter, sink: Sink) -> None:
        self.adapter = adapter
        self.sink = sink
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> BleAdapter:
        await self.adapter.__aenter__()
        self.task = asyncio.create_task(self.adapter.run(self.sink))
        return self.adapter

    async def __aexit__(self, *exc: object) -> None:
        assert self.task is not None
        self.task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await self.task
        await self.adapter.__aexit__(None, None, None)


class WatchedClock(VirtualClock):
    def __init__(self, start: Instant) -> None:
        super().__init__(start)
        self.sleeps: asyncio.Queue[float] = asyncio.Queue()

    async def sleep_until(self, mono: float) -> None:
        self.sleeps.put_nowait(mono)
        await super().sleep_until(mono)

    async def backoff_started(self) -> float:
        async with asyncio.timeout(10):
            while (mono := await self.sleeps.get()) > self.now().mono + 120:
                pass
        return mono


# -- pure mapping ------------------------------------------------------------------------------


def test_pendant_and_help_button_mapping() -> None:
    config = make_config()
    pendant, sos = config.device("pendant"), config.device("sos")
    assert pendant is not None
    assert sos is not None
    advert = parse(
        pendant_advert(7, "0007 0158 3a04 f001 f11400 2cfc 6e00".replace(" ", "")),
        address=PENDANT,
        key=bytes.fromhex(KEY),
    )
    assert events_of(advert, pendant) == [
        (EventKind.BATTERY, 88.0),
        (EventKind.HELP, "pendant"),
        (EventKind.FALL_REPORTED, True),
        (EventKind.ACCELERATION, (0.02, -0.98, 0.11)),
    ]
    single = parse(b"\x40\x3a\x01", address=SOS)
    assert events_of(single, pendant) == [(EventKind.BUTTON, "single")]
    assert events_of(single, sos) == [(EventKind.HELP, "button")]
    assert events_of(parse(b"\x40\x3a\x00", address=SOS), sos) == []


def test_bindkey_from_file(tmp_path: Path) -> None:
    (tmp_path / "pendant.key").write_text(KEY + "\n", encoding="utf-8")
    config = parse_config(
        f"""
flat: {{id: f, name: F}}
rooms: [a]
devices:
  - {{id: pendant, kind: pendant, ble: "{PENDANT}", bindkey_file: pendant.key}}
  - {{id: other, kind: pendant, ble: "{SOS}", bindkey_file: missing.key}}
""",
        "k.yaml",
    )
    assert load_bindkey(config.devices[0], tmp_path) == bytes.fromhex(KEY)
    with pytest.raises(AdapterError, match="cannot read bindkey_file"):
        load_bindkey(config.devices[1], tmp_path)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=40), st.sampled_from([PENDANT, CLIMATE, "00:11:22:33:44:55"]))
def test_fuzz_handle_counts_and_never_raises(data: bytes, address: str) -> None:
    adapter = BleAdapter(make_config(), VirtualClock(Instant(T0, 0.0)))
    events: list[Event] = []
    adapter._emit = events.append
    adapter.handle(address, data)
    adapter.handle(address, data + b"\x00")
    assert adapter.adverts == 2
    assert all(isinstance(e, Event) for e in events)


# -- through bleak and the mock BlueZ -------------------------------------------------------------


async def test_advertisements_through_bleak_and_bluez(bluez: FakeBlueZ) -> None:
    sink = Sink()
    adapter = BleAdapter(make_config(), RealClock())
    async with Running(adapter, sink):
        assert await sink.take(1) == [(EventKind.AVAILABILITY, "link:ble", None, True)]
        bluez.advertise(
            CLIMATE, {SERVICE_UUID: b"\x40\x00\x09\x01\x5d\x02\x5d\x09\x03\xb7\x18"}, name="ATC_8D18B2"
        )
        bluez.advertise(
            CLIMATE, {SERVICE_UUID: b"\x40\x00\x09\x01\x5d\x02\x5d\x09\x03\xb7\x18"}, rssi=-70
        )  # same
        bluez.advertise(WINDOW, {SERVICE_UUID: b"\x40\x00\x01\x2d\x01"})
        bluez.advertise(PENDANT, {SERVICE_UUID: pendant_advert(1000, "0001 0158")})
        bluez.advertise(PENDANT, {SERVICE_UUID: pendant_advert(1001, "0002 0158 3a04")})
        bluez.advertise(PENDANT, {SERVICE_UUID: pendant_advert(900, "0003 3a04")})  # replayed: refused
        bluez.advertise(PENDANT, {SERVICE_UUID: pendant_advert(1002, "0004 0158 f001")})
        bluez.advertise(SOS, {SERVICE_UUID: b"\x40\x00\x10\x3a\x01"})
        bluez.advertise("11:22:33:44:55:66", {SERVICE_UUID: b"\x40\x21\x01"})  # a neighbour's sensor
        bluez.advertise(WINDOW, {SERVICE_UUID: b"\x40\x00\x02\x2d\x00"})
        events = await sink.take(13)
    assert events == [
        (EventKind.AVAILABILITY, "living-climate", "living", True),
        (EventKind.BATTERY, "living-climate", "living", 93.0),
        (EventKind.TEMPERATURE, "living-climate", "living", 23.97),
        (EventKind.HUMIDITY, "living-climate", "living", 63.27),
        (EventKind.AVAILABILITY, "bedroom-window", "bedroom", True),
        (EventKind.CONTACT, "bedroom-window", "bedroom", True),
        (EventKind.AVAILABILITY, "pendant", None, True),
        (EventKind.BATTERY, "pendant", None, 88.0),
        (EventKind.HELP, "pendant", None, "pendant"),
        (EventKind.FALL_REPORTED, "pendant", None, True),
        (EventKind.AVAILABILITY, "sos", "bedroom", True),
        (EventKind.HELP, "sos", "bedroom", "button"),
        (EventKind.CONTACT, "bedroom-window", "bedroom", False),
    ]
    assert adapter.rejected == {
        "pendant: replayed counter": 1,
        "11:22:33:44:55:66: unknown device (not in the config)": 1,
    }


async def test_adapter_removed_and_back(bluez: FakeBlueZ) -> None:
    clock = WatchedClock(Instant(T0, 0.0))
    sink = Sink()
    adapter = BleAdapter(make_config(), clock, backoff=Backoff(start=1.0, cap=4.0))
    async with Running(adapter, sink):
        assert await sink.take(1) == [(EventKind.AVAILABILITY, "link:ble", None, True)]
        bluez.remove_adapter("hci0")
        assert await sink.take(1) == [(EventKind.AVAILABILITY, "link:ble", None, False)]
        bluez.add_adapter("hci0")
        clock.advance_to(await clock.backoff_started())
        assert await sink.take(1) == [(EventKind.AVAILABILITY, "link:ble", None, True)]
        bluez.advertise(WINDOW, {SERVICE_UUID: b"\x40\x00\x07\x2d\x01"})
        assert await sink.take(2) == [
            (EventKind.AVAILABILITY, "bedroom-window", "bedroom", True),
            (EventKind.CONTACT, "bedroom-window", "bedroom", True),
        ]
    assert adapter.reconnect.losses == 1


async def test_our_own_dbus_connection_dropping_is_a_lost_link(bluez: FakeBlueZ) -> None:
    clock = WatchedClock(Instant(T0, 0.0))
    sink = Sink()
    adapter = BleAdapter(make_config(), clock, backoff=Backoff(start=1.0, cap=4.0))
    async with Running(adapter, sink):
        assert await sink.take(1) == [(EventKind.AVAILABILITY, "link:ble", None, True)]
        assert adapter._bus is not None
        adapter._bus.disconnect()  # a clean close
        assert await sink.take(1) == [(EventKind.AVAILABILITY, "link:ble", None, False)]
        clock.advance_to(await clock.backoff_started())
        assert await sink.take(1) == [(EventKind.AVAILABILITY, "link:ble", None, True)]
        assert adapter._bus is not None
        # As when the system's dbus-daemon goes away under us: the socket just ends.
        adapter._bus._sock.shutdown(socket.SHUT_RDWR)
        assert await sink.take(1) == [(EventKind.AVAILABILITY, "link:ble", None, False)]
        clock.advance_to(await clock.backoff_started())
        assert await sink.take(1) == [(EventKind.AVAILABILITY, "link:ble", None, True)]
    assert adapter.reconnect.losses == 2


async def test_bluetoothd_stopping_is_a_lost_link(bluez: FakeBlueZ) -> None:
    sink = Sink()
    adapter = BleAdapter(make_config(), WatchedClock(Instant(T0, 0.0)), backoff=Backoff(start=1.0, cap=4.0))
    async with Running(adapter, sink):
        assert await sink.take(1) == [(EventKind.AVAILABILITY, "link:ble", None, True)]
        bluez.process.terminate()
        assert await sink.take(1) == [(EventKind.AVAILABILITY, "link:ble", None, False)]


async def test_missing_adapter_is_an_adapter_error(bluez: FakeBlueZ) -> None:
    adapter = BleAdapter(make_config("hci1"), RealClock())
    with pytest.raises(AdapterError, match="ble: cannot scan on hci1: BleakError: adapter 'hci1' not found"):
        await adapter.__aenter__()
    assert adapter._scanner is None
    assert adapter._bus is None


@pytest.mark.hardware
async def test_real_adapter_scans(ble_adapter: str) -> None:
    sink = Sink()
    adapter = BleAdapter(make_config(ble_adapter), RealClock())
    async with Running(adapter, sink):
        assert await sink.take(1) == [(EventKind.AVAILABILITY, "link:ble", None, True)]


def test_only_adverts_that_decode_count_as_the_device_being_there() -> None:
    from devices.bthome import encrypt

    adapter = BleAdapter(make_config(), VirtualClock(Instant(T0, 0.0)))
    events: list[Event] = []
    adapter._emit = events.append
    # The pendant was re-paired with a new key: everything it sends fails to decrypt.
    wrong_key = bytes.fromhex("00" * 16)
    for counter in range(1, 4):
        adapter.handle(
            PENDANT, encrypt(bytes.fromhex("3a04"), address=PENDANT, key=wrong_key, counter=counter)
        )
    assert adapter.availability.status()["pendant"]["last_seen"] is None
    assert events == []
    # The right key: the pendant is there again.
    adapter.handle(PENDANT, pendant_advert(10, "3a04"))
    assert adapter.availability.status()["pendant"]["last_seen"] is not None
