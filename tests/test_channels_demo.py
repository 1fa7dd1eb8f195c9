"""Safety rule 4: in demo mode no message can reach a real endpoint, and every message says DEMO.

Real receivers are configured and listening (HTTP, SMTP, MQTT, SIA DC-09, Apprise); the demo flat
runs a full escalation with heartbeats; the receivers must have seen nothing at all.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiomqtt
import pytest
from pysiaalarm import SIAAccount
from pysiaalarm.aio import SIAClient

from alerts.channels import ChannelFactory, ChannelSettings
from alerts.channels.demo import DemoChannel
from alerts.escalation import AlertSettings
from hub.clock import VirtualClock
from tests.alerts_receivers import (
    FAST_RETRY,
    Receiver,
    config_for,
    incident,
    raise_incident,
    running_engine,
    settle,
)
from tests.brokers import Mosquitto, free_port, mosquitto
from tests.test_channels_email import Inbox, smtp

__all__ = ["mosquitto", "smtp"]
pytestmark = pytest.mark.timeout(60)


async def test_demo_never_reaches_a_real_receiver(
    tmp_path: Path, clock: VirtualClock, mosquitto: Mosquitto, smtp: tuple[Inbox, object]
) -> None:
    inbox, smtp_settings = smtp
    sia_events: list[object] = []

    async def sia_received(event: object) -> None:
        sia_events.append(event)

    sia_port = free_port()
    sia = SIAClient("127.0.0.1", sia_port, [SIAAccount("1234", None)], sia_received)
    await sia.async_start()
    try:
        async with Receiver() as receiver, aiomqtt.Client(mosquitto.host, mosquitto.port) as spy:
            await spy.subscribe("#", qos=1)
            apprise_port = receiver.url.rsplit(":", 1)[1]
            config = config_for(
                f'{{webhook: "{receiver.url}/d"}}, {{email: anna@example.org}}, {{apprise: "json://127.0.0.1:{apprise_port}/a"}}',
                f'{{mqtt: "{mosquitto.url}"}}',
                f'{{sia_dc09: {{host: 127.0.0.1, port: {sia_port}, account: "1234"}}}}, {{webhook: "{receiver.url}/c"}}',
                mode="demo",
            )
            factory = ChannelFactory(config, ChannelSettings(smtp=smtp_settings))  # type: ignore[arg-type]
            for contact in config.contacts:
                for channel in contact.channels:
                    assert isinstance(factory.for_config(channel), DemoChannel)

            settings = AlertSettings(
                heartbeat_every=60,
                retry=FAST_RETRY,
                channels=ChannelSettings(smtp=smtp_settings),  # type: ignore[arg-type]
            )
            async with running_engine(config, clock, tmp_path / "demo.db", settings=settings) as (
                engine,
                store,
                _,
            ):
                help_ = incident(clock)
                await raise_incident(engine, store, help_)
                start = clock.now().mono
                for minutes in range(0, 40, 5):  # through every step and a repeat of the last
                    clock.advance_to(start + minutes * 60)
                    await settle(engine, store)
                demo = engine.channels.demo_receiver
                assert demo is not None
                delivered = list(demo.received)
                assert {d.message.contact for d in delivered} >= {"daughter", "neighbour", "care-service"}
                assert all(d.message.demo and d.message.title.startswith("[DEMO]") for d in delivered)
                assert all("DEMO" in d.message.body for d in delivered)
                assert any(d.message.kind == "heartbeat" for d in delivered)
                assert await engine.outbox.pending() == []

            await asyncio.sleep(0.3)  # anything in flight would have arrived by now
            with pytest.raises(TimeoutError):  # the spy on "#" saw nothing at all
                await asyncio.wait_for(anext(aiter(spy.messages)), 0.3)
            assert receiver.requests == []
            assert inbox.mails == []
            assert sia_events == []
    finally:
        await sia.async_stop()
