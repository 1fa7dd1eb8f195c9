"""Escalation: per incident, a persisted state machine that climbs until a human acknowledges.

    pre_alarm --(cancel window over)--> step 1 --(ack timeout)--> step 2 --> ... --> last step
        |                                 |                                            |  ^
        | resident: "Mir geht es gut"     +------ acknowledged / resolved -------------+  | repeat
        v                                                                              +--+
    cancelled

The database is the state; memory holds only timers. Every change runs as one command on one
worker, in one transaction together with its audit lines and outbox rows, and only after that
commit is anything sent, scheduled or announced. Commands queued at the same moment share one
commit. A kill -9 at any instant therefore leaves either the old state or the new one, and `run()`
picks up from there: it reloads the timers (on the same boot the monotonic deadline holds
exactly; after a reboot the wall-clock remainder, bounded by the step's length), starts the
incidents that were committed but not yet escalated, and the outbox resends what was pending.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import datetime as dt
import functools
import hashlib
import heapq
import hmac
import itertools
import json
import logging
import os
import secrets
import shutil
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, Literal, Protocol

import sqlite_utils

from alerts.channels import (
    KIND_NAMES,
    ChannelError,
    ChannelFactory,
    ChannelSettings,
    Language,
    Message,
    MessageKind,
    SmtpSettings,
    describe,
)
from alerts.outbox import Entry, Outbox, RetryPolicy
from hub.clock import Clock, Instant
from hub.config import ChannelConfig, ContactConfig, EscalationStep, HubConfig, Mode, policy_for
from hub.events import Event, EventKind, Incident, IncidentKind, Severity
from hub.store import Store, StoreError, audit, incident_from_row, to_json

log = logging.getLogger(__name__)

ACTOR: Final = "escalation"
DEFAULT_ACK_TIMEOUT: Final = 300.0
ACTIVE: Final = ("pre_alarm", "step")
MACHINE_CHANNELS: Final = frozenset({"webhook", "mqtt", "sia_dc09"})  # heartbeats go only there
BATCH: Final = 500

Outcome = Literal["acknowledged", "resolved", "already", "closed", "unknown"]


# ---------------------------------------------------------------------------------------------
# Settings the config file does not (yet) hold


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class AlertSettings:
    public_url: str | None = None  # base of one-tap links; default http://<web.host>:<web.port>
    ack_secret: str | None = None  # signs the links; default: made once, kept in the database
    ack_link_ttl: float = 7 * 86400.0
    heartbeat_every: float = 300.0  # 0: no heartbeat
    heartbeat_contacts: tuple[str, ...] | None = None  # default: the default policy's last step
    merge_same_kind: bool = True
    channels: ChannelSettings = dataclasses.field(default_factory=ChannelSettings)
    retry: RetryPolicy = dataclasses.field(default_factory=RetryPolicy)

    @classmethod
    def from_config(cls, config: HubConfig, env: Mapping[str, str] | None = None) -> AlertSettings:
        """The flat's `alerts:` section; AAL_* environment variables (systemd credentials) win."""
        alerts = config.alerts
        smtp = None
        if alerts.smtp is not None:
            smtp = SmtpSettings(
                host=alerts.smtp.host,
                port=alerts.smtp.port,
                username=alerts.smtp.username,
                password=alerts.smtp.password,
                sender=alerts.smtp.sender,
                starttls=alerts.smtp.starttls,
            )
        from_file = cls(
            public_url=alerts.public_url,
            ack_secret=alerts.ack_secret,
            ack_link_ttl=alerts.ack_link_ttl.seconds,
            heartbeat_every=alerts.heartbeat_every.seconds,
            merge_same_kind=alerts.merge_same_kind,
            channels=ChannelSettings(smtp=smtp, webhook_secret=alerts.webhook_secret),
        )
        from_env = cls.from_env(env)
        env = os.environ if env is None else env
        return dataclasses.replace(
            from_file,
            public_url=from_env.public_url or from_file.public_url,
            ack_secret=from_env.ack_secret or from_file.ack_secret,
            heartbeat_every=from_env.heartbeat_every
            if "AAL_HEARTBEAT_EVERY" in env
            else from_file.heartbeat_every,
            channels=ChannelSettings(
                smtp=from_env.channels.smtp or from_file.channels.smtp,
                webhook_secret=from_env.channels.webhook_secret or from_file.channels.webhook_secret,
            ),
        )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> AlertSettings:
        """AAL_PUBLIC_URL, AAL_ACK_SECRET, AAL_HEARTBEAT_EVERY, AAL_WEBHOOK_SECRET,
        AAL_SMTP_HOST/_PORT/_USER/_PASSWORD/_FROM/_STARTTLS (systemd credentials or Environment=)."""
        env = os.environ if env is None else env
        smtp = None
        if env.get("AAL_SMTP_HOST"):
            smtp = SmtpSettings(
                host=env["AAL_SMTP_HOST"],
                port=int(env.get("AAL_SMTP_PORT", "587")),
                username=env.get("AAL_SMTP_USER") or None,
                password=env.get("AAL_SMTP_PASSWORD") or None,
                sender=env.get("AAL_SMTP_FROM", "aal-hub@localhost"),
                starttls=env.get("AAL_SMTP_STARTTLS", "1") not in {"0", "false", "no"},
            )
        return cls(
            public_url=env.get("AAL_PUBLIC_URL") or None,
            ack_secret=env.get("AAL_ACK_SECRET") or None,
            heartbeat_every=float(env.get("AAL_HEARTBEAT_EVERY", "300")),
            channels=ChannelSettings(smtp=smtp, webhook_secret=env.get("AAL_WEBHOOK_SECRET") or None),
        )


# ---------------------------------------------------------------------------------------------
# The spoken prompt during the cancel window


class Announcer(Protocol):
    async def announce(self, text: str, language: Language) -> None: ...


class SilentAnnouncer:
    async def announce(self, text: str, language: Language) -> None:
        return None


class EspeakAnnouncer:
    """Speaks on the hub's speaker with espeak-ng, if it is installed; otherwise stays silent."""

    def __init__(self, binary: str | None = None, timeout: float = 30.0) -> None:
        self.binary = binary or shutil.which("espeak-ng")
        self.timeout = timeout

    async def announce(self, text: str, language: Language) -> None:
        if self.binary is None:
            return
        process = await asyncio.create_subprocess_exec(
            self.binary,
            "-v",
            language,
            "-s",
            "140",
            text,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        try:
            async with asyncio.timeout(self.timeout):
                await process.wait()
        except TimeoutError:
            process.kill()
            await process.wait()


PROMPTS: Final = {
    "de": "Achtung. {what}. Wenn alles in Ordnung ist, drücken Sie bitte: Mir geht es gut. "
    "Sonst wird in {seconds} Sekunden Hilfe gerufen.",
    "en": "Attention. {what}. If you are all right, please press: I am OK. "
    "Otherwise help will be called in {seconds} seconds.",
}


# ---------------------------------------------------------------------------------------------
# One-tap acknowledge links


class InvalidToken(Exception):
    """The link is forged, damaged or expired."""


class AckLinks:
    """`/ack/<token>`: HMAC-SHA256 over (incident, contact, expiry); one incident, one contact."""

    def __init__(self, secret: bytes, base_url: str, ttl: float) -> None:
        self._secret = secret
        self.base_url = base_url.rstrip("/")
        self.ttl = ttl

    def token(self, incident_id: str, contact: str, expires: float) -> str:
        body = _b64(json.dumps([incident_id, contact, int(expires)], separators=(",", ":")).encode())
        return f"{body}.{_b64(self._mac(body))}"

    def url(self, incident_id: str, contact: str, now_wall: float) -> str:
        return f"{self.base_url}/ack/{self.token(incident_id, contact, now_wall + self.ttl)}"

    def verify(self, token: str, now_wall: float) -> tuple[str, str]:
        body, _, mac = token.partition(".")
        try:
            good = hmac.compare_digest(_unb64(mac), self._mac(body))
            incident_id, contact, expires = json.loads(_unb64(body)) if good else (None, None, 0)
        except (ValueError, TypeError) as err:
            raise InvalidToken("damaged link") from err
        if not good or not isinstance(incident_id, str) or not isinstance(contact, str):
            raise InvalidToken("this link was not made by this hub")
        if not isinstance(expires, int) or now_wall > expires:
            raise InvalidToken("this link has expired")
        return incident_id, contact

    def _mac(self, body: str) -> bytes:
        return hmac.new(self._secret, b"aal-ack." + body.encode(), hashlib.sha256).digest()

    def room(self, incident_id: str) -> str:
        """The incident's video room name: keyed, so neither the incident id (in logs, in
        payloads) nor the time it was raised gives the room away."""
        return hmac.new(self._secret, b"aal-video." + incident_id.encode(), hashlib.sha256).hexdigest()[:24]


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


# ---------------------------------------------------------------------------------------------
# Commands and their effects


@dataclasses.dataclass(slots=True, kw_only=True)
class _Command:
    kind: Literal["incident", "ok", "ack", "resolve", "due"]
    incident: Incident | None = None
    incident_id: str | None = None
    actor: str = ""
    channel: str = ""
    note: str | None = None
    token: float | None = None
    future: asyncio.Future[Outcome] | None = None
    # The incident was inserted, open, earlier in this very transaction (the desk's commit).
    fresh: bool = False


@dataclasses.dataclass(slots=True)
class _Effect:
    """What to do on the loop once the transaction has committed."""

    entries: list[Entry] = dataclasses.field(default_factory=list)
    forget: list[int] = dataclasses.field(default_factory=list)
    timers: dict[str, tuple[float, float] | None] = dataclasses.field(default_factory=dict)
    closed: list[str] = dataclasses.field(default_factory=list)
    acknowledged: list[str] = dataclasses.field(default_factory=list)
    announce: list[tuple[str, Language]] = dataclasses.field(default_factory=list)
    result: Outcome = "unknown"


@dataclasses.dataclass(frozen=True, slots=True)
class _Row:
    incident_id: str
    kind: str
    severity: int
    room: str | None
    reason: str
    evidence: dict[str, Any]
    wall: float
    mono: float
    state: str


class HubLike(Protocol):
    """What `attach` needs of hub.daemon.Hub (alerts/ must not import the composition root)."""

    config: HubConfig
    clock: Clock
    incident_writers: list[Callable[[sqlite_utils.Database, Incident, Instant], Callable[[], None]]]

    @property
    def store(self) -> Store: ...

    @property
    def bus(self) -> Any: ...

    @property
    def state(self) -> Any: ...


# ---------------------------------------------------------------------------------------------
# The engine


class EscalationEngine:
    def __init__(
        self,
        config: HubConfig,
        clock: Clock,
        store: Store | Callable[[], Store],
        *,
        settings: AlertSettings | None = None,
        announcer: Announcer | None = None,
        channels: ChannelFactory | None = None,
        on_closed: Callable[[str], None] | None = None,
        on_acknowledged: Callable[[str], None] | None = None,
    ) -> None:
        self.config = config
        self.clock = clock
        self._store: Callable[[], Store] = store if callable(store) else (lambda: store)
        self.settings = settings or AlertSettings()
        self.announcer: Announcer = announcer or EspeakAnnouncer()
        self.channels = channels or ChannelFactory(config, self.settings.channels)
        self.outbox = Outbox(config, clock, self._store, self.channels, retry=self.settings.retry)
        self.on_closed = on_closed
        self.on_acknowledged = on_acknowledged
        self.demo = config.flat.mode is Mode.DEMO
        self.links: AckLinks | None = None
        self.ready = asyncio.Event()
        self.heartbeat: dict[str, Any] = {"last": None, "ok": [], "failed": {}}
        self._contacts: dict[str, ContactConfig] = {c.id: c for c in config.contacts}
        self._queue: asyncio.Queue[_Command] = asyncio.Queue()
        self._timers: dict[str, float] = {}  # incident -> token (its due_mono in the database)
        self._heap: list[tuple[float, int, str, float]] = []
        self._order = itertools.count()
        self._wake = asyncio.Event()
        self._announcements: asyncio.Queue[tuple[str, Language]] = asyncio.Queue()
        self._running = False

    @classmethod
    def attach(cls, hub: HubLike, **kwargs: Any) -> EscalationEngine:
        """Build the engine for a hub and hook it in; the caller adds `engine.run` as a service."""
        engine = cls(
            hub.config,
            hub.clock,
            lambda: hub.store,
            on_closed=hub.state.incident_closed,
            on_acknowledged=hub.state.incident_acknowledged,
            **kwargs,
        )
        hub.incident_writers.append(engine.start_within)
        hub.bus.subscribe("escalation", engine.on_event)
        return engine

    # -- the public API --------------------------------------------------------------------------

    async def on_incident(self, incident: Incident) -> None:
        """Incident hook: the incident is committed; its escalation commits on the worker."""
        self._queue.put_nowait(_Command(kind="incident", incident=incident))

    def start_within(self, db: sqlite_utils.Database, incident: Incident, now: Instant) -> Callable[[], None]:
        """Start an incident's escalation inside the transaction that commits the incident.

        One commit for both, on the hub's desk; returns what to do once it is committed. Before
        the engine runs (links not made yet), the incident takes the queue like any command.
        """
        command = _Command(kind="incident", incident=incident)
        if self.links is None or not self._running:
            return functools.partial(self._queue.put_nowait, command)
        effect = self._apply(db, dataclasses.replace(command, fresh=True), now)
        if isinstance(effect, BaseException):
            # Undone by its savepoint: the worker tries again in a transaction of its own.
            return functools.partial(self._queue.put_nowait, command)
        return functools.partial(self._after, command, effect)

    def on_event(self, event: Event) -> None:
        """Bus handler: a resident's "I'm OK" cancels pre-alarms; ACK events acknowledge."""
        if event.kind is EventKind.RESIDENT_OK and event.value is not False:
            self._queue.put_nowait(_Command(kind="ok", actor=f"resident ({event.source}: {event.device})"))
        elif event.kind is EventKind.ACK and isinstance(event.value, str) and event.value:
            self._queue.put_nowait(
                _Command(kind="ack", incident_id=event.value, actor=event.device, channel=event.source)
            )

    async def acknowledge(self, incident_id: str, actor: str, channel: str) -> Outcome:
        return await self._ask(_Command(kind="ack", incident_id=incident_id, actor=actor, channel=channel))

    async def resolve(self, incident_id: str, actor: str, note: str) -> Outcome:
        return await self._ask(_Command(kind="resolve", incident_id=incident_id, actor=actor, note=note))

    async def _ask(self, command: _Command) -> Outcome:
        command.future = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(command)
        return await command.future

    async def incidents(self, *, open_only: bool = True, limit: int = 200) -> list[dict[str, Any]]:
        def query(db: sqlite_utils.Database) -> list[dict[str, Any]]:
            cursor = db.execute(
                "SELECT i.id, i.kind, i.severity, i.room, i.reason, i.evidence, i.wall, i.state, i.closed,"
                " i.note, e.state, e.step, e.due_wall, e.data FROM incidents i"
                " LEFT JOIN escalation e ON e.incident_id = i.id"
                " WHERE ? = 0 OR i.state IN ('open', 'acknowledged') ORDER BY i.wall DESC LIMIT ?",
                [int(open_only), limit],
            )
            out = []
            for row in cursor.fetchall():
                data = json.loads(row[13]) if row[13] else {}
                out.append(
                    {
                        "id": row[0],
                        "kind": row[1],
                        "severity": Severity(row[2]).name.lower(),
                        "room": row[3],
                        "reason": row[4],
                        "evidence": json.loads(row[5] or "{}"),
                        "raised": row[6],
                        "state": row[7],
                        "closed": row[8],
                        "note": row[9],
                        "escalation": None
                        if row[10] is None
                        else {
                            "state": row[10],
                            "step": row[11] + 1 if row[10] == "step" else None,
                            "next_at": row[12],
                            "notified": data.get("paged", []),
                            "acknowledged_by": data.get("acked_by"),
                            "merged_into": data.get("into"),
                        },
                    }
                )
            return out

        return await self._store().call(query)

    async def history(self, incident_id: str) -> list[dict[str, Any]]:
        def query(db: sqlite_utils.Database) -> list[dict[str, Any]]:
            rows = db.execute(
                "SELECT wall, actor, action, detail FROM audit WHERE incident_id = ? ORDER BY id",
                [incident_id],
            ).fetchall()
            return [{"wall": r[0], "actor": r[1], "action": r[2], "detail": json.loads(r[3])} for r in rows]

        return await self._store().call(query)

    def verify(self, token: str) -> tuple[str, str]:
        if self.links is None:
            raise InvalidToken("the hub is starting; try again in a moment")
        return self.links.verify(token, self.clock.now().wall)

    def contact_name(self, contact_id: str) -> str:
        contact = self._contacts.get(contact_id)
        return (contact.name or contact.id) if contact else contact_id

    # -- the service -----------------------------------------------------------------------------

    async def run(self) -> None:
        await self._init()
        self._running = True
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._worker(), name="escalation-worker")
                group.create_task(self._timer_loop(), name="escalation-timers")
                group.create_task(self.outbox.run(), name="outbox")
                group.create_task(self._announce_loop(), name="announcer")
                if self.settings.heartbeat_every > 0:
                    group.create_task(self._heartbeat_loop(), name="heartbeat")
                if not self.demo:  # demo mode never opens a connection to a real broker
                    for url in self._ack_brokers():
                        group.create_task(self._serve_mqtt_acks(url), name=f"mqtt-acks {url}")
                self.ready.set()
        finally:
            self._running = False
            self.ready.clear()
            await self.channels.aclose()

    async def _init(self) -> None:
        secret = await self._store().call(self._secret)
        base = self.settings.public_url or f"http://{self.config.web.host}:{self.config.web.port}"
        self.links = AckLinks(secret, base, self.settings.ack_link_ttl)
        now = self.clock.now()
        active, unstarted = await self._store().call(_load)
        self._heap.clear()
        self._timers.clear()
        for incident_id, due_mono, due_wall, data in active:
            if due_mono is None:
                continue
            when = due_mono
            set_mono = data.get("set_mono")
            if set_mono is not None and now.mono < set_mono:
                # Monotonic time went back: a reboot. Trust the wall clock, within the step's length.
                duration = float(data.get("duration", 0.0))
                when = now.mono + min(max(due_wall - now.wall, 0.0), duration)
            self._set_timer(incident_id, when, due_mono)
        for incident in unstarted:
            self._queue.put_nowait(_Command(kind="incident", incident=incident))
        if active or unstarted:
            log.info("escalation resumes", extra={"active": len(active), "unstarted": len(unstarted)})

    async def resync(self) -> None:
        """Bring timers and the outbox back in line with the database after a fault between a
        commit and its in-memory follow-up: nothing committed may stay unescalated or unsent."""
        active, unstarted = await self._store().call(_load, durable=False)
        for incident_id, due_mono, _due_wall, _data in active:
            if due_mono is not None and incident_id not in self._timers:
                self._set_timer(incident_id, due_mono, due_mono)
        for incident in unstarted:
            self._queue.put_nowait(_Command(kind="incident", incident=incident))
        await self.outbox.resync()

    def _secret(self, db: sqlite_utils.Database) -> bytes:
        if self.settings.ack_secret:
            return self.settings.ack_secret.encode()
        row = db.execute("SELECT value FROM alert_secrets WHERE name = 'ack'").fetchone()
        if row is not None:
            return bytes.fromhex(row[0])
        value = secrets.token_bytes(32)
        db.execute(
            "INSERT INTO alert_secrets (name, value, created) VALUES ('ack', ?, ?)",
            [value.hex(), self.clock.now().wall],
        )
        return value

    # -- timers ----------------------------------------------------------------------------------

    def _set_timer(self, incident_id: str, when: float, token: float) -> None:
        self._timers[incident_id] = token
        heapq.heappush(self._heap, (when, next(self._order), incident_id, token))
        self._wake.set()

    async def _timer_loop(self) -> None:
        while True:
            now = self.clock.now().mono
            while self._heap and self._heap[0][0] <= now:
                _, _, incident_id, token = heapq.heappop(self._heap)
                if self._timers.get(incident_id) != token:
                    continue  # replaced or cleared since
                del self._timers[incident_id]
                self._queue.put_nowait(_Command(kind="due", incident_id=incident_id, token=token))
            self._wake.clear()
            await _sleep(self.clock, self._wake, self._heap[0][0] if self._heap else None)

    # -- the worker: one transaction per batch of commands ----------------------------------------

    async def _worker(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < BATCH and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            now = self.clock.now()
            try:
                effects = await self._store().call(functools.partial(self._apply_all, batch, now))
            except StoreError as err:
                log.error("escalation could not commit; retrying", extra={"error": str(err)})  # noqa: TRY400
                retry = []
                for command in batch:
                    if command.future is not None:
                        if not command.future.done():
                            command.future.set_exception(err)
                    else:
                        retry.append(command)  # never drop an incident, a timer or a resident's OK
                await asyncio.sleep(1.0)
                for command in retry:
                    self._queue.put_nowait(command)
                continue
            for command, effect in zip(batch, effects, strict=True):
                self._after(command, effect)

    def _apply_all(
        self, batch: list[_Command], now: Instant, db: sqlite_utils.Database
    ) -> list[_Effect | BaseException]:
        return [self._apply(db, command, now) for command in batch]

    def _after(self, command: _Command, effect: _Effect | BaseException) -> None:
        if isinstance(effect, BaseException):
            if command.future is not None and not command.future.done():
                command.future.set_exception(effect)
            return
        if effect.forget:
            self.outbox.forget(effect.forget)
        if effect.entries:
            self.outbox.schedule(effect.entries)
        for incident_id, timer in effect.timers.items():
            if timer is None:
                self._timers.pop(incident_id, None)
            else:
                self._set_timer(incident_id, *timer)
        for incident_id in effect.closed:
            if self.on_closed is not None:
                self.on_closed(incident_id)
        for incident_id in effect.acknowledged:
            if self.on_acknowledged is not None:
                self.on_acknowledged(incident_id)
        for item in effect.announce:
            self._announcements.put_nowait(item)
        if command.future is not None and not command.future.done():
            command.future.set_result(effect.result)

    def _apply(self, db: sqlite_utils.Database, command: _Command, now: Instant) -> _Effect | BaseException:
        """One command under its own savepoint: a failing one does not undo the others."""
        db.execute("SAVEPOINT command")
        try:
            effect = _Effect()
            if command.kind == "incident" and command.incident is not None:
                self._start(db, command.incident, now, effect, fresh=command.fresh)
            elif command.kind == "due" and command.incident_id is not None and command.token is not None:
                self._due(db, command.incident_id, command.token, now, effect)
            elif command.kind == "ok":
                self._resident_ok(db, command.actor, now, effect)
            elif command.kind == "ack" and command.incident_id is not None:
                self._acknowledge(db, command.incident_id, command.actor, command.channel, now, effect)
            elif command.kind == "resolve" and command.incident_id is not None:
                self._resolve(db, command.incident_id, command.actor, command.note or "", now, effect)
        except Exception as err:
            if not db.conn.in_transaction:
                raise  # the whole transaction is gone (disk full): the worker retries the batch
            db.execute("ROLLBACK TO command")
            db.execute("RELEASE command")
            log.exception("escalation command failed", extra={"command": command.kind})
            return err
        db.execute("RELEASE command")
        return effect

    # -- transitions (on the store's writer thread, inside the transaction) ---------------------

    def _start(
        self, db: sqlite_utils.Database, incident: Incident, now: Instant, effect: _Effect, *, fresh: bool
    ) -> None:
        if not fresh:
            if db.execute("SELECT 1 FROM escalation WHERE incident_id = ?", [incident.id]).fetchone():
                return  # already started (a restart re-offers committed incidents)
            state = db.execute("SELECT state FROM incidents WHERE id = ?", [incident.id]).fetchone()
            if state is None or state[0] != "open":
                return
        if incident.severity < Severity.WARNING:
            self._write(db, incident.id, "none", 0, None, {}, now)
            audit(db, now.wall, incident.id, ACTOR, "not_escalated", {"why": "severity info"})
            return
        # A second radio or sensor going down is news of its own, not a repeat of the first.
        if self.settings.merge_same_kind and incident.kind is not IncidentKind.DEGRADED_SAFETY:
            into = db.execute(
                "SELECT e.incident_id FROM escalation e JOIN incidents i ON i.id = e.incident_id"
                " WHERE e.state IN ('pre_alarm', 'step') AND i.kind = ? AND i.id != ?"
                " ORDER BY i.wall LIMIT 1",
                [str(incident.kind), incident.id],
            ).fetchone()
            if into is not None:
                self._write(db, incident.id, "merged", 0, None, {"into": into[0]}, now)
                audit(db, now.wall, incident.id, ACTOR, "merged", {"into": into[0]})
                audit(
                    db,
                    now.wall,
                    into[0],
                    ACTOR,
                    "merged_in",
                    {"incident": incident.id, "reason": incident.reason},
                )
                return
        policy = policy_for(self.config, incident.kind)
        window = policy.cancel_window.seconds if policy.cancel_window is not None else 0.0
        row = _row_of(incident, "open")
        if window > 0:
            due_mono, due_wall = incident.mono + window, incident.wall + window
            if incident.mono > now.mono:
                # Raised before a reboot: its monotonic time belongs to the old boot. The wall
                # clock's remainder, never more than the window, says how much is left.
                due_mono = now.mono + min(window, max(0.0, due_wall - now.wall))
            data = {"set_mono": now.mono, "duration": window, "round": 0, "paged": []}
            self._write(db, incident.id, "pre_alarm", 0, (due_mono, due_wall), data, now)
            audit(db, now.wall, incident.id, ACTOR, "pre_alarm", {"cancel_window": window})
            effect.timers[incident.id] = (due_mono, due_mono)
            language = self.config.flat.language
            seconds = max(0, round(due_mono - now.mono))
            what = KIND_NAMES[language].get(str(incident.kind), str(incident.kind))
            effect.announce.append((PROMPTS[language].format(what=what, seconds=seconds), language))
            return
        self._enter_step(db, row, 0, 0, [], now, effect)

    def _due(
        self, db: sqlite_utils.Database, incident_id: str, token: float, now: Instant, effect: _Effect
    ) -> None:
        current = db.execute(
            "SELECT state, step, due_mono, data FROM escalation WHERE incident_id = ?", [incident_id]
        ).fetchone()
        if (
            current is None
            or current[0] not in ACTIVE
            or current[2] is None
            or abs(current[2] - token) > 1e-6
        ):
            return  # acknowledged, cancelled or rescheduled meanwhile
        row = _incident_row(db, incident_id)
        if row is None:
            return
        data = json.loads(current[3])
        if current[0] == "pre_alarm":
            audit(db, now.wall, incident_id, ACTOR, "cancel_window_over", {})
            self._enter_step(db, row, 0, 0, [], now, effect)
            return
        self._enter_step(
            db,
            row,
            int(current[1]) + 1,
            int(data.get("round", 0)) + 1,
            data.get("paged", []),
            now,
            effect,
            prior=int(current[1]),
        )

    def _enter_step(
        self,
        db: sqlite_utils.Database,
        row: _Row,
        index: int,
        round_: int,
        paged: list[str],
        now: Instant,
        effect: _Effect,
        *,
        prior: int = -1,
    ) -> None:
        steps = self._steps(IncidentKind(row.kind))
        if not steps:
            self._write(db, row.incident_id, "step", 0, None, {"round": round_, "paged": paged}, now)
            audit(db, now.wall, row.incident_id, ACTOR, "no_contacts", {"why": "no contacts configured"})
            log.error("incident with nobody to tell", extra={"incident": row.incident_id})
            return
        last = len(steps) - 1
        index = min(index, last)
        while True:
            step = steps[index]
            targets = [c for c in step.notify if self._available(c, now.wall)]
            if targets or index == last:
                break
            skipped = {"step": index + 1, "why": "nobody available now", "contacts": list(step.notify)}
            audit(db, now.wall, row.incident_id, ACTOR, "step_skipped", skipped)
            index += 1
        if not targets:
            # The last step with everybody outside their hours: better a call at night than none.
            targets = list(step.notify)
            audit(db, now.wall, row.incident_id, ACTOR, "outside_availability", {"contacts": targets})
        repeat = index == last and prior == last
        for contact in targets:
            kind = MessageKind.REMINDER if contact in paged else MessageKind.ALERT
            entry = Outbox.add(db, self._message(row, contact, kind, index + 1, round_, now), now)
            if entry is not None:
                effect.entries.append(entry)
        paged = sorted({*paged, *targets})
        if index == last:
            wait = _seconds(step.repeat_every) or _seconds(step.ack_timeout) or DEFAULT_ACK_TIMEOUT
        else:
            wait = _seconds(step.ack_timeout) or DEFAULT_ACK_TIMEOUT
        due = (now.mono + wait, now.wall + wait)
        data = {"set_mono": now.mono, "duration": wait, "round": round_, "paged": paged}
        self._write(db, row.incident_id, "step", index, due, data, now)
        audit(db, now.wall, row.incident_id, ACTOR, "repeat" if repeat else "step",
              {"step": index + 1, "notified": targets, "round": round_, "next_in": wait})  # fmt: skip
        effect.timers[row.incident_id] = (due[0], due[0])

    def _resident_ok(self, db: sqlite_utils.Database, actor: str, now: Instant, effect: _Effect) -> None:
        rows = db.execute(
            "SELECT e.incident_id, e.state FROM escalation e JOIN incidents i ON i.id = e.incident_id"
            " WHERE e.state IN ('pre_alarm', 'step') AND i.state = 'open'"
        ).fetchall()
        cancelled = [r[0] for r in rows if r[1] == "pre_alarm"]
        for incident_id in cancelled:
            for target in [incident_id, *self._merged(db, incident_id)]:
                db.execute(
                    "UPDATE incidents SET state = 'cancelled', closed = ?, updated = ?, note = ?"
                    " WHERE id = ?",
                    [now.wall, now.wall, "Mir geht es gut / I am OK", target],
                )
                self._close_row(db, target, "cancelled", {"by": actor}, now)
                audit(db, now.wall, target, actor, "cancelled", {"why": "resident is OK"})
                effect.timers[target] = None
                effect.closed.append(target)
        for incident_id, state in rows:
            if state == "step":
                # Too late to cancel, but the caregivers on their way should see it.
                audit(
                    db,
                    now.wall,
                    incident_id,
                    actor,
                    "resident_ok",
                    {"note": "pressed after the alarm went out"},
                )

    def _acknowledge(
        self,
        db: sqlite_utils.Database,
        incident_id: str,
        actor: str,
        channel: str,
        now: Instant,
        effect: _Effect,
    ) -> None:
        row = _incident_row(db, incident_id)
        if row is None:
            effect.result = "unknown"
            return
        if row.state in {"resolved", "cancelled"}:
            effect.result = "closed"
            return
        if row.state == "acknowledged":
            audit(db, now.wall, incident_id, actor, "ack_repeated", {"channel": channel})
            effect.result = "already"
            return
        paged = self._paged(db, incident_id)
        for target in [incident_id, *self._merged(db, incident_id)]:
            db.execute(
                "UPDATE incidents SET state = 'acknowledged', updated = ? WHERE id = ? AND state = 'open'",
                [now.wall, target],
            )
            self._close_row(db, target, "acknowledged", {"acked_by": actor, "channel": channel}, now)
            audit(db, now.wall, target, actor, "acknowledged", {"channel": channel})
            effect.timers[target] = None
            effect.acknowledged.append(target)
        effect.forget += Outbox.supersede(db, [incident_id], now, f"acknowledged by {actor}")
        self._tell(db, row, paged, actor, MessageKind.ACKNOWLEDGED, now, effect, note=None)
        effect.result = "acknowledged"

    def _resolve(
        self,
        db: sqlite_utils.Database,
        incident_id: str,
        actor: str,
        note: str,
        now: Instant,
        effect: _Effect,
    ) -> None:
        row = _incident_row(db, incident_id)
        if row is None:
            effect.result = "unknown"
            return
        if row.state in {"resolved", "cancelled"}:
            effect.result = "closed"
            return
        paged = self._paged(db, incident_id)
        for target in [incident_id, *self._merged(db, incident_id)]:
            db.execute(
                "UPDATE incidents SET state = 'resolved', closed = ?, updated = ?, note = ? WHERE id = ?",
                [now.wall, now.wall, note, target],
            )
            self._close_row(db, target, "resolved", {"resolved_by": actor}, now)
            audit(db, now.wall, target, actor, "resolved", {"note": note})
            effect.timers[target] = None
            effect.closed.append(target)
        effect.forget += Outbox.supersede(db, [incident_id], now, f"resolved by {actor}")
        self._tell(db, row, paged, actor, MessageKind.RESOLVED, now, effect, note=note)
        effect.result = "resolved"

    # -- helpers on the writer thread ------------------------------------------------------------

    def _write(
        self,
        db: sqlite_utils.Database,
        incident_id: str,
        state: str,
        step: int,
        due: tuple[float, float] | None,
        data: Mapping[str, Any],
        now: Instant,
    ) -> None:
        db.execute(
            "INSERT INTO escalation (incident_id, state, step, due_wall, due_mono, data, updated)"
            " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (incident_id) DO UPDATE SET state = excluded.state,"
            " step = excluded.step, due_wall = excluded.due_wall, due_mono = excluded.due_mono,"
            " data = excluded.data, updated = excluded.updated",
            [
                incident_id,
                state,
                step,
                due[1] if due else None,
                due[0] if due else None,
                to_json(dict(data)),
                now.wall,
            ],
        )

    def _close_row(
        self, db: sqlite_utils.Database, incident_id: str, state: str, extra: Mapping[str, Any], now: Instant
    ) -> None:
        """A final (or waiting-for-a-human) state: no timer; the step and who was paged stay."""
        old = db.execute("SELECT data FROM escalation WHERE incident_id = ?", [incident_id]).fetchone()
        data = {**(json.loads(old[0]) if old else {}), **extra}
        if old is None:
            self._write(db, incident_id, state, 0, None, data, now)
            return
        db.execute(
            "UPDATE escalation SET state = ?, due_wall = NULL, due_mono = NULL, data = ?, updated = ?"
            " WHERE incident_id = ?",
            [state, to_json(data), now.wall, incident_id],
        )

    def _paged(self, db: sqlite_utils.Database, incident_id: str) -> list[str]:
        found = db.execute("SELECT data FROM escalation WHERE incident_id = ?", [incident_id]).fetchone()
        return list(json.loads(found[0]).get("paged", [])) if found else []

    def _merged(self, db: sqlite_utils.Database, incident_id: str) -> list[str]:
        rows = db.execute(
            "SELECT incident_id FROM escalation WHERE state = 'merged' AND json_extract(data, '$.into') = ?",
            [incident_id],
        ).fetchall()
        return [r[0] for r in rows]

    def _tell(
        self,
        db: sqlite_utils.Database,
        row: _Row,
        paged: Sequence[str],
        actor: str,
        kind: MessageKind,
        now: Instant,
        effect: _Effect,
        *,
        note: str | None,
    ) -> None:
        """Those who were paged learn that someone took it (or that it is over)."""
        for contact in paged:
            if contact == actor or contact not in self._contacts:
                continue
            message = self._message(
                row, contact, kind, None, None, now, actor=self.contact_name(actor), note=note
            )
            entry = Outbox.add(db, message, now)
            if entry is not None:
                effect.entries.append(entry)

    def _message(
        self,
        row: _Row,
        contact_id: str,
        kind: MessageKind,
        step: int | None,
        round_: int | None,
        now: Instant,
        *,
        actor: str | None = None,
        note: str | None = None,
    ) -> Message:
        contact = self._contacts.get(contact_id)
        language: Language = (contact.language if contact else None) or self.config.flat.language
        paging = kind in {MessageKind.ALERT, MessageKind.REMINDER}
        key = (
            f"{row.incident_id}/{round_}/{contact_id}" if paging else f"{row.incident_id}/{kind}/{contact_id}"
        )
        return Message(
            key=key,
            kind=kind,
            flat_id=self.config.flat.id,
            flat_name=self.config.flat.name,
            contact=contact_id,
            language=language,
            timezone=self.config.flat.timezone,
            demo=self.demo,
            created=now.wall,
            incident_id=row.incident_id,
            incident_kind=row.kind,
            severity=Severity(row.severity).name.lower(),
            room=row.room,
            reason=row.reason,
            evidence=row.evidence,
            raised=row.wall,
            step=step,
            ack_url=self.links.url(row.incident_id, contact_id, now.wall) if self.links and paging else None,
            video_url=self.video_url(row.incident_id) if paging else None,
            actor=actor,
            note=note,
        )

    def video_url(self, incident_id: str) -> str | None:
        video = self.config.telemedicine.video
        if video is None:
            return None
        if video.jitsi:
            # Before the engine runs there is no key yet; the id's random tail is then the name.
            room = self.links.room(incident_id) if self.links is not None else incident_id[-20:]
            return f"{video.jitsi.rstrip('/')}/aal-{self.config.flat.id}-{room}"
        return video.url

    def _steps(self, kind: IncidentKind) -> tuple[EscalationStep, ...]:
        steps = policy_for(self.config, kind).steps
        if steps:
            return steps
        # No policy at all: everybody at once, rather than nobody.
        everyone = tuple(c.id for c in self.config.contacts)
        return (EscalationStep(notify=everyone),) if everyone else ()

    def _available(self, contact_id: str, wall: float) -> bool:
        contact = self._contacts.get(contact_id)
        if contact is None:
            return False
        if contact.available is None:
            return True
        local = dt.datetime.fromtimestamp(wall, self.config.tz)
        minute = local.hour * 60 + local.minute
        start, end = contact.available[0].minute, contact.available[1].minute
        return start <= minute < end if start <= end else (minute >= start or minute < end)

    # -- side services ---------------------------------------------------------------------------

    async def _announce_loop(self) -> None:
        while True:
            text, language = await self._announcements.get()
            try:
                await self.announcer.announce(text, language)
            except (OSError, ValueError) as err:
                log.warning("announcement failed", extra={"error": str(err)})

    def heartbeat_targets(self) -> list[tuple[str, ChannelConfig]]:
        contacts = self.settings.heartbeat_contacts
        if contacts is None:
            steps = self.config.escalation.get("default")
            contacts = steps.steps[-1].notify if steps and steps.steps else ()
        return [
            (c, channel)
            for c in contacts
            if c in self._contacts
            for channel in self._contacts[c].channels
            if channel.kind in MACHINE_CHANNELS
        ]

    async def _heartbeat_loop(self) -> None:
        targets = self.heartbeat_targets()
        if not targets:
            return
        while True:
            now = self.clock.now()
            message = Message(
                key=f"heartbeat/{self.config.flat.id}/{int(now.wall)}",
                kind=MessageKind.HEARTBEAT,
                flat_id=self.config.flat.id,
                flat_name=self.config.flat.name,
                contact="",
                demo=self.demo,
                created=now.wall,
                language=self.config.flat.language,
            )
            results = await asyncio.gather(
                *(self._beat(dataclasses.replace(message, contact=c), ch) for c, ch in targets)
            )
            self.heartbeat = {
                "last": now.wall,
                "ok": [label for label, error in results if error is None],
                "failed": {label: error for label, error in results if error is not None},
            }
            await self.clock.sleep_until(now.mono + self.settings.heartbeat_every)

    async def _beat(self, message: Message, channel_config: ChannelConfig) -> tuple[str, str | None]:
        # Straight to the channel, not through the outbox: a late heartbeat is worth nothing.
        label = describe(channel_config)
        try:
            channel = self.channels.for_config(channel_config)
            label = channel.label
            async with asyncio.timeout(self.settings.channels.timeout):
                await channel.send(message)
        except (ChannelError, TimeoutError) as err:
            log.warning("heartbeat failed", extra={"channel": label, "error": str(err)})
            return label, str(err) or type(err).__name__
        except Exception as err:
            log.exception("heartbeat channel failed unexpectedly", extra={"channel": label})
            return label, f"{type(err).__name__}: {err}"
        return label, None

    def _ack_brokers(self) -> list[str]:
        return sorted({ch.mqtt for c in self.config.contacts for ch in c.channels if ch.mqtt is not None})

    async def _serve_mqtt_acks(self, url: str) -> None:
        from alerts.channels.mqtt import serve_acks

        async def on_ack(incident_id: str, by: str) -> None:
            outcome = await self.acknowledge(incident_id, by, "mqtt")
            log.info("MQTT acknowledgement", extra={"incident": incident_id, "outcome": outcome})

        await serve_acks(
            url, self.config.flat.id, on_ack, tls_context=self.settings.channels.mqtt_tls_context
        )

    def status(self) -> dict[str, Any]:
        return {
            "running": self._running,
            "timers": len(self._timers),
            "queued": self._queue.qsize(),
            "outbox": self.outbox.stats(),
            "heartbeat": self.heartbeat,
        }


async def _sleep(clock: Clock, wake: asyncio.Event, until: float | None) -> None:
    """Until `until` on the hub clock or until `wake` is set; no polling."""
    if until is None:
        await wake.wait()
        return
    waiters = {asyncio.ensure_future(wake.wait()), asyncio.ensure_future(clock.sleep_until(until))}
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


def _seconds(value: Any) -> float:
    return float(value.seconds) if value is not None else 0.0


def _row_of(incident: Incident, state: str) -> _Row:
    return _Row(
        incident_id=incident.id,
        kind=str(incident.kind),
        severity=int(incident.severity),
        room=incident.room,
        reason=incident.reason,
        evidence=dict(incident.evidence),
        wall=incident.wall,
        mono=incident.mono,
        state=state,
    )


def _incident_row(db: sqlite_utils.Database, incident_id: str) -> _Row | None:
    found = db.execute(
        "SELECT id, kind, severity, room, reason, evidence, wall, mono, state FROM incidents WHERE id = ?",
        [incident_id],
    ).fetchone()
    if found is None:
        return None
    return _Row(found[0], found[1], found[2], found[3], found[4], json.loads(found[5] or "{}"), *found[6:])


def _load(
    db: sqlite_utils.Database,
) -> tuple[list[tuple[str, float | None, float, dict[str, Any]]], list[Incident]]:
    active = [
        (r[0], r[1], r[2], json.loads(r[3]))
        for r in db.execute(
            "SELECT incident_id, due_mono, due_wall, data FROM escalation"
            " WHERE state IN ('pre_alarm', 'step')"
        ).fetchall()
    ]
    unstarted = [
        incident_from_row(r)
        for r in db.execute(
            "SELECT i.id, i.kind, i.severity, i.room, i.reason, i.detector, i.evidence, i.wall, i.mono"
            " FROM incidents i LEFT JOIN escalation e ON e.incident_id = i.id"
            " WHERE i.state = 'open' AND e.incident_id IS NULL ORDER BY i.wall"
        ).fetchall()
    ]
    return active, unstarted


__all__ = [
    "AckLinks",
    "AlertSettings",
    "Announcer",
    "EscalationEngine",
    "EspeakAnnouncer",
    "InvalidToken",
    "SilentAnnouncer",
]
