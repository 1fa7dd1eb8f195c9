"""The channel contract: one `Message` in, `send()` returns or raises `ChannelError`.

A channel knows one transport (webhook, e-mail, MQTT, Apprise, SIA DC-09) and nothing about
retries, fallback or escalation: the outbox does those. `ChannelFactory` is the one place that
turns a contact's configured channel into a channel object, and in demo mode it returns the demo
receiver for every channel *by construction*: the real transports are not even imported.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import functools
import json
from collections.abc import Mapping
from typing import Any, Final, Literal, Protocol
from zoneinfo import ZoneInfo

from hub.config import ChannelConfig, HubConfig, Mode
from hub.store import to_json


class ChannelError(Exception):
    """A send failed. `permanent` means retrying the same channel cannot help (fall back now)."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


class MessageKind(enum.StrEnum):
    ALERT = "alert"  # first page of a contact for an incident
    REMINDER = "reminder"  # a later page: next step or the last step repeated
    ACKNOWLEDGED = "acknowledged"  # someone took it: the others may stand down
    RESOLVED = "resolved"
    HEARTBEAT = "heartbeat"  # the hub is alive (never through the outbox)


Language = Literal["de", "en"]


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Message:
    """Everything any channel needs to say; stored as JSON in the outbox before it is sent."""

    key: str  # the idempotency key: the same message is never two messages
    kind: MessageKind
    flat_id: str
    flat_name: str
    contact: str
    language: Language = "de"
    timezone: str = "Europe/Berlin"
    demo: bool = False
    created: float = 0.0
    incident_id: str | None = None
    incident_kind: str | None = None
    severity: str | None = None
    room: str | None = None
    reason: str = ""
    evidence: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    raised: float | None = None
    step: int | None = None  # 1-based escalation step
    ack_url: str | None = None
    video_url: str | None = None
    actor: str | None = None  # who acknowledged or resolved
    note: str | None = None

    def to_json(self) -> str:
        # Shallow on purpose: every field is a scalar but evidence, a flat mapping of scalars.
        data = {name: getattr(self, name) for name in _MESSAGE_FIELDS}
        data["evidence"] = dict(self.evidence)
        return to_json(data)

    @classmethod
    def from_json(cls, text: str) -> Message:
        data = json.loads(text)
        data["kind"] = MessageKind(data["kind"])
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    # -- words -------------------------------------------------------------------------------

    def local_time(self, wall: float | None = None) -> str:
        return _local_minute(
            int((wall if wall is not None else self.created) // 60), self.timezone, self.language
        )

    @property
    def what(self) -> str:
        names = KIND_NAMES[self.language]
        return names.get(self.incident_kind or "", self.incident_kind or "")

    @property
    def title(self) -> str:
        words = TEXTS[self.language]
        prefix = "[DEMO] " if self.demo else ""
        room = f" ({self.room})" if self.room else ""
        if self.kind is MessageKind.HEARTBEAT:
            return f"{prefix}{words['heartbeat']}: {self.flat_name}"
        return f"{prefix}{words[self.kind.value]}: {self.what}{room} - {self.flat_name}"

    @property
    def body(self) -> str:
        """Short plain text for messengers and SMS; e-mail has fuller templates of its own."""
        words = TEXTS[self.language]
        lines = [self.title]
        if self.demo:
            lines.append(words["demo"])
        if self.kind is MessageKind.HEARTBEAT:
            return "\n".join(lines)
        if self.reason:
            lines.append(self.reason)
        if self.raised is not None:
            lines.append(f"{words['time']}: {self.local_time(self.raised)}")
        if self.actor:
            lines.append(f"{words['by']}: {self.actor}")
        if self.note:
            lines.append(f"{words['note']}: {self.note}")
        if self.ack_url and self.kind in {MessageKind.ALERT, MessageKind.REMINDER}:
            lines.append(f"{words['ack']}: {self.ack_url}")
        if self.video_url and self.kind in {MessageKind.ALERT, MessageKind.REMINDER}:
            lines.append(f"{words['video']}: {self.video_url}")
        return "\n".join(lines)


@functools.lru_cache(maxsize=1024)
def _local_minute(minute: int, timezone: str, language: str) -> str:
    """A minute of the flat's local time, in the reader's format (many messages share one)."""
    when = dt.datetime.fromtimestamp(minute * 60, ZoneInfo(timezone))
    return when.strftime("%d.%m.%Y %H:%M") if language == "de" else when.strftime("%Y-%m-%d %H:%M")


TEXTS: Final[Mapping[str, Mapping[str, str]]] = {
    "de": {
        "alert": "Alarm",
        "reminder": "Erinnerung, noch niemand hat bestätigt",
        "acknowledged": "Übernommen",
        "resolved": "Erledigt",
        "heartbeat": "Hub aktiv",
        "demo": "DEMO - dies ist eine Vorführung, kein echter Alarm.",
        "time": "Zeit",
        "by": "Von",
        "note": "Notiz",
        "ack": "Bestätigen (ich kümmere mich)",
        "video": "Videoanruf",
        "room": "Raum",
    },
    "en": {
        "alert": "Alarm",
        "reminder": "Reminder, nobody has acknowledged yet",
        "acknowledged": "Taken care of",
        "resolved": "Resolved",
        "heartbeat": "Hub alive",
        "demo": "DEMO - this is a demonstration, not a real alarm.",
        "time": "Time",
        "by": "By",
        "note": "Note",
        "ack": "Acknowledge (I am on it)",
        "video": "Video call",
        "room": "Room",
    },
}

KIND_NAMES: Final[Mapping[str, Mapping[str, str]]] = {
    "de": {
        "fall": "Sturz",
        "help": "Hilferuf",
        "inactivity": "Keine Aktivität",
        "checkin_missed": "Tägliche Rückmeldung fehlt",
        "night_wandering": "Nächtliches Umhergehen",
        "out_of_bed": "Nicht ins Bett zurückgekehrt",
        "bathroom_stay": "Langer Aufenthalt im Bad",
        "appliance_on": "Gerät bleibt eingeschaltet",
        "water_leak": "Wasseraustritt",
        "smoke": "Rauch",
        "too_hot": "Zu warm",
        "too_cold": "Zu kalt",
        "degraded_safety": "Überwachung eingeschränkt",
    },
    "en": {
        "fall": "Fall",
        "help": "Call for help",
        "inactivity": "No activity",
        "checkin_missed": "Daily check-in missed",
        "night_wandering": "Wandering at night",
        "out_of_bed": "Not back in bed",
        "bathroom_stay": "Long stay in the bathroom",
        "appliance_on": "Appliance left on",
        "water_leak": "Water leak",
        "smoke": "Smoke",
        "too_hot": "Too hot",
        "too_cold": "Too cold",
        "degraded_safety": "Monitoring degraded",
    },
}


class Channel(Protocol):
    """One transport to one address."""

    label: str  # for the audit log and the API: "webhook https://…", "email a@b.org"

    async def send(self, message: Message) -> None:
        """Deliver `message` or raise ChannelError; the caller bounds the time it may take."""
        ...


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class SmtpSettings:
    host: str
    port: int = 587
    username: str | None = None
    password: str | None = None
    sender: str = "aal-hub@localhost"
    starttls: bool = True
    tls_context: Any = None  # an ssl.SSLContext; None: the system's trusted CAs
    timeout: float = 20.0


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ChannelSettings:
    """What the transports need beyond a contact's address."""

    smtp: SmtpSettings | None = None
    webhook_secret: str | None = None  # for webhooks configured as a bare URL
    timeout: float = 10.0
    mqtt_tls_context: Any = None


class ChannelFactory:
    """Turns configured channels into channel objects, once each (they may hold connections)."""

    def __init__(self, config: HubConfig, settings: ChannelSettings | None = None) -> None:
        self.config = config
        self.settings = settings or ChannelSettings()
        self.demo = config.flat.mode is Mode.DEMO
        self._cache: dict[int, Channel] = {}
        if self.demo:
            from alerts.channels.demo import DemoReceiver

            self.demo_receiver: DemoReceiver | None = DemoReceiver()
        else:
            self.demo_receiver = None

    def for_config(self, channel: ChannelConfig) -> Channel:
        cached = self._cache.get(id(channel))
        if cached is None:
            cached = self._cache[id(channel)] = self._build(channel)
        return cached

    async def aclose(self) -> None:
        """Close what channels hold open (HTTP sessions)."""
        for channel in self._cache.values():
            close = getattr(channel, "aclose", None)
            if close is not None:
                await close()

    def _build(self, channel: ChannelConfig) -> Channel:
        if self.demo_receiver is not None:
            # Safety rule 4: in demo mode nothing but the demo receiver exists.
            from alerts.channels.demo import DemoChannel

            return DemoChannel(self.demo_receiver, describe(channel))
        flat = self.config.flat
        if channel.webhook is not None:
            from alerts.channels.webhook import WebhookChannel

            if isinstance(channel.webhook, str):
                return WebhookChannel(channel.webhook, self.settings.webhook_secret, self.settings.timeout)
            return WebhookChannel(channel.webhook.url, channel.webhook.secret, self.settings.timeout)
        if channel.email is not None:
            from alerts.channels.email import EmailChannel

            return EmailChannel(channel.email, self.settings.smtp)
        if channel.mqtt is not None:
            from alerts.channels.mqtt import MqttChannel

            return MqttChannel(channel.mqtt, flat.id, tls_context=self.settings.mqtt_tls_context)
        if channel.apprise is not None:
            from alerts.channels.apprise import AppriseChannel

            return AppriseChannel(channel.apprise)
        if channel.sia_dc09 is not None:
            from alerts.channels.sia_dc09 import SiaDc09Channel

            return SiaDc09Channel(channel.sia_dc09, timeout=self.settings.timeout)
        raise ChannelError(f"a channel with nothing set: {channel!r}", permanent=True)


def describe(channel: ChannelConfig) -> str:
    """A short label without secrets, for the audit log and the API."""
    kind = channel.kind
    if channel.webhook is not None:
        url = channel.webhook if isinstance(channel.webhook, str) else channel.webhook.url
        return f"webhook {_strip_secret(url)}"
    if channel.email is not None:
        return f"email {channel.email}"
    if channel.mqtt is not None:
        return f"mqtt {_strip_secret(channel.mqtt)}"
    if channel.apprise is not None:
        return f"apprise {channel.apprise.split('://', 1)[0]}"
    if channel.sia_dc09 is not None:
        sia = channel.sia_dc09
        return f"sia_dc09 {sia.protocol}://{sia.host}:{sia.port} #{sia.account}"
    return kind


def _strip_secret(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    host = rest.rsplit("@", 1)[-1].split("?", 1)[0]
    return f"{scheme}://{host}"


__all__ = [
    "Channel",
    "ChannelError",
    "ChannelFactory",
    "ChannelSettings",
    "Message",
    "MessageKind",
    "SmtpSettings",
    "describe",
]


_MESSAGE_FIELDS: Final = tuple(f.name for f in dataclasses.fields(Message))
