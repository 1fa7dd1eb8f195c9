"""Delivery faults against a real HTTP receiver: 500s, timeouts, refusals, fallback, restart."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from pathlib import Path

import pytest
import sqlite_utils

from alerts.channels import Message, MessageKind
from alerts.escalation import AlertSettings, EscalationEngine
from alerts.outbox import Entry, Outbox, RetryPolicy
from hub.clock import VirtualClock
from hub.store import Store, _statements
from tests.alerts_receivers import (
    Receiver,
    audit_actions,
    config_for,
    incident,
    raise_incident,
    running_engine,
    settle,
    webhook_config,
)

pytestmark = pytest.mark.timeout(60)

RETRY = RetryPolicy(base=1.0, cap=8.0, jitter=0.0, per_channel=2, send_timeout=0.3)
SETTINGS = AlertSettings(heartbeat_every=0, retry=RETRY, public_url="https://hub.test")


async def test_500s_are_retried_with_backoff_under_one_key(tmp_path: Path, clock: VirtualClock) -> None:
    async with Receiver() as receiver:
        receiver.fail_next = 3
        config = webhook_config(receiver)
        async with running_engine(config, clock, tmp_path / "hub.db", settings=SETTINGS) as (
            engine,
            store,
            _,
        ):
            help_ = incident(clock)
            await raise_incident(engine, store, help_)
            await settle(engine, store)
            assert len(receiver.requests) == 1
            start = clock.now().mono
            for seconds, expected in ((0.99, 1), (1.0, 2), (2.99, 2), (3.0, 3), (6.99, 3), (7.0, 4)):
                clock.advance_to(start + seconds)
                await settle(engine, store)
                assert len(receiver.requests) == expected, seconds
            assert len(receiver.messages) == 1
            keys = {headers["Idempotency-Key"] for headers, _ in receiver.requests}
            assert keys == {f"{help_.id}/0/daughter"}
            actions = await audit_actions(store, help_.id)
            assert actions.count("send_failed") == 3
            assert actions[-1] == "sent"
            assert await engine.outbox.failures() == []


async def test_a_timeout_falls_back_to_the_next_channel(tmp_path: Path, clock: VirtualClock) -> None:
    async with Receiver() as slow, Receiver() as backup:
        slow.delay = 1.0  # longer than the 0.3 s send timeout
        config = config_for(
            f'{{webhook: "{slow.url}/a"}}, {{webhook: "{backup.url}/b"}}',
            f'{{webhook: "{backup.url}/n"}}',
            f'{{webhook: "{backup.url}/c"}}',
        )
        async with running_engine(config, clock, tmp_path / "hub.db", settings=SETTINGS) as (
            engine,
            store,
            _,
        ):
            help_ = incident(clock)
            await raise_incident(engine, store, help_)
            await settle(engine, store)
            [failing] = await engine.outbox.failures()
            assert "no answer within" in failing["last_error"]
            clock.advance_to(clock.now().mono + 1.0)  # second try on the slow channel, then fallback
            await backup.wait_for(1)
            assert backup.messages[0]["key"] == f"{help_.id}/0/daughter"
            await settle(engine, store)
            actions = await audit_actions(store, help_.id)
            assert "fallback" in actions
            assert actions[-1] == "sent"


async def test_a_refusal_falls_back_at_once_and_all_refusals_fail_loudly(
    tmp_path: Path, clock: VirtualClock
) -> None:
    async with Receiver() as refusing, Receiver() as backup:
        refusing.status = 404
        config = config_for(
            f'{{webhook: "{refusing.url}/a"}}, {{webhook: "{backup.url}/b"}}',
            f'{{webhook: "{refusing.url}/n"}}',
            f'{{webhook: "{refusing.url}/c"}}',
            policy="escalation:\n  default: {steps: [{notify: [daughter, neighbour]}]}\n",
        )
        async with running_engine(config, clock, tmp_path / "hub.db", settings=SETTINGS) as (
            engine,
            store,
            _,
        ):
            help_ = incident(clock)
            await raise_incident(engine, store, help_)
            await backup.wait_for(1)  # no backoff wait for a permanent error
            await settle(engine, store)
            [failed] = await engine.outbox.failures()
            assert failed["contact"] == "neighbour"
            assert failed["state"] == "failed"
            assert "HTTP 404" in failed["last_error"]
            assert "delivery_failed" in await audit_actions(store, help_.id)


async def test_pending_rows_are_sent_after_a_restart(tmp_path: Path, clock: VirtualClock) -> None:
    db = tmp_path / "hub.db"
    async with Receiver() as receiver:
        config = webhook_config(receiver)
        async with Store(db) as store:
            message = Message(
                key="k-1", kind=MessageKind.ALERT, flat_id="test-flat", flat_name="T", contact="care-service"
            )
            entry = await store.call(lambda d: Outbox.add(d, message, clock.now()))
            assert entry is not None
            again = await store.call(lambda d: Outbox.add(d, message, clock.now()))
            assert again is None  # one key, one row
        # The hub died after the commit and before the send; it comes back:
        async with running_engine(config, clock, db, settings=SETTINGS) as (engine, store, _):
            [got] = await receiver.wait_for(1)
            assert got["key"] == "k-1"
            await settle(engine, store)
            assert await engine.outbox.pending() == []


async def test_smtp_down_is_retried_and_visible(tmp_path: Path, clock: VirtualClock) -> None:
    from alerts.channels import ChannelSettings, SmtpSettings
    from tests.brokers import free_port

    settings = AlertSettings(
        heartbeat_every=0,
        retry=RETRY,
        channels=ChannelSettings(smtp=SmtpSettings(host="127.0.0.1", port=free_port(), timeout=1)),
    )
    async with Receiver() as receiver:
        config = config_for(
            "{email: anna@example.org}", f'{{webhook: "{receiver.url}"}}', f'{{webhook: "{receiver.url}"}}'
        )
        async with running_engine(config, clock, tmp_path / "hub.db", settings=settings) as (
            engine,
            store,
            _,
        ):
            await raise_incident(engine, store, incident(clock))
            await settle(engine, store)
            [pending] = await engine.outbox.pending()
            assert pending["attempts"] == 1
            assert "email anna@example.org" in pending["last_error"]


def test_v001_databases_migrate(tmp_path: Path) -> None:
    from hub.store import SCHEMA, migrate

    path = tmp_path / "old.db"
    conn = sqlite3.connect(path, isolation_level=None)
    v001 = next(script for number, script in SCHEMA if number == 1)
    for statement in _statements(v001):
        conn.execute(statement)
    conn.execute("PRAGMA user_version = 1")
    conn.execute(
        "INSERT INTO outbox (idempotency_key, contact, channel, payload, next_attempt, created)"
        " VALUES ('old', 'daughter', 'email', '{}', 0, 0)"
    )
    assert migrate(conn) >= 2
    row = conn.execute("SELECT kind, channel_index, channel_attempts FROM outbox").fetchone()
    assert row == ("alert", 0, 0)
    conn.close()


async def test_a_wall_clock_jump_does_not_give_up_an_alert(tmp_path: Path, clock: VirtualClock) -> None:
    async with Receiver() as receiver:
        receiver.fail_next = 10_000
        config = webhook_config(receiver)
        async with running_engine(config, clock, tmp_path / "hub.db", settings=SETTINGS) as (
            engine,
            store,
            _,
        ):
            help_ = incident(clock)
            await raise_incident(engine, store, help_)
            await settle(engine, store)
            # NTP sync on a Pi without RTC: the calendar moves two days at once.
            clock.set_wall(clock.now().wall + 2 * 86400)
            start = clock.now().mono
            clock.advance_to(start + 8)
            await settle(engine, store)
            actions = await audit_actions(store, help_.id)
            assert "delivery_failed" not in actions
            assert "send_failed" in actions
            # A whole day of failures on the monotonic clock does end in a loud failure.
            for hour in range(1, 26):
                clock.advance_to(start + hour * 3600)
                await settle(engine, store)
            assert "delivery_failed" in await audit_actions(store, help_.id)


async def test_a_channel_that_breaks_unexpectedly_falls_back_at_once(
    tmp_path: Path, clock: VirtualClock
) -> None:
    # An ARC key saved by a Windows editor (a byte-order mark): the SIA channel cannot even start.
    key_file = tmp_path / "arc.key"
    key_file.write_bytes(b"\xef\xbb\xbf0123456789abcdef")
    async with Receiver() as receiver:
        config = config_for(
            f'{{sia_dc09: {{host: 127.0.0.1, port: 9, account: "1234", key_file: "{key_file}"}}}}, '
            f'{{webhook: "{receiver.url}/daughter"}}',
            f'{{webhook: "{receiver.url}/neighbour"}}',
            f'{{webhook: "{receiver.url}/care"}}',
        )
        async with running_engine(config, clock, tmp_path / "hub.db", settings=SETTINGS) as (
            engine,
            store,
            _,
        ):
            help_ = incident(clock)
            await raise_incident(engine, store, help_)
            await settle(engine, store)
            assert len(receiver.messages) == 1
            assert receiver.messages[0]["contact"] == "daughter"
            actions = await audit_actions(store, help_.id)
            assert "fallback" in actions
            assert actions[-1] == "sent"


async def test_a_page_superseded_in_the_same_turn_is_not_sent(tmp_path: Path, clock: VirtualClock) -> None:
    """The escalation worker may schedule a step's page and, in the same batch, supersede it
    (someone acknowledged): the page must not go out, and its row stays cancelled."""
    async with Receiver() as receiver:
        config = webhook_config(receiver)
        async with running_engine(config, clock, tmp_path / "hub.db", settings=SETTINGS) as (
            engine,
            store,
            _,
        ):
            message = Message(
                key="k-late",
                kind=MessageKind.ALERT,
                flat_id="test-flat",
                flat_name="T",
                contact="care-service",
            )

            def add_and_cancel(db: sqlite_utils.Database) -> Entry | None:
                entry = Outbox.add(db, message, clock.now())
                db.execute("UPDATE outbox SET state = 'cancelled' WHERE idempotency_key = 'k-late'")
                return entry

            entry = await store.call(add_and_cancel)
            assert entry is not None
            engine.outbox.schedule([entry])
            engine.outbox.forget([entry.id])
            await settle(engine, store)
            assert receiver.requests == []
            state = await store.call(
                lambda db: db.execute("SELECT state FROM outbox WHERE idempotency_key = 'k-late'").fetchone()
            )
            assert state == ("cancelled",)


async def test_a_send_cut_off_by_a_service_restart_goes_out_after_it(
    tmp_path: Path, clock: VirtualClock
) -> None:
    """The hub's supervisor restarts a crashed escalation service in the same process: a page
    whose send was cut off stays pending in the database and must go out again."""
    async with Receiver() as receiver, Store(tmp_path / "hub.db") as store:
        receiver.delay = 30.0  # the first attempt hangs at the receiver
        engine = EscalationEngine(webhook_config(receiver), clock, store, settings=SETTINGS)
        first = asyncio.create_task(engine.run())
        await asyncio.wait_for(engine.ready.wait(), 5)
        help_ = incident(clock)
        await raise_incident(engine, store, help_)
        for _ in range(200):
            if receiver.requests:
                break
            await asyncio.sleep(0.01)
        assert len(receiver.requests) == 1
        first.cancel()  # the service dies mid-send ...
        with contextlib.suppress(asyncio.CancelledError):
            await first
        receiver.delay = 0.0
        again = asyncio.create_task(engine.run())  # ... and the supervisor starts it again
        try:
            [message] = await receiver.wait_for(1)
            assert message["key"] == f"{help_.id}/0/daughter"
            await settle(engine, store)
            assert await engine.outbox.pending() == []
        finally:
            again.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await again
