"""Zigbee2MQTT: the sensors of a flat that already runs Zigbee2MQTT, read from its MQTT broker.

Topics under the configured base topic (default `zigbee2mqtt`):
- `<base>/bridge/devices` (retained): the device list; maps IEEE addresses to friendly names and
  tells manufacturer and model.
- `<base>/bridge/state`: the bridge itself online/offline; offline counts as the link being down.
- `<base>/<friendly name>`: the device's whole state as a JSON object, decoded by `STATE_KEYS`.
- `<base>/<friendly name>/availability`: "online"/"offline" (plain or `{"state": ...}`).

QoS 1 with a fixed client id and `clean_session=False`: the broker keeps our subscriptions and the
messages published while the hub was away, across hub and broker restarts (Mosquitto needs
persistence for the latter). Reconnects follow `devices.availability.Reconnect`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import urllib.parse
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, Final, Self

import aiomqtt

from devices.availability import (
    AvailabilityTracker,
    Backoff,
    ChangeFilter,
    DeviceInfo,
    DeviceInfoCallback,
    Reconnect,
    Rejections,
)
from devices.base import AdapterError, Emit
from hub.clock import Clock
from hub.config import DeviceConfig, DeviceKind, DeviceRole, HubConfig, Zigbee2MqttRadio
from hub.events import Event, EventKind, Value

log = logging.getLogger(__name__)

QOS: Final = 1
MAINS_KINDS: Final = frozenset({DeviceKind.PLUG, DeviceKind.APPLIANCE, DeviceKind.RADAR})


class BadValue(ValueError):
    """A known key with a value of the wrong type or range."""


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    raise BadValue(f"expected true/false, got {value!r}")


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise BadValue(f"expected a number, got {value!r}")
    return float(value)


def _percent(value: Any) -> float:
    number = _number(value)
    if not 0 <= number <= 100:
        raise BadValue(f"expected 0..100, got {value!r}")
    return number


def _on_off(value: Any) -> bool:
    if isinstance(value, str) and value.upper() in {"ON", "OFF"}:
        return value.upper() == "ON"
    raise BadValue(f'expected "ON" or "OFF", got {value!r}')


def _not_bool(value: Any) -> bool:
    # Zigbee2MQTT: contact=true means the magnet is near, i.e. CLOSED; the hub's CONTACT is "open".
    return not _bool(value)


# Tuya radars (fall_down_status) and others: which words mean a fall. A radar's "maybe_fall" is
# still a reported fall: the rules' pre-alarm lets the resident cancel a false one.
FALL_WORDS: Final = frozenset({"fall", "maybe_fall", "fall_detected", "fallen"})
NO_FALL_WORDS: Final = frozenset({"none", "normal", "no_fall", "clear", ""})


def _fall(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        word = value.strip().lower()
        if word in FALL_WORDS:
            return True
        if word in NO_FALL_WORDS:
            return False
    raise BadValue(f"expected a fall state such as fall/none, got {value!r}")


def _action(value: Any) -> str:
    if isinstance(value, str):
        return value
    raise BadValue(f"expected an action word, got {value!r}")


Convert = Callable[[Any], Value]

# Zigbee2MQTT state key -> (event kind, converter). Keys not listed (linkquality, voltage, ...) are
# ignored; a listed key with a bad value is refused and counted.
STATE_KEYS: Final[Mapping[str, tuple[EventKind, Convert]]] = {
    "occupancy": (EventKind.MOTION, _bool),
    "presence": (EventKind.MOTION, _bool),
    "contact": (EventKind.CONTACT, _not_bool),
    "water_leak": (EventKind.WATER_LEAK, _bool),
    "smoke": (EventKind.SMOKE, _bool),
    "battery": (EventKind.BATTERY, _percent),
    "action": (EventKind.BUTTON, _action),
    "temperature": (EventKind.TEMPERATURE, _number),
    "humidity": (EventKind.HUMIDITY, _percent),
    "illuminance": (EventKind.ILLUMINANCE, _number),
    "illuminance_lux": (EventKind.ILLUMINANCE, _number),
    "state": (EventKind.APPLIANCE, _on_off),
    "power": (EventKind.POWER, _number),
    "fall_down_status": (EventKind.FALL_REPORTED, _fall),
    "fall": (EventKind.FALL_REPORTED, _fall),
}

# Button actions that are a help call whatever the device's role (Tuya/Heiman SOS buttons).
HELP_ACTIONS: Final = frozenset({"emergency", "sos", "panic"})
# On a pendant these are a help call too; a help-button role makes every action one.
PENDANT_HELP_ACTIONS: Final = frozenset({"long", "hold", "long_press"})


def decode_state(
    payload: Mapping[str, Any], device: DeviceConfig
) -> tuple[list[tuple[EventKind, Value]], list[str]]:
    """One Zigbee2MQTT state object -> (events as (kind, value), refusal reasons). Pure."""
    events: list[tuple[EventKind, Value]] = []
    refused: list[str] = []
    for key, raw in payload.items():
        entry = STATE_KEYS.get(key)
        if entry is None or raw is None:
            continue
        if key == "illuminance_lux" and "illuminance" in payload:
            continue  # Zigbee2MQTT 1.x sends both, in lux
        kind, convert = entry
        if kind is EventKind.APPLIANCE and device.kind not in {DeviceKind.PLUG, DeviceKind.APPLIANCE}:
            continue  # a light's or a radar's `state` is not an appliance
        try:
            value = convert(raw)
        except BadValue:
            refused.append(f"bad {key}")
            continue
        if kind is EventKind.BUTTON:
            if value == "":
                continue  # the legacy "action cleared" message
            if _is_help(device, str(value)):
                events.append((EventKind.HELP, "pendant" if device.kind is DeviceKind.PENDANT else "button"))
                continue
        events.append((kind, value))
    return events, refused


def _is_help(device: DeviceConfig, action: str) -> bool:
    word = action.lower()
    if word in HELP_ACTIONS or device.role is DeviceRole.HELP_BUTTON:
        return True
    return device.kind is DeviceKind.PENDANT and word in PENDANT_HELP_ACTIONS


def _availability(payload: bytes) -> bool | None:
    text = payload.decode("utf-8", "replace").strip()
    if text.startswith("{"):
        try:
            text = str(json.loads(text).get("state", ""))
        except (ValueError, AttributeError, RecursionError):
            return None
    return {"online": True, "offline": False}.get(text.lower())


class Zigbee2MqttAdapter:
    """Zigbee2MQTT devices from the config (`zigbee2mqtt: <friendly name or IEEE>`) as hub events."""

    name = "zigbee2mqtt"

    def __init__(
        self,
        config: HubConfig,
        clock: Clock,
        *,
        client_id: str | None = None,
        on_device_info: DeviceInfoCallback | None = None,
        backoff: Backoff | None = None,
        keepalive: int = 30,
    ) -> None:
        radio = config.radios.zigbee2mqtt or Zigbee2MqttRadio()
        self.radio = radio
        url = urllib.parse.urlsplit(radio.broker)
        if url.scheme not in {"mqtt", "tcp", ""} or not url.hostname:
            raise AdapterError(f"zigbee2mqtt: broker must look like mqtt://host:1883, got {radio.broker!r}")
        self.host = url.hostname
        self.port = url.port or 1883
        self.base = radio.base_topic.rstrip("/")
        self.client_id = client_id or f"aal-hub-{config.flat.id}"
        self.clock = clock
        self.keepalive = keepalive
        self._on_device_info = on_device_info
        self._devices = [d for d in config.devices if d.zigbee2mqtt is not None]
        # Topic name -> device; IEEE-configured devices join once bridge/devices names them.
        self._by_name: dict[str, DeviceConfig] = {
            d.zigbee2mqtt: d for d in self._devices if d.zigbee2mqtt and not _is_ieee(d.zigbee2mqtt)
        }
        self._by_ieee = {
            d.zigbee2mqtt.lower(): d for d in self._devices if d.zigbee2mqtt and _is_ieee(d.zigbee2mqtt)
        }
        self.reconnect = Reconnect(self.name, clock, backoff)
        self.availability = AvailabilityTracker(
            clock,
            self.name,
            offline_after=(
                config.rules.device_health.offline_after.seconds
                if config.rules.device_health.offline_after is not None
                else None
            ),
        )
        for device in self._devices:
            self.availability.watch(device.id, device.room, mains=device.kind in MAINS_KINDS)
        self.changes = ChangeFilter()
        self.rejections = Rejections(self.name)
        self.rejected = self.rejections.counts
        self.messages = 0
        self.events = 0
        self._client: aiomqtt.Client | None = None
        self._bridge_online = True

    # -- connection --------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        try:
            self._client = await self._connect()
        except aiomqtt.MqttError as err:
            raise AdapterError(
                f"zigbee2mqtt: cannot connect to the MQTT broker at {self.host}:{self.port}: {err}"
            ) from err
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._drop_client()

    async def _connect(self) -> aiomqtt.Client:
        client = aiomqtt.Client(
            self.host,
            self.port,
            username=self.radio.username,
            password=self.radio.password,
            identifier=self.client_id,
            clean_session=False,
            keepalive=self.keepalive,
            timeout=10,
        )
        await client.__aenter__()
        try:
            for topic in self.topics():
                await client.subscribe(topic, qos=QOS)
        except BaseException:
            with contextlib.suppress(aiomqtt.MqttError):
                await client.__aexit__(None, None, None)
            raise
        return client

    async def _drop_client(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(aiomqtt.MqttError):
                await client.__aexit__(None, None, None)
            _consume_disconnect(client)

    def topics(self) -> list[str]:
        topics = [
            f"{self.base}/bridge/devices",
            f"{self.base}/bridge/state",
            f"{self.base}/+",
            f"{self.base}/+/availability",
        ]
        # Friendly names may hold slashes ("kitchen/kettle"), which `+` does not match.
        for name in sorted(n for n in self._by_name if "/" in n):
            topics += [f"{self.base}/{name}", f"{self.base}/{name}/availability"]
        return topics

    # -- running -----------------------------------------------------------------------------

    async def run(self, emit: Emit) -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(self.availability.run(emit), name="zigbee2mqtt-availability")
            await self._serve(emit)

    async def _serve(self, emit: Emit) -> None:
        while True:
            if self._client is None:
                try:
                    self._client = await self._connect()
                except aiomqtt.MqttError as err:
                    self.reconnect.lost(emit, err)
                    await self.reconnect.wait()
                    continue
            client = self._client
            self._link_changed(emit)
            try:
                async for message in client.messages:
                    try:
                        self.handle(message.topic.value, message.payload, emit)
                    except Exception as err:  # noqa: BLE001 (bad input must never stop the adapter)
                        self.rejections.reject(message.topic.value, f"unexpected {type(err).__name__}", err)
            except aiomqtt.MqttError as err:
                await self._drop_client()
                self.reconnect.lost(emit, err)
                await self.reconnect.wait()

    def _link_changed(self, emit: Emit) -> None:
        if self._client is not None and self._bridge_online:
            self.reconnect.connected(emit)
        else:
            self.reconnect.lost(emit, "Zigbee2MQTT bridge offline" if self._client else "broker lost")

    # -- messages ----------------------------------------------------------------------------

    def handle(self, topic: str, payload: Any, emit: Emit) -> None:
        """One MQTT message. Never raises for bad input: it is refused and counted."""
        self.messages += 1
        if not isinstance(payload, bytes | bytearray):
            payload = str(payload).encode()
        prefix = self.base + "/"
        if not topic.startswith(prefix):
            return
        rest = topic[len(prefix) :]
        if rest.startswith("bridge/"):
            self._bridge(rest[7:], bytes(payload), emit)
            return
        if rest.endswith("/availability"):
            name = rest[: -len("/availability")]
            device = self._device(name)
            if device is None:
                return
            online = _availability(bytes(payload))
            if online is None:
                self.rejections.reject(name, "bad availability payload", payload[:80])
                return
            if not online:
                self.changes.forget(device.id)
            self.availability.set_online(device.id, online, emit)
            return
        if rest.endswith(("/set", "/get")) or ("/" in rest and rest not in self._by_name):
            return
        device = self._device(rest)
        if device is None:
            return
        try:
            state = json.loads(payload)
        except (ValueError, UnicodeDecodeError, RecursionError):
            self.rejections.reject(device.id, "not JSON", payload[:80])
            return
        if not isinstance(state, dict):
            self.rejections.reject(device.id, "not a JSON object", payload[:80])
            return
        decoded, refused = decode_state(state, device)
        for reason in refused:
            self.rejections.reject(device.id, reason, {k: state.get(k) for k in STATE_KEYS if k in state})
        self.availability.seen(device.id, emit)
        now = self.clock.now()
        for kind, value in decoded:
            if self.changes.is_news(device.id, kind, value):
                self.events += 1
                emit(
                    Event(
                        kind=kind,
                        device=device.id,
                        room=device.room,
                        value=value,
                        wall=now.wall,
                        mono=now.mono,
                        source=self.name,
                    )
                )

    def _device(self, name: str) -> DeviceConfig | None:
        device = self._by_name.get(name)
        if device is None:
            self.rejections.reject(name, "unknown device (not in the config)")
        return device

    def _bridge(self, what: str, payload: bytes, emit: Emit) -> None:
        if what == "state":
            online = _availability(payload)
            if online is None:
                self.rejections.reject("bridge", "bad bridge state", payload[:80])
                return
            self._bridge_online = online
            self._link_changed(emit)
        elif what == "devices":
            self._device_list(payload)

    def _device_list(self, payload: bytes) -> None:
        try:
            listed = json.loads(payload)
        except (ValueError, UnicodeDecodeError, RecursionError):
            self.rejections.reject("bridge", "bad device list", payload[:80])
            return
        if not isinstance(listed, list):
            self.rejections.reject("bridge", "bad device list", payload[:80])
            return
        by_name = {d.zigbee2mqtt: d for d in self._devices if d.zigbee2mqtt and not _is_ieee(d.zigbee2mqtt)}
        for entry in listed:
            if not isinstance(entry, dict) or entry.get("type") == "Coordinator":
                continue
            ieee = str(entry.get("ieee_address", "")).lower()
            name = entry.get("friendly_name")
            if not isinstance(name, str):
                continue
            device = self._by_ieee.get(ieee) or by_name.get(name)
            if device is not None and self._by_ieee.get(ieee) is device:
                by_name[name] = device  # configured by IEEE: follow renames
            raw_definition = entry.get("definition")
            definition: dict[str, Any] = raw_definition if isinstance(raw_definition, dict) else {}
            if self._on_device_info is not None and device is not None:
                power = entry.get("power_source")
                self._on_device_info(
                    DeviceInfo(
                        device=device.id,
                        transport=self.name,
                        address=ieee or name,
                        manufacturer=_str_or_none(definition.get("vendor") or entry.get("manufacturer")),
                        model=_str_or_none(definition.get("model") or entry.get("model_id")),
                        power_source=(
                            None
                            if not isinstance(power, str)
                            else "battery"
                            if power.lower() == "battery"
                            else "mains"
                        ),
                    )
                )
        self._by_name = by_name


def _consume_disconnect(client: aiomqtt.Client) -> None:
    # aiomqtt 2.5 leaves the reason of a lost connection in a future nobody reads when the client is
    # left without iterating its messages; read it so asyncio does not log it as never retrieved.
    disconnected = client._disconnected
    if disconnected.done() and not disconnected.cancelled():
        disconnected.exception()


def _is_ieee(address: str) -> bool:
    text = address.lower()
    return text.startswith("0x") and len(text) == 18 and all(c in "0123456789abcdef" for c in text[2:])


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


__all__ = ["STATE_KEYS", "Zigbee2MqttAdapter", "decode_state"]
