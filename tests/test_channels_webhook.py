"""Webhook and Apprise against a real HTTP receiver: payload, signature, faults."""

from __future__ import annotations

import dataclasses
import json
import time

import pytest

from alerts.channels import ChannelError, Message, MessageKind
from alerts.channels.webhook import SIGNATURE_HEADER, WebhookChannel, verify
from tests.alerts_receivers import Receiver
from tests.brokers import free_port

pytestmark = pytest.mark.timeout(30)

ALERT = Message(
    key="inc1/0/daughter",
    kind=MessageKind.ALERT,
    flat_id="f1",
    flat_name="Musterwohnung",
    contact="daughter",
    created=1772521200.0,
    incident_id="inc1",
    incident_kind="help",
    severity="critical",
    room="bathroom",
    reason="Hilfe-Knopf gedrückt",
    evidence={"device": "pendant", "battery": 80},
    raised=1772521200.0,
    step=1,
    ack_url="https://hub.test/ack/T",
    video_url="https://meet.example.org/v",
)


async def test_the_documented_payload_signed_with_a_timestamp() -> None:
    async with Receiver() as receiver:
        channel = WebhookChannel(receiver.url + "/hook", "s3cret")
        await channel.send(ALERT)
        await channel.aclose()
        [(headers, body)] = receiver.requests
        assert verify("s3cret", body, headers[SIGNATURE_HEADER], now=time.time())
        assert not verify("other", body, headers[SIGNATURE_HEADER], now=time.time())
        assert not verify("s3cret", body + b" ", headers[SIGNATURE_HEADER], now=time.time())
        assert not verify("s3cret", body, headers[SIGNATURE_HEADER], now=time.time() + 3600)  # replayed later
        assert headers["Idempotency-Key"] == "inc1/0/daughter"
        assert json.loads(body) == {
            "schema": "aal-hub.message/1",
            "type": "alert",
            "key": "inc1/0/daughter",
            "demo": False,
            "flat": {"id": "f1", "name": "Musterwohnung"},
            "contact": "daughter",
            "incident": {
                "id": "inc1",
                "kind": "help",
                "severity": "critical",
                "room": "bathroom",
                "reason": "Hilfe-Knopf gedrückt",
                "evidence": {"device": "pendant", "battery": 80},
                "raised": "2026-03-03T07:00:00.000Z",
            },
            "step": 1,
            "ack_url": "https://hub.test/ack/T",
            "video_url": "https://meet.example.org/v",
            "actor": None,
            "note": None,
            "title": "Alarm: Hilferuf (bathroom) - Musterwohnung",
            "text": "Alarm: Hilferuf (bathroom) - Musterwohnung\nHilfe-Knopf gedrückt\nZeit: 03.03.2026 08:00\n"
            "Bestätigen (ich kümmere mich): https://hub.test/ack/T\nVideoanruf: https://meet.example.org/v",
            "created": "2026-03-03T07:00:00.000Z",
        }


@pytest.mark.parametrize(
    ("status", "permanent"), [(500, False), (503, False), (429, False), (404, True), (401, True)]
)
async def test_error_answers(status: int, permanent: bool) -> None:
    async with Receiver() as receiver:
        receiver.status = status
        channel = WebhookChannel(receiver.url, None)
        with pytest.raises(ChannelError, match=f"HTTP {status}") as failed:
            await channel.send(ALERT)
        assert failed.value.permanent is permanent
        await channel.aclose()


async def test_a_receiver_that_hangs_times_out() -> None:
    async with Receiver() as receiver:
        receiver.delay = 2.0
        channel = WebhookChannel(receiver.url, None, timeout=0.2)
        with pytest.raises(ChannelError, match="no answer") as failed:
            await channel.send(ALERT)
        assert not failed.value.permanent
        await channel.aclose()


async def test_nobody_listening() -> None:
    channel = WebhookChannel(f"http://127.0.0.1:{free_port()}/x", None)
    with pytest.raises(ChannelError) as failed:
        await channel.send(ALERT)
    assert not failed.value.permanent
    await channel.aclose()


async def test_text_no_utf8_encoder_takes_still_goes_out() -> None:
    """A lone surrogate that came in with a sensor's payload must not make an alert unsendable
    (the outbox would fall back through every channel and give it up)."""
    odd = dataclasses.replace(
        ALERT, reason="Hilfe \ud800", evidence={"device": "pendant", "action": "\udcff"}
    )
    assert Message.from_json(odd.to_json()) == odd  # and it survives the outbox row
    async with Receiver() as receiver:
        channel = WebhookChannel(receiver.url + "/hook", "s3cret")
        await channel.send(odd)
        await channel.aclose()
        [message] = receiver.messages
        assert message["incident"]["reason"] == "Hilfe \ud800"
