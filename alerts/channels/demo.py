"""The demo receiver: in demo mode every channel is this one (see `ChannelFactory`).

It keeps the last messages in memory for the showroom and the API, and never opens a socket.
Every message it holds says DEMO, whatever its sender forgot.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
from typing import Final

from alerts.channels import Message

log = logging.getLogger(__name__)

KEEP: Final = 500


@dataclasses.dataclass(frozen=True, slots=True)
class DemoDelivery:
    channel: str  # the real channel it stands in for
    message: Message


class DemoReceiver:
    def __init__(self) -> None:
        self.received: collections.deque[DemoDelivery] = collections.deque(maxlen=KEEP)

    def as_json(self) -> list[dict[str, object]]:
        return [
            {
                "channel": d.channel,
                "key": d.message.key,
                "kind": str(d.message.kind),
                "contact": d.message.contact,
                "incident": d.message.incident_id,
                "title": d.message.title,
                "body": d.message.body,
            }
            for d in self.received
        ]


class DemoChannel:
    def __init__(self, receiver: DemoReceiver, stands_for: str) -> None:
        self.receiver = receiver
        self.label = f"demo (for {stands_for})"
        self._stands_for = stands_for

    async def send(self, message: Message) -> None:
        if not message.demo:
            message = dataclasses.replace(message, demo=True)
        self.receiver.received.append(DemoDelivery(self._stands_for, message))
        log.info("DEMO message", extra={"to": message.contact, "title": message.title})
