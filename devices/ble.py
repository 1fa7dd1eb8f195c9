"""BLE sensors and the pendant: BTHome v2 advertisements through bleak's BlueZ backend.

Passive scanning (BlueZ advertisement monitor with an or-pattern on the 0xFCD2 service data): the
hub never transmits scan requests, and only BTHome advertisements wake it. Each advertisement is
decoded by `devices.bthome` (pure) and mapped to hub events by `MEASUREMENTS`; encrypted devices
use their bindkey from the config and must show a growing counter (replay protection).

BlueZ calls back on every property change of a device, RSSI included, so the same service data
arrives again and again: identical bytes from a device are dropped before parsing (a BTHome device
that wants a repeated button press seen sends a packet id or a counter, which changes the bytes).

The radio link is watched on D-Bus: BlueZ going away, the adapter being removed or powered off, or
the hub's own D-Bus connection dropping is an AVAILABILITY False for `link:ble`, and the scanner
is restarted with backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Literal, Self

from devices.availability import (
    AvailabilityTracker,
    Backoff,
    ChangeFilter,
    Reconnect,
    Rejections,
)
from devices.base import AdapterError, Emit
from devices.bthome import SERVICE_UUID, Advertisement, BTHomeError, CounterGuard, parse
from hub.clock import Clock
from hub.config import BleRadio, DeviceConfig, DeviceKind, DeviceRole, HubConfig
from hub.events import Event, EventKind, Value

if TYPE_CHECKING:
    from bleak import BleakScanner
    from dbus_fast.aio import MessageBus

log = logging.getLogger(__name__)

MAINS_KINDS: Final = frozenset({DeviceKind.PLUG, DeviceKind.APPLIANCE, DeviceKind.RADAR})
PENDANT_HELP: Final = frozenset({"long", "long_double", "long_triple", "hold"})


def _bool_event(kind: EventKind) -> Callable[[Any, DeviceConfig], tuple[EventKind, Value] | None]:
    return lambda value, _device: (kind, bool(value))


def _number_event(kind: EventKind) -> Callable[[Any, DeviceConfig], tuple[EventKind, Value] | None]:
    return lambda value, _device: (kind, float(value))


def _button(value: Any, device: DeviceConfig) -> tuple[EventKind, Value] | None:
    word = str(value)
    if word == "none":
        return None
    helper = "pendant" if device.kind is DeviceKind.PENDANT else "button"
    if device.role is DeviceRole.HELP_BUTTON or (device.kind is DeviceKind.PENDANT and word in PENDANT_HELP):
        return EventKind.HELP, helper
    return EventKind.BUTTON, word


def _fall(value: Any, _device: DeviceConfig) -> tuple[EventKind, Value] | None:
    return EventKind.FALL_REPORTED, value == 1


def _accel(value: Any, _device: DeviceConfig) -> tuple[EventKind, Value] | None:
    return EventKind.ACCELERATION, tuple(float(v) for v in value)


# BTHome measurement name -> hub event. Names not listed (packet id, voltage, ...) are not events.
MEASUREMENTS: Final[Mapping[str, Callable[[Any, DeviceConfig], tuple[EventKind, Value] | None]]] = {
    "battery": _number_event(EventKind.BATTERY),
    "temperature": _number_event(EventKind.TEMPERATURE),
    "humidity": _number_event(EventKind.HUMIDITY),
    "illuminance": _number_event(EventKind.ILLUMINANCE),
    "power": _number_event(EventKind.POWER),
    "power_on": _bool_event(EventKind.APPLIANCE),
    "plug": _bool_event(EventKind.APPLIANCE),
    "opening": _bool_event(EventKind.CONTACT),
    "door": _bool_event(EventKind.CONTACT),
    "window": _bool_event(EventKind.CONTACT),
    "garage_door": _bool_event(EventKind.CONTACT),
    "moisture_detected": _bool_event(EventKind.WATER_LEAK),
    "motion": _bool_event(EventKind.MOTION),
    "occupancy": _bool_event(EventKind.MOTION),
    "presence": _bool_event(EventKind.MOTION),
    "smoke": _bool_event(EventKind.SMOKE),
    "button": _button,
    "fall": _fall,
    "accel": _accel,
}


def events_of(advert: Advertisement, device: DeviceConfig) -> list[tuple[EventKind, Value]]:
    """A decoded advertisement -> (kind, value) pairs for the hub. Pure."""
    out: list[tuple[EventKind, Value]] = []
    for measurement in advert.measurements:
        mapper = MEASUREMENTS.get(measurement.name)
        if mapper is None:
            continue
        event = mapper(measurement.value, device)
        if event is not None:
            out.append(event)
    return out


def load_bindkey(device: DeviceConfig, base: Path | None = None) -> bytes | None:
    """The device's 16-byte key from `bindkey` (hex) or `bindkey_file` (hex text, chmod 600)."""
    text = device.bindkey
    if text is None and device.bindkey_file is not None:
        path = Path(device.bindkey_file)
        if base is not None and not path.is_absolute():
            path = base / path
        try:
            text = path.read_text(encoding="utf-8").strip()
        except OSError as err:
            raise AdapterError(
                f"ble: device {device.id}: cannot read bindkey_file {path}: {err.strerror}"
            ) from err
    if text is None:
        return None
    try:
        key = bytes.fromhex(text.strip())
    except ValueError:
        key = b""
    if len(key) != 16:
        raise AdapterError(f"ble: device {device.id}: a bindkey is 32 hexadecimal digits")
    return key


class BleAdapter:
    """BLE devices from the config (`ble: <MAC>`) as hub events."""

    name = "ble"

    def __init__(
        self,
        config: HubConfig,
        clock: Clock,
        *,
        backoff: Backoff | None = None,
        scanning_mode: Literal["passive", "active"] = "passive",
        key_dir: Path | None = None,
    ) -> None:
        radio = config.radios.ble or BleRadio()
        self.adapter_name = radio.adapter
        self.adapter_path = f"/org/bluez/{radio.adapter}"
        self.clock = clock
        self.scanning_mode = scanning_mode
        self._by_mac: dict[str, DeviceConfig] = {}
        self._keys: dict[str, bytes] = {}
        for device in config.devices:
            if device.ble is None:
                continue
            mac = device.ble.upper().replace("-", ":")
            self._by_mac[mac] = device
            if (key := load_bindkey(device, key_dir)) is not None:
                self._keys[mac] = key
        offline_after = config.rules.device_health.offline_after
        self.availability = AvailabilityTracker(
            clock, self.name, offline_after=offline_after.seconds if offline_after is not None else None
        )
        for device in self._by_mac.values():
            self.availability.watch(device.id, device.room, mains=device.kind in MAINS_KINDS)
        self.reconnect = Reconnect(self.name, clock, backoff)
        self.changes = ChangeFilter()
        self.rejections = Rejections(self.name)
        self.rejected = self.rejections.counts
        self.counters = CounterGuard()
        self.adverts = 0
        self.events = 0
        self._last_data: dict[str, bytes] = {}
        self._valid: set[str] = set()  # MACs whose last distinct advert decoded
        self._scanner: BleakScanner | None = None
        self._bus: MessageBus | None = None
        self._lost: asyncio.Future[str] | None = None
        self._bus_watch: asyncio.Future[Any] | None = None
        self._pending: list[Event] = []
        self._emit: Emit = self._pending.append

    # -- connection --------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        try:
            await self._start()
        except asyncio.CancelledError:
            raise
        except Exception as err:
            raise AdapterError(
                f"ble: cannot scan on {self.adapter_name}: {type(err).__name__}: {err}"
            ) from err
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._stop()

    async def _start(self) -> None:
        from bleak import BleakScanner
        from bleak.args.bluez import OrPattern
        from bleak.assigned_numbers import AdvertisementDataType

        self._lost = asyncio.get_running_loop().create_future()
        try:
            await self._watch_link()
            scanner = BleakScanner(
                detection_callback=self._on_advertisement,
                scanning_mode=self.scanning_mode,
                bluez={
                    "adapter": self.adapter_name,
                    "or_patterns": [OrPattern(0, AdvertisementDataType.SERVICE_DATA_UUID16, b"\xd2\xfc")],
                },
            )
            await scanner.start()
            self._scanner = scanner
        except BaseException:
            await self._stop()
            raise

    async def _stop(self) -> None:
        scanner, self._scanner = self._scanner, None
        bus, self._bus = self._bus, None
        if scanner is not None:
            try:
                await scanner.stop()
            except Exception as err:  # noqa: BLE001 (BlueZ may already be gone: nothing left to stop)
                log.info("ble scanner stop failed", extra={"error": repr(err)})
        if bus is not None:
            bus.disconnect()
            # A connection that broke under us ends with its error (EOFError): already a lost
            # link, nothing left to close.
            with contextlib.suppress(Exception):
                await bus.wait_for_disconnect()  # type: ignore[no-untyped-call]

    async def _watch_link(self) -> None:
        """Our own D-Bus connection, only to hear BlueZ or the adapter going away."""
        from dbus_fast import BusType, Message
        from dbus_fast.aio import MessageBus

        bus = await MessageBus(bus_type=BusType.SYSTEM).connect()
        self._bus = bus
        rules = [
            "type='signal',interface='org.freedesktop.DBus',member='NameOwnerChanged',arg0='org.bluez'",
            "type='signal',interface='org.freedesktop.DBus.ObjectManager',member='InterfacesRemoved'",
            (
                f"type='signal',interface='org.freedesktop.DBus.Properties',member='PropertiesChanged',"
                f"path='{self.adapter_path}'"
            ),
        ]
        for rule in rules:
            await bus.call(
                Message(
                    destination="org.freedesktop.DBus",
                    path="/org/freedesktop/DBus",
                    interface="org.freedesktop.DBus",
                    member="AddMatch",
                    signature="s",
                    body=[rule],
                )
            )
        bus.add_message_handler(self._on_bus_message)
        # Our own connection to the system bus dropping (dbus-daemon restarted) silences BlueZ's
        # signals too: a lost link, not a quiet one.
        watch = asyncio.ensure_future(bus.wait_for_disconnect())  # type: ignore[no-untyped-call]
        self._bus_watch = watch  # held: a task only weakly referenced by the loop could vanish
        watch.add_done_callback(lambda done: self._bus_gone(bus, done))

    def _bus_gone(self, bus: Any, done: asyncio.Future[Any]) -> None:
        if not done.cancelled():
            done.exception()  # a broken connection ends with an error: retrieved, and said below
        if self._bus is bus and self._lost is not None and not self._lost.done():
            self._lost.set_result("D-Bus connection lost")

    def _on_bus_message(self, message: Any) -> None:
        reason: str | None = None
        if message.member == "NameOwnerChanged" and message.body[0] == "org.bluez" and not message.body[2]:
            reason = "BlueZ (bluetoothd) stopped"
        elif message.member == "InterfacesRemoved" and message.body[0] == self.adapter_path:
            if "org.bluez.Adapter1" in message.body[1]:
                reason = f"adapter {self.adapter_name} removed"
        elif message.member == "PropertiesChanged" and message.path == self.adapter_path:
            powered = message.body[1].get("Powered") if message.body[0] == "org.bluez.Adapter1" else None
            if powered is not None and powered.value is False:
                reason = f"adapter {self.adapter_name} powered off"
        if reason is not None and self._lost is not None and not self._lost.done():
            self._lost.set_result(reason)

    # -- running -----------------------------------------------------------------------------

    async def run(self, emit: Emit) -> None:
        self._emit = emit
        if self._scanner is not None:
            self.reconnect.connected(emit)
        pending, self._pending = self._pending, []
        for event in pending:
            emit(event)
        async with asyncio.TaskGroup() as group:
            group.create_task(self.availability.run(emit), name="ble-availability")
            await self._supervise(emit)

    async def _supervise(self, emit: Emit) -> None:
        while True:
            if self._scanner is None:
                try:
                    await self._start()
                except asyncio.CancelledError:
                    raise
                except Exception as err:  # noqa: BLE001 (bleak and D-Bus errors alike: a failed attempt)
                    self.reconnect.lost(emit, err)
                    await self.reconnect.wait()
                    continue
            self.reconnect.connected(emit)
            lost = self._lost
            if lost is None:
                raise AdapterError("ble: started without a link watch")
            reason = await lost
            await self._stop()
            self.reconnect.lost(emit, reason)
            await self.reconnect.wait()

    # -- advertisements ----------------------------------------------------------------------

    def _on_advertisement(self, device: Any, advertisement: Any) -> None:
        data = advertisement.service_data.get(SERVICE_UUID)
        if data is not None:
            self.handle(device.address, bytes(data))

    def handle(self, address: str, service_data: bytes) -> None:
        """One BTHome service data blob from `address`. Never raises for bad input."""
        self.adverts += 1
        mac = address.upper()
        config = self._by_mac.get(mac)
        if config is None:
            self.rejections.reject(mac, "unknown device (not in the config)")
            return
        if self._last_data.get(mac) == service_data:
            # BlueZ repeats the device's properties on every RSSI change. Only an advert that
            # decoded counts as a sign of the device: a pendant with a new key, or someone else
            # sending with its address, must not look online while its help presses are refused.
            if mac in self._valid:
                self.availability.seen(config.id, self._emit)
            return
        self._last_data[mac] = service_data
        self._valid.discard(mac)
        try:
            advert = parse(service_data, address=mac, key=self._keys.get(mac))
        except BTHomeError as err:
            self.rejections.reject(config.id, err.reason, service_data.hex())
            return
        if advert.counter is not None:
            verdict = self.counters.check(config.id, advert.counter)
            if verdict is not None and verdict != "duplicate":
                self.rejections.reject(config.id, verdict, advert.counter)
                return
            self._valid.add(mac)
            self.availability.seen(config.id, self._emit)
            if verdict == "duplicate":
                return
        else:
            self._valid.add(mac)
            self.availability.seen(config.id, self._emit)
        if advert.unknown_object is not None:
            self.rejections.reject(config.id, f"unknown object id 0x{advert.unknown_object:02X}")
        now = self.clock.now()
        for kind, value in events_of(advert, config):
            if not self.changes.is_news(config.id, kind, value):
                continue
            self.events += 1
            self._emit(
                Event(
                    kind=kind,
                    device=config.id,
                    room=config.room,
                    value=value,
                    wall=now.wall,
                    mono=now.mono,
                    source=self.name,
                )
            )


__all__ = ["MEASUREMENTS", "BleAdapter", "events_of", "load_bindkey"]
