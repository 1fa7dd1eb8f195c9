"""MQTT to a care-service broker (a real Mosquitto): incidents, heartbeat, acks, broker restart."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiomqtt
import pytest

from alerts.channels import ChannelError, MessageKind
from alerts.channels.mqtt import MqttChannel, parse_ack, serve_acks
from hub.clock import VirtualClock
from tests.alerts_receivers import config_for, incident, raise_incident, running_engine, settle
from tests.brokers import Mosquitto, free_port, mosquitto
from tests.test_channels_webhook import ALERT

__all__ = ["mosquitto"]
pytestmark = pytest.mark.timeout(60)


async def test_incident_is_published_retained_on_the_contract_topic(mosquitto: Mosquitto) -> None:
    await MqttChannel(mosquitto.url, "f1").send(ALERT)
    # A console that connects later still sees the incident (retained).
    async with aiomqtt.Client(mosquitto.host, mosquitto.port) as client:
        await client.subscribe("aal/f1/#", qos=1)
        async with asyncio.timeout(5):
            message = await anext(aiter(client.messages))
    assert str(message.topic) == "aal/f1/incidents/inc1"
    assert message.retain
    body = json.loads(message.payload)  # type: ignore[arg-type]
    assert body["type"] == "alert"
    assert body["incident"]["id"] == "inc1"


async def test_heartbeat_topic(mosquitto: Mosquitto) -> None:
    async with aiomqtt.Client(mosquitto.host, mosquitto.port) as client:
        await client.subscribe("aal/f1/heartbeat", qos=1)
        heartbeat = ALERT.__class__(
            key="hb", kind=MessageKind.HEARTBEAT, flat_id="f1", flat_name="F", contact="c"
        )
        await MqttChannel(mosquitto.url, "f1").send(heartbeat)
        async with asyncio.timeout(5):
            message = await anext(aiter(client.messages))
    assert json.loads(message.payload)["type"] == "heartbeat"  # type: ignore[arg-type]


async def test_broker_down_is_a_retryable_error() -> None:
    with pytest.raises(ChannelError) as failed:
        await MqttChannel(f"mqtt://127.0.0.1:{free_port()}", "f1", timeout=2).send(ALERT)
    assert not failed.value.permanent


def test_ack_payloads() -> None:
    assert parse_ack("aal/f1/incidents/abc/ack", b'{"by": "Pflegedienst"}', "f1") == ("abc", "Pflegedienst")
    assert parse_ack("aal/f1/incidents/abc/ack", b"", "f1") == ("abc", "mqtt")
    assert parse_ack("aal/f1/incidents/abc/ack", b"\xff", "f1") == ("abc", "mqtt")
    assert parse_ack("aal/f2/incidents/abc/ack", b"", "f1") is None
    assert parse_ack("aal/f1/incidents/a/b/ack", b"", "f1") is None


async def test_acks_and_status_survive_a_broker_restart(mosquitto: Mosquitto) -> None:
    acks: list[tuple[str, str]] = []
    got = asyncio.Event()

    async def on_ack(incident_id: str, by: str) -> None:
        acks.append((incident_id, by))
        got.set()

    task = asyncio.create_task(serve_acks(mosquitto.url, "f1", on_ack))
    try:
        async with aiomqtt.Client(mosquitto.host, mosquitto.port) as console:
            await console.subscribe("aal/f1/status", qos=1)
            async with asyncio.timeout(5):
                status = await anext(aiter(console.messages))
            assert json.loads(status.payload)["state"] == "online"  # type: ignore[arg-type]
        await asyncio.sleep(0.2)
        async with aiomqtt.Client(mosquitto.host, mosquitto.port) as console:
            await console.publish("aal/f1/incidents/i1/ack", json.dumps({"by": "Anna"}), qos=1)
        async with asyncio.timeout(5):
            await got.wait()
        assert acks == [("i1", "Anna")]

        # The broker restarts; the hub's persistent session brings the next ack through.
        await asyncio.to_thread(mosquitto.restart)
        got.clear()
        async with asyncio.timeout(15):
            while not got.is_set():
                try:
                    async with aiomqtt.Client(mosquitto.host, mosquitto.port) as console:
                        await console.publish("aal/f1/incidents/i2/ack", b"", qos=1)
                    await asyncio.wait_for(got.wait(), 1.0)
                except (aiomqtt.MqttError, TimeoutError):
                    await asyncio.sleep(0.2)
        assert acks[-1] == ("i2", "mqtt")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    async with aiomqtt.Client(mosquitto.host, mosquitto.port) as console:
        await console.subscribe("aal/f1/status", qos=1)
        async with asyncio.timeout(5):
            status = await anext(aiter(console.messages))
    assert json.loads(status.payload)["state"] == "offline"  # type: ignore[arg-type]


async def test_engine_acknowledges_from_mqtt(
    mosquitto: Mosquitto, tmp_path: Path, clock: VirtualClock
) -> None:
    config = config_for(
        f'{{mqtt: "{mosquitto.url}"}}', f'{{mqtt: "{mosquitto.url}"}}', f'{{mqtt: "{mosquitto.url}"}}'
    )
    async with aiomqtt.Client(mosquitto.host, mosquitto.port) as console:
        await console.subscribe("aal/test-flat/incidents/+", qos=1)
        async with running_engine(config, clock, tmp_path / "hub.db") as (engine, store, _):
            help_ = incident(clock)
            await raise_incident(engine, store, help_)
            async with asyncio.timeout(5):
                alert = await anext(aiter(console.messages))
            assert json.loads(alert.payload)["incident"]["id"] == help_.id  # type: ignore[arg-type]
            await console.publish(f"aal/test-flat/incidents/{help_.id}/ack", b'{"by": "Pflegedienst"}', qos=1)
            for _ in range(100):
                await settle(engine, store, rounds=1)
                if (await engine.incidents())[0]["state"] == "acknowledged":
                    break
            assert (await engine.incidents())[0]["state"] == "acknowledged"
