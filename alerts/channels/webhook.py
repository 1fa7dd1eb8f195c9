"""Webhook: one signed JSON POST per message (the payload is documented in alerts/README.md).

Signature: `X-AAL-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>`. A
receiver recomputes it, compares in constant time and refuses stale `t` (replays). The
`Idempotency-Key` header (also `key` in the body) is the same on every retry of one message.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Any, Final

import aiohttp

from alerts.channels import ChannelError, Message, MessageKind, _strip_secret
from hub.store import to_json

SCHEMA: Final = "aal-hub.message/1"
SIGNATURE_HEADER: Final = "X-AAL-Signature"
RETRYABLE_STATUS: Final = frozenset({408, 425, 429})


def iso(wall: float | None) -> str | None:
    """UTC, milliseconds, `Z` (as `datetime.isoformat` would, at a fraction of its cost)."""
    if wall is None:
        return None
    seconds = int(wall // 1)
    millis = min(999, int((wall - seconds) * 1000))  # truncated, as isoformat does
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


def payload(message: Message) -> dict[str, Any]:
    """The webhook body; the MQTT channel publishes the same document."""
    incident = None
    if message.kind is not MessageKind.HEARTBEAT and message.incident_id is not None:
        incident = {
            "id": message.incident_id,
            "kind": message.incident_kind,
            "severity": message.severity,
            "room": message.room,
            "reason": message.reason,
            "evidence": dict(message.evidence),
            "raised": iso(message.raised),
        }
    return {
        "schema": SCHEMA,
        "type": str(message.kind),
        "key": message.key,
        "demo": message.demo,
        "flat": {"id": message.flat_id, "name": message.flat_name},
        "contact": message.contact,
        "incident": incident,
        "step": message.step,
        "ack_url": message.ack_url,
        "video_url": message.video_url,
        "actor": message.actor,
        "note": message.note,
        "title": message.title,
        "text": message.body,
        "created": iso(message.created),
    }


def sign(secret: str, body: bytes, timestamp: int) -> str:
    digest = hmac.digest(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hex()
    return f"t={timestamp},v1={digest}"


def verify(secret: str, body: bytes, header: str, *, now: float, tolerance: float = 300.0) -> bool:
    """What a receiver does (and the tests): constant-time compare, refuse stale timestamps."""
    try:
        parts = dict(item.split("=", 1) for item in header.split(","))
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs(now - timestamp) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, body, timestamp), header)


class WebhookChannel:
    def __init__(self, url: str, secret: str | None, timeout: float = 10.0) -> None:
        self.url = url
        self.secret = secret
        self.timeout = timeout
        self.label = f"webhook {_strip_secret(url)}"
        self._session: aiohttp.ClientSession | None = None

    async def send(self, message: Message) -> None:
        body = to_json(payload(message)).encode()
        headers = {"Content-Type": "application/json", "Idempotency-Key": message.key}
        if self.secret:
            headers[SIGNATURE_HEADER] = sign(self.secret, body, int(time.time()))
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        try:
            async with self._session.post(self.url, data=body, headers=headers) as response:
                status = response.status
                await response.read()
        except TimeoutError as err:
            raise ChannelError(f"{self.label}: no answer within {self.timeout:g} s") from err
        except aiohttp.ClientError as err:
            raise ChannelError(f"{self.label}: {type(err).__name__}: {err}") from err
        if 200 <= status < 300:
            return
        retryable = status >= 500 or status in RETRYABLE_STATUS
        raise ChannelError(f"{self.label}: HTTP {status}", permanent=not retryable)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
