"""The persistent outbox: every message is committed before it is sent (safety rule 1).

At-least-once: a row is `pending` until a channel has taken the message, so a crash between send
and bookkeeping sends it again with the same idempotency key (receivers drop the repeat). A
failing channel is retried with capped exponential backoff and jitter; after `per_channel`
failures (or at once, on a permanent error) the contact's next channel is tried, round and round,
until the message is delivered, superseded (the incident was acknowledged) or too old. Every
failure, fallback and give-up is in the audit log, and `pending()`/`failures()` show them.

The sender sleeps until the next due attempt or until new work arrives: an idle hub uses no CPU.
"""

from __future__ import annotations

import asyncio
import dataclasses
import heapq
import itertools
import json
import logging
import random
from collections.abc import Callable, Sequence
from typing import Any, Final

import sqlite_utils

from alerts.channels import ChannelError, ChannelFactory, Message, MessageKind, describe
from hub.clock import Clock, Instant
from hub.config import ContactConfig, HubConfig
from hub.store import Store, StoreError, audit

log = logging.getLogger(__name__)

ACTOR: Final = "outbox"
# Kinds that page someone; these are superseded once a human has taken the incident.
PAGES: Final = (MessageKind.ALERT.value, MessageKind.REMINDER.value)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    base: float = 2.0  # first retry after about this many seconds
    cap: float = 120.0  # never wait longer than this between tries
    jitter: float = 0.2  # +-20 %: receivers that come back are not hit by every hub at once
    per_channel: int = 3  # failures on one channel before the next channel is tried
    give_up_after: float = 24 * 3600.0  # a message older than this is marked failed
    send_timeout: float = 30.0  # one attempt, any channel
    concurrency: int = 64  # attempts in flight at once

    def backoff(self, failures: int, rng: random.Random) -> float:
        delay: float = min(self.cap, self.base * 2.0 ** max(0, failures - 1))
        return delay * rng.uniform(1 - self.jitter, 1 + self.jitter)


@dataclasses.dataclass(slots=True, kw_only=True)
class Entry:
    """A pending row, as the sender keeps it in memory."""

    id: int
    message: Message
    created: float
    channel_index: int = 0
    channel_attempts: int = 0
    attempts: int = 0
    dead_channels: set[int] = dataclasses.field(default_factory=set)  # permanent errors seen
    # When this hub first scheduled it, on the monotonic clock: a Pi's wall clock jumps at NTP
    # sync, and an alert must not be given up because the calendar moved.
    scheduled_mono: float | None = None


class Outbox:
    def __init__(
        self,
        config: HubConfig,
        clock: Clock,
        store: Callable[[], Store],
        channels: ChannelFactory,
        *,
        retry: RetryPolicy | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.clock = clock
        self._store = store
        self.channels = channels
        self.retry = retry or RetryPolicy()
        self._rng = rng or random.Random()  # noqa: S311 (jitter, not secrets)
        self._contacts: dict[str, ContactConfig] = {c.id: c for c in config.contacts}
        self._entries: dict[int, Entry] = {}
        self._heap: list[tuple[float, int, int]] = []
        self._order = itertools.count()
        self._inflight: set[int] = set()
        self._group: asyncio.TaskGroup | None = None
        self._limit = asyncio.Semaphore(self.retry.concurrency)
        self._wake = asyncio.Event()
        self._loaded = False
        self.sent = 0
        self.failed_attempts = 0

    # -- inside the caller's transaction (the store's writer thread) ---------------------------

    @staticmethod
    def add(db: sqlite_utils.Database, message: Message, now: Instant) -> Entry | None:
        """Commit a message with its audit line; None if its key is already in the outbox."""
        cursor = db.execute(
            "INSERT INTO outbox (idempotency_key, incident_id, contact, channel, payload, kind, state,"
            " attempts, next_attempt, created) VALUES (?, ?, ?, '0', ?, ?, 'pending', 0, ?, ?)"
            " ON CONFLICT (idempotency_key) DO NOTHING",
            [
                message.key,
                message.incident_id,
                message.contact,
                message.to_json(),
                message.kind.value,
                now.wall,
                now.wall,
            ],
        )
        if cursor.rowcount != 1:
            return None
        row_id = int(cursor.lastrowid or 0)
        audit(
            db,
            now.wall,
            message.incident_id,
            ACTOR,
            "queued",
            {"key": message.key, "contact": message.contact, "kind": message.kind.value},
        )
        return Entry(id=row_id, message=message, created=now.wall)

    @staticmethod
    def supersede(
        db: sqlite_utils.Database, incident_ids: Sequence[str], now: Instant, why: str
    ) -> list[int]:
        """Pages not yet delivered for these incidents are no longer needed (someone took it)."""
        ids: list[int] = []
        for incident_id in incident_ids:
            rows = db.execute(
                "SELECT id, idempotency_key FROM outbox WHERE incident_id = ? AND state = 'pending'"
                " AND kind IN (?, ?)",
                [incident_id, *PAGES],
            ).fetchall()
            if not rows:
                continue
            db.conn.executemany(
                "UPDATE outbox SET state = 'cancelled', last_error = ? WHERE id = ?",
                [(why, r[0]) for r in rows],
            )
            audit(db, now.wall, incident_id, ACTOR, "superseded", {"keys": [r[1] for r in rows], "why": why})
            ids.extend(r[0] for r in rows)
        return ids

    # -- on the loop, after the commit ---------------------------------------------------------

    def schedule(self, entries: Sequence[Entry]) -> None:
        """Send these committed entries now."""
        due = self.clock.now().mono
        for entry in entries:
            if entry.scheduled_mono is None:
                entry.scheduled_mono = due
            self._entries[entry.id] = entry
            if self._group is not None and self._loaded:
                # Straight out: an alarm does not wait for the sender loop's next turn.
                self._start(entry)
            else:
                self._push(due, entry.id)

    def forget(self, ids: Sequence[int]) -> None:
        for row_id in ids:
            self._entries.pop(row_id, None)

    def _push(self, due: float, row_id: int) -> None:
        heapq.heappush(self._heap, (due, next(self._order), row_id))
        self._wake.set()

    # -- the sender service --------------------------------------------------------------------

    async def run(self) -> None:
        # Started again in the same process (the escalation service restarted): what memory
        # held about attempts that were cut off is stale; the database's pending rows are not.
        self._entries.clear()
        self._heap.clear()
        self._inflight.clear()
        await self._load()
        async with asyncio.TaskGroup() as group:
            self._group = group
            try:
                while True:
                    now = self.clock.now().mono
                    while self._heap and self._heap[0][0] <= now:
                        _, _, row_id = heapq.heappop(self._heap)
                        entry = self._entries.get(row_id)
                        if entry is not None:
                            self._start(entry)
                    self._wake.clear()
                    await self._sleep(self._heap[0][0] if self._heap else None)
            finally:
                self._group = None

    def _start(self, entry: Entry) -> None:
        if self._group is None or entry.id in self._inflight:
            return
        attempt = self._attempt(entry, self._limit)
        try:
            self._group.create_task(attempt, name=f"outbox-{entry.id}")
        except RuntimeError:
            # The hub is stopping: the row stays pending in the database and goes out after
            # the restart.
            attempt.close()
            return
        self._inflight.add(entry.id)

    async def _sleep(self, until: float | None) -> None:
        """Until `until` on the hub clock, or until new work is scheduled."""
        if until is None:
            await self._wake.wait()
            return
        waiters = {
            asyncio.ensure_future(self._wake.wait()),
            asyncio.ensure_future(self.clock.sleep_until(until)),
        }
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

    async def resync(self) -> None:
        """Schedule every pending row the memory does not know (after a fault between commit and
        scheduling): the database is the truth."""
        await self._load()

    async def _load(self) -> None:
        """Pending rows from before a restart are due at once (at-least-once)."""

        def load(db: sqlite_utils.Database) -> list[tuple[Any, ...]]:
            return list(
                db.execute(
                    "SELECT id, payload, created, channel_index, channel_attempts, attempts FROM outbox"
                    " WHERE state = 'pending' ORDER BY id"
                ).fetchall()
            )

        rows = await self._store().call(load, durable=False)
        entries = []
        for row_id, payload, created, index, channel_attempts, attempts in rows:
            if row_id in self._entries:
                continue
            try:
                message = Message.from_json(payload)
            except (ValueError, TypeError, KeyError):
                log.exception("unreadable outbox row", extra={"row": row_id})
                continue
            entries.append(
                Entry(
                    id=row_id,
                    message=message,
                    created=created,
                    channel_index=index,
                    channel_attempts=channel_attempts,
                    attempts=attempts,
                )
            )
        if entries:
            log.info("outbox resumes", extra={"pending": len(entries)})
        self.schedule(entries)
        self._loaded = True

    async def _attempt(self, entry: Entry, limit: asyncio.Semaphore) -> None:
        try:
            async with limit:
                if self._entries.get(entry.id) is not entry:
                    return  # superseded (someone acknowledged) or sent while this one waited
                await self._attempt_once(entry)
        except StoreError as err:
            # The row stays pending in the database; try again later rather than wait for a restart
            # (a delivery that did go out is repeated under its idempotency key).
            log.error("outbox bookkeeping failed", extra={"row": entry.id, "error": str(err)})  # noqa: TRY400
            if entry.id in self._entries:
                self._push(self.clock.now().mono + self.retry.cap, entry.id)
        except Exception:
            log.exception("outbox attempt failed unexpectedly", extra={"row": entry.id})
            self._push(self.clock.now().mono + self.retry.cap, entry.id)
        finally:
            self._inflight.discard(entry.id)

    async def _attempt_once(self, entry: Entry) -> None:
        contact = self._contacts.get(entry.message.contact)
        if contact is None or not contact.channels:
            await self._give_up(entry, "the contact is no longer in the config", None)
            return
        index = entry.channel_index % len(contact.channels)
        channel_config = contact.channels[index]
        label = describe(channel_config)
        try:
            channel = self.channels.for_config(channel_config)
            label = channel.label
            async with asyncio.timeout(self.retry.send_timeout):
                await channel.send(entry.message)
        except ChannelError as err:
            await self._failed(entry, contact, index, label, err)
            return
        except TimeoutError:
            timeout = ChannelError(f"{label}: no answer within {self.retry.send_timeout:g} s")
            await self._failed(entry, contact, index, label, timeout)
            return
        except Exception as err:
            # A bug or a bad setting in one channel (an unreadable key file, a malformed URL):
            # fall back to the contact's next channel at once, and say so in the audit.
            log.exception("channel failed unexpectedly", extra={"channel": label})
            broken = ChannelError(f"{label}: {type(err).__name__}: {err}", permanent=True)
            await self._failed(entry, contact, index, label, broken)
            return
        await self._sent(entry, label)

    async def _sent(self, entry: Entry, label: str) -> None:
        now = self.clock.now()
        message = entry.message

        def mark(db: sqlite_utils.Database) -> None:
            db.execute(
                "UPDATE outbox SET state = 'sent', sent = ?, attempts = attempts + 1, channel = ?,"
                " last_error = NULL WHERE id = ? AND state = 'pending'",
                [now.wall, str(entry.channel_index), entry.id],
            )
            audit(
                db,
                now.wall,
                message.incident_id,
                ACTOR,
                "sent",
                {
                    "key": message.key,
                    "contact": message.contact,
                    "channel": label,
                    "attempt": entry.attempts + 1,
                },
            )

        self._entries.pop(entry.id, None)
        self.sent += 1
        # Lost in a power cut, the message is merely sent again under its idempotency key. At
        # alarm rate the store folds these calls into one transaction with one wake-up.
        await self._store().call(mark, durable=False)

    async def _failed(
        self, entry: Entry, contact: ContactConfig, index: int, label: str, err: ChannelError
    ) -> None:
        self.failed_attempts += 1
        now = self.clock.now()
        entry.attempts += 1
        entry.channel_attempts += 1
        if err.permanent:
            entry.dead_channels.add(index)
        count = len(contact.channels)
        if len(entry.dead_channels) >= count:
            await self._give_up(entry, f"every channel refused: {err}", label)
            return
        first = entry.scheduled_mono if entry.scheduled_mono is not None else now.mono
        if now.mono - first > self.retry.give_up_after:
            await self._give_up(entry, f"undelivered after {self.retry.give_up_after:g} s: {err}", label)
            return
        action = "send_failed"
        delay = self.retry.backoff(entry.channel_attempts, self._rng)
        if count > 1 and (err.permanent or entry.channel_attempts >= self.retry.per_channel):
            action = "fallback"
            nxt = (index + 1) % count
            while nxt in entry.dead_channels:
                nxt = (nxt + 1) % count
            wrapped = nxt <= index
            entry.channel_index, entry.channel_attempts = nxt, 0
            # The next channel at once; only a full round of failures waits (growing with rounds).
            delay = self.retry.backoff(entry.attempts // count, self._rng) if wrapped else 0.0
        log.warning(
            "send failed",
            extra={
                "key": entry.message.key,
                "channel": label,
                "error": str(err),
                "retry_in": round(delay, 1),
            },
        )
        detail = {
            "key": entry.message.key,
            "contact": entry.message.contact,
            "channel": label,
            "error": str(err),
            "attempt": entry.attempts,
            "retry_in": round(delay, 3),
        }
        if action == "fallback":
            detail["next_channel"] = describe(contact.channels[entry.channel_index])

        def mark(db: sqlite_utils.Database) -> None:
            db.execute(
                "UPDATE outbox SET attempts = ?, channel_index = ?, channel_attempts = ?, next_attempt = ?,"
                " last_error = ? WHERE id = ? AND state = 'pending'",
                [
                    entry.attempts,
                    entry.channel_index,
                    entry.channel_attempts,
                    now.wall + delay,
                    str(err),
                    entry.id,
                ],
            )
            audit(db, now.wall, entry.message.incident_id, ACTOR, action, detail)

        await self._store().call(mark, durable=False)
        if entry.id in self._entries:
            self._push(now.mono + delay, entry.id)

    async def _give_up(self, entry: Entry, why: str, label: str | None) -> None:
        now = self.clock.now()
        log.error("message undeliverable", extra={"key": entry.message.key, "why": why})

        def mark(db: sqlite_utils.Database) -> None:
            db.execute(
                "UPDATE outbox SET state = 'failed', attempts = ?, last_error = ? WHERE id = ?",
                [entry.attempts, why, entry.id],
            )
            audit(
                db,
                now.wall,
                entry.message.incident_id,
                ACTOR,
                "delivery_failed",
                {"key": entry.message.key, "contact": entry.message.contact, "channel": label, "error": why},
            )

        self._entries.pop(entry.id, None)
        await self._store().call(mark)

    # -- what the API shows --------------------------------------------------------------------

    async def pending(self) -> list[dict[str, Any]]:
        """Messages not yet delivered, oldest first."""
        return await self._store().call(lambda db: _rows(db, _PENDING))

    async def failures(self) -> list[dict[str, Any]]:
        """Given-up messages and pending ones whose last attempt failed, newest first."""
        return await self._store().call(lambda db: _rows(db, _FAILURES))

    def stats(self) -> dict[str, int]:
        return {
            "in_memory": len(self._entries),
            "in_flight": len(self._inflight),
            "sent": self.sent,
            "failed_attempts": self.failed_attempts,
        }


_COLUMNS: Final = (
    "SELECT id, idempotency_key, incident_id, contact, kind, state, attempts, channel_index,"
    " next_attempt, created, sent, last_error FROM outbox"
)
_PENDING: Final = _COLUMNS + " WHERE state = 'pending' ORDER BY id LIMIT 500"
_FAILURES: Final = (
    _COLUMNS + " WHERE state = 'failed' OR (state = 'pending' AND last_error IS NOT NULL)"
    " ORDER BY id DESC LIMIT 500"
)


def _rows(db: sqlite_utils.Database, query: str) -> list[dict[str, Any]]:
    cursor = db.execute(query)
    names = [c[0] for c in cursor.description]
    out = []
    for row in cursor.fetchall():
        item = dict(zip(names, row, strict=True))
        item["key"] = item.pop("idempotency_key")
        out.append(item)
    return out


def decode_detail(text: str) -> dict[str, Any]:
    value = json.loads(text)
    return value if isinstance(value, dict) else {}
