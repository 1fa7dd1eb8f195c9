"""MQTT to a care-service broker (aiomqtt 2.5); the topic contract is in alerts/README.md.

A send connects, publishes at QoS 1 and returns once the broker has the message (PUBACK).
`serve_acks` is the one long-lived connection: it keeps the retained `status` topic (with a last
will for a dead hub) and turns messages on `aal/<flat>/incidents/<id>/ack` into acknowledgements.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import ssl
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Final
from urllib.parse import unquote, urlsplit

import aiomqtt

from alerts.channels import ChannelError, Message, MessageKind, _strip_secret
from alerts.channels.webhook import payload
from hub.store import to_json

log = logging.getLogger(__name__)

BACKOFF_START: Final = 1.0
BACKOFF_CAP: Final = 60.0


def incident_topic(flat: str, incident_id: str) -> str:
    return f"aal/{flat}/incidents/{incident_id}"


def ack_topic(flat: str, incident_id: str = "+") -> str:
    return f"aal/{flat}/incidents/{incident_id}/ack"


def status_topic(flat: str) -> str:
    return f"aal/{flat}/status"


def heartbeat_topic(flat: str) -> str:
    return f"aal/{flat}/heartbeat"


def broker_args(url: str, tls_context: ssl.SSLContext | None = None) -> dict[str, Any]:
    """`mqtt://user:pass@host:1883` or `mqtts://host:8883` as aiomqtt.Client arguments."""
    parts = urlsplit(url if "://" in url else f"mqtt://{url}")
    if parts.scheme not in {"mqtt", "mqtts"} or not parts.hostname:
        raise ChannelError(
            f"expected mqtt://host[:port] or mqtts://…, got {_strip_secret(url)}", permanent=True
        )
    tls = parts.scheme == "mqtts"
    args: dict[str, Any] = {
        "hostname": parts.hostname,
        "port": parts.port or (8883 if tls else 1883),
        "username": unquote(parts.username) if parts.username else None,
        "password": unquote(parts.password) if parts.password else None,
    }
    if tls:
        args["tls_context"] = tls_context or ssl.create_default_context()
    return args


class MqttChannel:
    def __init__(
        self, url: str, flat: str, *, tls_context: ssl.SSLContext | None = None, timeout: float = 10.0
    ) -> None:
        self.url = url
        self.flat = flat
        self.label = f"mqtt {_strip_secret(url)}"
        self.timeout = timeout
        self._tls = tls_context

    async def send(self, message: Message) -> None:
        args = broker_args(self.url, self._tls)
        if message.kind is MessageKind.HEARTBEAT or message.incident_id is None:
            topic, retain = heartbeat_topic(self.flat), False
        else:
            # Retained: a console that connects later still sees each incident's latest state.
            topic, retain = incident_topic(self.flat, message.incident_id), True
        body = to_json(payload(message))
        try:
            async with aiomqtt.Client(
                **args, identifier=f"aal-hub-{self.flat}-{uuid.uuid4().hex[:8]}", timeout=self.timeout
            ) as client:
                await client.publish(topic, body, qos=1, retain=retain, timeout=self.timeout)
        except aiomqtt.MqttError as err:
            raise ChannelError(f"{self.label}: {err}") from err


def parse_ack(topic: str, payload_bytes: bytes, flat: str) -> tuple[str, str] | None:
    """(incident id, who) from an ack message, or None for anything else."""
    prefix, suffix = f"aal/{flat}/incidents/", "/ack"
    if not (topic.startswith(prefix) and topic.endswith(suffix)):
        return None
    incident_id = topic[len(prefix) : -len(suffix)]
    if not incident_id or "/" in incident_id:
        return None
    by = "mqtt"
    try:
        data = json.loads(payload_bytes.decode() or "{}")
    except (UnicodeDecodeError, ValueError):
        data = None
    if isinstance(data, dict) and isinstance(data.get("by"), str) and data["by"].strip():
        by = data["by"].strip()[:100]
    elif isinstance(data, str) and data.strip():
        by = data.strip()[:100]
    return incident_id, by


async def serve_acks(
    url: str,
    flat: str,
    on_ack: Callable[[str, str], Awaitable[object]],
    *,
    tls_context: ssl.SSLContext | None = None,
    status: Callable[[], dict[str, Any]] | None = None,
) -> None:
    """Stay connected (reconnecting with capped, jittered backoff) until cancelled."""
    args = broker_args(url, tls_context)
    offline = json.dumps({"state": "offline"})
    will = aiomqtt.Will(status_topic(flat), offline, qos=1, retain=True)
    backoff = BACKOFF_START
    while True:
        try:
            # Fixed id + persistent session: acks sent while the hub restarts wait at the broker.
            async with aiomqtt.Client(
                **args, identifier=f"aal-hub-{flat}-acks", clean_session=False, will=will, keepalive=30
            ) as client:
                online = {"state": "online", **(status() if status else {})}
                await client.publish(status_topic(flat), json.dumps(online), qos=1, retain=True)
                await client.subscribe(ack_topic(flat), qos=1)
                backoff = BACKOFF_START
                try:
                    async for item in client.messages:
                        raw = item.payload if isinstance(item.payload, bytes) else str(item.payload).encode()
                        parsed = parse_ack(str(item.topic), raw, flat)
                        if parsed is None:
                            log.warning("ignored MQTT message", extra={"topic": str(item.topic)})
                            continue
                        await on_ack(*parsed)
                except asyncio.CancelledError:
                    # The last will fires only on a dead link: say "offline" ourselves.
                    await asyncio.shield(client.publish(status_topic(flat), offline, qos=1, retain=True))
                    raise
        except aiomqtt.MqttError as err:
            log.warning("care broker unreachable", extra={"broker": _strip_secret(url), "error": str(err)})
        await asyncio.sleep(backoff * random.uniform(0.8, 1.2))  # noqa: S311 (jitter)
        backoff = min(backoff * 2, BACKOFF_CAP)
