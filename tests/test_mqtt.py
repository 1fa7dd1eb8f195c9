"""Zigbee2MQTT through a real Mosquitto: real payloads, bad input, broker and hub restarts."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import aiomqtt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devices.availability import Backoff, DeviceInfo
from devices.base import AdapterError
from devices.mqtt import Zigbee2MqttAdapter, _consume_disconnect, decode_state
from hub.clock import Instant, RealClock, VirtualClock
from hub.config import HubConfig, parse_config
from hub.events import Event, EventKind
from tests.brokers import Mosquitto, free_port, mosquitto

__all__ = ["mosquitto"]

DATA = Path(__file__).parent / "data" / "z2m"
T0 = 1772521200.0


def payload(name: str) -> bytes:
    return (DATA / name).read_bytes()


def make_config(broker: str) -> HubConfig:
    return parse_config(
        f"""
flat: {{id: mqtt-flat, name: Testwohnung}}
rooms: [hall, kitchen, bathroom, living, bedroom]
radios:
  zigbee2mqtt: {{broker: "{broker}", base_topic: z2m}}
devices:
  - {{id: hall-motion, room: hall, kind: motion, zigbee2mqtt: hall motion}}
  - {{id: hall-door, room: hall, kind: contact, role: front_door, zigbee2mqtt: "0x00158d0002b4c3d2"}}
  - {{id: kettle, room: kitchen, kind: plug, zigbee2mqtt: kitchen/kettle}}
  - {{id: bath-leak, room: bathroom, kind: water_leak, zigbee2mqtt: bath leak}}
  - {{id: living-climate, room: living, kind: climate, zigbee2mqtt: living climate}}
  - {{id: bedside, room: bedroom, kind: button, zigbee2mqtt: bedside switch}}
  - {{id: sos, room: bedroom, kind: button, role: help_button, zigbee2mqtt: "0xa4c1380aabbccdd1"}}
  - {{id: bedroom-radar, room: bedroom, kind: radar, zigbee2mqtt: bedroom radar}}
  - {{id: smoke, room: hall, kind: smoke, zigbee2mqtt: hall smoke}}
""",
        "mqtt.yaml",
    )


def summary(events: list[Event]) -> list[tuple[EventKind, str, str | None, object]]:
    return [(e.kind, e.device, e.room, e.value) for e in events]


class Sink:
    """The hub's emit, as something a test can await."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self._queue: asyncio.Queue[Event] = asyncio.Queue()

    def __call__(self, event: Event) -> None:
        self.events.append(event)
        self._queue.put_nowait(event)

    async def next(self) -> Event:
        async with asyncio.timeout(10):
            return await self._queue.get()

    async def take(self, count: int) -> list[Event]:
        return [await self.next() for _ in range(count)]


@pytest.fixture
async def publisher(mosquitto: Mosquitto) -> AsyncIterator[aiomqtt.Client]:
    client = aiomqtt.Client(mosquitto.host, mosquitto.port, identifier="test-publisher")
    async with client:
        yield client
    _consume_disconnect(client)  # the broker restarts under it in some tests


class Running:
    """An adapter entered and running in the background, stopped and awaited at the end."""

    def __init__(self, adapter: Zigbee2MqttAdapter, sink: Sink) -> None:
        self.adapter = adapter
        self.sink = sink
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Running:
        await self.adapter.__aenter__()
        self.task = asyncio.create_task(self.adapter.run(self.sink))
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.task is not None
        self.task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await self.task
        await self.adapter.__aexit__(None, None, None)


# -- pure decoding ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("file", "device", "expected"),
    [
        (
            "aqara_motion_RTCGQ11LM.json",
            "hall-motion",
            [(EventKind.BATTERY, 100.0), (EventKind.ILLUMINANCE, 25.0), (EventKind.MOTION, True)],
        ),
        (
            "aqara_door_MCCGQ11LM_open.json",
            "hall-door",
            [(EventKind.BATTERY, 100.0), (EventKind.CONTACT, True)],
        ),
        (
            "aqara_leak_SJCGQ11LM.json",
            "bath-leak",
            [(EventKind.BATTERY, 100.0), (EventKind.WATER_LEAK, True)],
        ),
        (
            "aqara_climate_WSDCGQ11LM.json",
            "living-climate",
            [(EventKind.BATTERY, 91.0), (EventKind.HUMIDITY, 45.37), (EventKind.TEMPERATURE, 21.74)],
        ),
        ("ikea_E1743_on.json", "bedside", [(EventKind.BUTTON, "on"), (EventKind.BATTERY, 87.0)]),
        ("tuya_plug_TS011F_on.json", "kettle", [(EventKind.POWER, 2003.0), (EventKind.APPLIANCE, True)]),
        ("tuya_sos_TS0215A.json", "sos", [(EventKind.HELP, "button"), (EventKind.BATTERY, 100.0)]),
        (
            "tuya_radar_fall_TZE200_lu01t0zl.json",
            "bedroom-radar",
            [(EventKind.FALL_REPORTED, True), (EventKind.ILLUMINANCE, 180.0), (EventKind.MOTION, True)],
        ),
        ("heiman_smoke_HS1SA.json", "smoke", [(EventKind.BATTERY, 100.0), (EventKind.SMOKE, True)]),
    ],
)
def test_real_payloads_decode_whole(file: str, device: str, expected: list[tuple[EventKind, object]]) -> None:
    config = make_config("mqtt://127.0.0.1:1")
    events, refused = decode_state(json.loads(payload(file)), config.device(device))  # type: ignore[arg-type]
    assert events == expected
    assert refused == []


def test_contact_true_means_closed_and_wrong_types_are_refused() -> None:
    door = make_config("mqtt://127.0.0.1:1").device("hall-door")
    assert door is not None
    assert decode_state({"contact": True}, door) == ([(EventKind.CONTACT, False)], [])
    assert decode_state(
        {"contact": "open", "battery": 250, "temperature": "warm", "linkquality": "x"}, door
    ) == ([], ["bad contact", "bad battery", "bad temperature"])


@settings(max_examples=300, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=8),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=6),
        max_leaves=12,
    )
    | st.dictionaries(
        st.sampled_from(
            ["occupancy", "contact", "battery", "action", "state", "power", "fall_down_status", "presence"]
        ),
        st.none()
        | st.booleans()
        | st.floats()
        | st.integers()
        | st.text(max_size=8)
        | st.lists(st.integers()),
    ),
    st.binary(max_size=40),
)
def test_fuzz_handle_never_raises(document: object, garbage: bytes) -> None:
    clock = VirtualClock(Instant(T0, 0.0))
    adapter = Zigbee2MqttAdapter(make_config("mqtt://127.0.0.1:1"), clock)
    events: list[Event] = []
    for topic in ("z2m/hall motion", "z2m/kitchen/kettle", "z2m/bedroom radar", "z2m/bridge/devices"):
        adapter.handle(topic, json.dumps(document).encode(), events.append)
        adapter.handle(topic, garbage, events.append)
    adapter.handle("z2m/hall motion/availability", garbage, events.append)
    assert all(isinstance(e, Event) for e in events)
    assert adapter.messages == 9


# -- through the broker ----------------------------------------------------------------------


async def test_end_to_end_through_mosquitto(mosquitto: Mosquitto, publisher: aiomqtt.Client) -> None:
    infos: list[DeviceInfo] = []
    sink = Sink()
    adapter = Zigbee2MqttAdapter(
        make_config(mosquitto.url), RealClock(), client_id="hub-e2e", on_device_info=infos.append
    )
    async with Running(adapter, sink):
        assert summary([await sink.next()]) == [(EventKind.AVAILABILITY, "link:zigbee2mqtt", None, True)]
        await publisher.publish("z2m/bridge/devices", payload("bridge_devices.json"), qos=1, retain=True)
        for topic, file in [
            ("z2m/hall motion", "aqara_motion_RTCGQ11LM.json"),
            ("z2m/front door", "aqara_door_MCCGQ11LM_open.json"),  # configured by IEEE
            ("z2m/kitchen/kettle", "tuya_plug_TS011F_on.json"),
            ("z2m/0xa4c1380aabbccdd1", "tuya_sos_TS0215A.json"),
            ("z2m/hall motion", '{"occupancy":false,"battery":100}'),
        ]:
            await publisher.publish(topic, payload(file) if file.endswith(".json") else file.encode(), qos=1)
        await publisher.publish("z2m/hall motion/availability", '{"state":"offline"}', qos=1)
        await publisher.publish("z2m/hall motion/availability", "online", qos=1)
        events = await sink.take(16)
    assert summary(events) == [
        (EventKind.AVAILABILITY, "hall-motion", "hall", True),
        (EventKind.BATTERY, "hall-motion", "hall", 100.0),
        (EventKind.ILLUMINANCE, "hall-motion", "hall", 25.0),
        (EventKind.MOTION, "hall-motion", "hall", True),
        (EventKind.AVAILABILITY, "hall-door", "hall", True),
        (EventKind.BATTERY, "hall-door", "hall", 100.0),
        (EventKind.CONTACT, "hall-door", "hall", True),
        (EventKind.AVAILABILITY, "kettle", "kitchen", True),
        (EventKind.POWER, "kettle", "kitchen", 2003.0),
        (EventKind.APPLIANCE, "kettle", "kitchen", True),
        (EventKind.AVAILABILITY, "sos", "bedroom", True),
        (EventKind.HELP, "sos", "bedroom", "button"),
        (EventKind.BATTERY, "sos", "bedroom", 100.0),
        # the same battery again is no news; occupancy false is
        (EventKind.MOTION, "hall-motion", "hall", False),
        (EventKind.AVAILABILITY, "hall-motion", "hall", False),
        (EventKind.AVAILABILITY, "hall-motion", "hall", True),
    ]
    assert all(e.source == "zigbee2mqtt" for e in events)
    assert (
        DeviceInfo("hall-door", "zigbee2mqtt", "0x00158d0002b4c3d2", "Aqara", "MCCGQ11LM", "battery") in infos
    )
    assert (
        DeviceInfo("kettle", "zigbee2mqtt", "0xa4c138d1e2f3a4b5", "Tuya", "TS011F_plug_1", "mains") in infos
    )
    assert adapter.rejected == {}


async def test_bad_input_is_counted_and_logged_once(
    mosquitto: Mosquitto, publisher: aiomqtt.Client, caplog: pytest.LogCaptureFixture
) -> None:
    sink = Sink()
    adapter = Zigbee2MqttAdapter(make_config(mosquitto.url), RealClock(), client_id="hub-bad")
    caplog.set_level(logging.WARNING, logger="devices.availability")
    async with Running(adapter, sink):
        await sink.next()  # link up
        for _ in range(3):
            await publisher.publish("z2m/hall motion", b'{"occupancy": tru', qos=1)
            await publisher.publish("z2m/hall motion", b'{"occupancy": "yes", "battery": 100}', qos=1)
            await publisher.publish("z2m/hall motion", b"[1, 2]", qos=1)
            await publisher.publish("z2m/garden gnome", b'{"occupancy": true}', qos=1)
            await publisher.publish("z2m/hall motion/availability", b"maybe", qos=1)
        await publisher.publish("z2m/bath leak", payload("aqara_leak_SJCGQ11LM.json"), qos=1)
        events = await sink.take(4)
    assert summary(events) == [
        (EventKind.AVAILABILITY, "hall-motion", "hall", True),
        (EventKind.BATTERY, "hall-motion", "hall", 100.0),
        (EventKind.AVAILABILITY, "bath-leak", "bathroom", True),
        (EventKind.BATTERY, "bath-leak", "bathroom", 100.0),
    ]
    assert adapter.rejected == {
        "hall-motion: not JSON": 3,
        "hall-motion: bad occupancy": 3,
        "hall-motion: not a JSON object": 3,
        "garden gnome: unknown device (not in the config)": 3,
        "hall motion: bad availability payload": 3,
    }
    refused = [r for r in caplog.records if r.getMessage().startswith("input refused")]
    assert len(refused) == 5


async def test_broker_restart_keeps_session_and_queued_messages(
    mosquitto: Mosquitto, publisher: aiomqtt.Client
) -> None:
    # A virtual clock holds the adapter in its backoff while the test publishes.
    clock = VirtualClock(Instant(T0, 0.0))
    sink = Sink()
    adapter = Zigbee2MqttAdapter(
        make_config(mosquitto.url), clock, client_id="hub-restart", backoff=Backoff(start=1, cap=4)
    )
    async with Running(adapter, sink):
        assert summary([await sink.next()]) == [(EventKind.AVAILABILITY, "link:zigbee2mqtt", None, True)]
        mosquitto.stop()
        assert summary([await sink.next()]) == [(EventKind.AVAILABILITY, "link:zigbee2mqtt", None, False)]
        mosquitto.start()
        async with aiomqtt.Client(mosquitto.host, mosquitto.port, identifier="late-publisher") as late:
            await late.publish("z2m/bath leak", payload("aqara_leak_SJCGQ11LM.json"), qos=1)
        clock.advance_to(clock.now().mono + 10)  # backoff over: reconnect
        events = await sink.take(4)
    assert summary(events) == [
        (EventKind.AVAILABILITY, "link:zigbee2mqtt", None, True),
        (EventKind.AVAILABILITY, "bath-leak", "bathroom", True),
        (EventKind.BATTERY, "bath-leak", "bathroom", 100.0),
        (EventKind.WATER_LEAK, "bath-leak", "bathroom", True),
    ]
    assert adapter.reconnect.losses == 1


async def test_messages_published_while_the_hub_was_down_arrive(
    mosquitto: Mosquitto, publisher: aiomqtt.Client
) -> None:
    config = make_config(mosquitto.url)
    first = Sink()
    async with Running(Zigbee2MqttAdapter(config, RealClock(), client_id="hub-down"), first):
        await first.next()
    await publisher.publish("z2m/hall smoke", payload("heiman_smoke_HS1SA.json"), qos=1)
    mosquitto.restart()  # and the broker restarted meanwhile, too
    second = Sink()
    async with Running(Zigbee2MqttAdapter(config, RealClock(), client_id="hub-down"), second):
        events = await second.take(4)
    assert summary(events)[1:] == [
        (EventKind.AVAILABILITY, "smoke", "hall", True),
        (EventKind.BATTERY, "smoke", "hall", 100.0),
        (EventKind.SMOKE, "smoke", "hall", True),
    ]


async def test_bridge_offline_is_a_lost_link(mosquitto: Mosquitto, publisher: aiomqtt.Client) -> None:
    sink = Sink()
    async with Running(
        Zigbee2MqttAdapter(make_config(mosquitto.url), RealClock(), client_id="hub-bridge"), sink
    ):
        await sink.next()
        await publisher.publish("z2m/bridge/state", '{"state":"offline"}', qos=1)
        await publisher.publish("z2m/bridge/state", "online", qos=1)
        events = await sink.take(2)
    assert [e.value for e in events] == [False, True]
    assert {e.device for e in events} == {"link:zigbee2mqtt"}


async def test_failed_connect_raises_adapter_error_and_leaves_no_state() -> None:
    adapter = Zigbee2MqttAdapter(make_config(f"mqtt://127.0.0.1:{free_port()}"), RealClock())
    with pytest.raises(AdapterError, match=r"cannot connect to the MQTT broker at 127\.0\.0\.1:\d+"):
        await adapter.__aenter__()
    assert adapter._client is None


def test_bad_broker_url_is_refused() -> None:
    with pytest.raises(AdapterError, match="broker must look like"):
        Zigbee2MqttAdapter(make_config("http://example"), RealClock())


def test_a_payload_nested_too_deep_is_refused_not_fatal() -> None:
    clock = VirtualClock(Instant(T0, 0.0))
    adapter = Zigbee2MqttAdapter(make_config("mqtt://127.0.0.1:1"), clock)
    events: list[Event] = []
    for topic in (
        "z2m/hall motion",
        "z2m/bridge/devices",
        "z2m/bridge/state",
        "z2m/hall motion/availability",
    ):
        adapter.handle(topic, b"[" * 200_000, events.append)
    assert events == []
    assert adapter.rejections.total >= 2
