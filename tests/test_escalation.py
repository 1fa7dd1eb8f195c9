"""The escalation state machine, end to end: real store, real HTTP receiver, virtual clock."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from alerts.escalation import AckLinks, AlertSettings, InvalidToken
from hub.clock import Instant, VirtualClock
from hub.events import Event, EventKind, IncidentKind, Severity
from hub.store import Store
from tests.alerts_receivers import (
    FAST_RETRY,
    Receiver,
    audit_actions,
    incident,
    raise_incident,
    running_engine,
    settle,
    webhook_config,
)
from tests.conftest import T0

pytestmark = pytest.mark.timeout(60)


def paths(messages: list[dict[str, object]]) -> list[tuple[str, str]]:
    return [(str(m["contact"]), str(m["type"])) for m in messages]


async def state_of(store, incident_id: str) -> tuple[str, str | None]:
    def query(db):
        row = db.execute(
            "SELECT i.state, e.state FROM incidents i LEFT JOIN escalation e ON e.incident_id = i.id"
            " WHERE i.id = ?",
            [incident_id],
        ).fetchone()
        return tuple(row)

    return await store.call(query)


async def test_help_pages_step_one_at_once_with_a_signed_payload(tmp_path: Path, clock: VirtualClock) -> None:
    async with Receiver() as receiver:
        config = webhook_config(receiver)
        async with running_engine(config, clock, tmp_path / "hub.db") as (engine, store, announcer):
            help_ = incident(clock, IncidentKind.HELP)
            await raise_incident(engine, store, help_)
            [message] = await receiver.wait_for(1)
            await settle(engine, store)

            assert message["type"] == "alert"
            assert message["contact"] == "daughter"
            assert message["key"] == f"{help_.id}/0/daughter"
            assert message["demo"] is False
            assert message["incident"]["id"] == help_.id
            assert message["incident"]["room"] == "bathroom"
            assert message["incident"]["evidence"] == {"device": "pendant"}
            assert message["ack_url"].startswith("https://hub.test/ack/")
            assert engine.links is not None
            room = engine.links.room(help_.id)
            assert message["video_url"] == f"https://meet.example.org/aal-test-flat-{room}"
            # Keyed: the room name cannot be read off the incident id or the time it was raised.
            assert help_.id[:12] not in room
            assert len(room) == 24
            assert message["title"].startswith("Alarm: Hilferuf (bathroom)")
            assert announcer.said == []  # no cancel window for a help button
            headers, _ = receiver.requests[0]
            assert headers["Idempotency-Key"] == message["key"]
            assert headers["X-AAL-Signature"].startswith("t=")
            assert await state_of(store, help_.id) == ("open", "step")
            actions = await audit_actions(store, help_.id)
            assert actions == ["raised", "queued", "step", "sent"]


async def test_resident_ok_cancels_the_pre_alarm_and_nothing_is_sent(
    tmp_path: Path, clock: VirtualClock
) -> None:
    async with Receiver() as receiver:
        closed: list[str] = []
        async with running_engine(webhook_config(receiver), clock, tmp_path / "hub.db", closed=closed) as (
            engine,
            store,
            announcer,
        ):
            fall = incident(clock, IncidentKind.FALL)
            await raise_incident(engine, store, fall)
            await settle(engine, store)
            assert await state_of(store, fall.id) == ("open", "pre_alarm")
            await asyncio.sleep(0.05)
            assert announcer.said
            assert "Sturz" in announcer.said[0][0]
            assert "30 Sekunden" in announcer.said[0][0]

            clock.advance_to(clock.now().mono + 20)
            now = clock.now()
            engine.on_event(
                Event(
                    kind=EventKind.RESIDENT_OK,
                    device="kiosk",
                    room=None,
                    value="kiosk",
                    wall=now.wall,
                    mono=now.mono,
                    source="web",
                )
            )
            await settle(engine, store)
            clock.advance_to(clock.now().mono + 3600)
            await settle(engine, store)

            assert receiver.requests == []
            assert await state_of(store, fall.id) == ("cancelled", "cancelled")
            assert closed == [fall.id]
            assert await audit_actions(store, fall.id) == ["raised", "pre_alarm", "cancelled"]


async def test_steps_climb_until_acknowledged_then_the_others_stand_down(
    tmp_path: Path, clock: VirtualClock
) -> None:
    async with (
        Receiver() as receiver,
        running_engine(webhook_config(receiver), clock, tmp_path / "hub.db") as (engine, store, _),
    ):
        inactivity = incident(clock, IncidentKind.INACTIVITY, severity=Severity.WARNING)
        start = clock.now().mono
        await raise_incident(engine, store, inactivity)
        await settle(engine, store)
        clock.advance_to(start + 59)
        await settle(engine, store)
        assert receiver.requests == []  # still in the 60 s cancel window

        clock.advance_to(start + 60)
        await receiver.wait_for(1)
        clock.advance_to(start + 60 + 299)
        await settle(engine, store)
        assert len(receiver.messages) == 1

        clock.advance_to(start + 60 + 300)  # ack timeout: step 2
        await receiver.wait_for(3)
        assert sorted(paths(receiver.messages[1:])) == [("daughter", "reminder"), ("neighbour", "alert")]
        neighbour = next(m for m in receiver.messages if m["contact"] == "neighbour")
        assert neighbour["title"].startswith("Alarm: No activity")  # the neighbour reads English

        clock.advance_to(start + 60 + 600)  # step 3: the care service
        await receiver.wait_for(4)
        clock.advance_to(start + 60 + 600 + 600)  # the last step repeats
        await receiver.wait_for(5)
        assert paths(receiver.messages[3:]) == [("care-service", "alert"), ("care-service", "reminder")]
        assert receiver.messages[4]["key"] == f"{inactivity.id}/3/care-service"

        assert await engine.acknowledge(inactivity.id, "care-service", "web") == "acknowledged"
        await receiver.wait_for(7)
        told = sorted(paths(receiver.messages[5:]))
        assert told == [("daughter", "acknowledged"), ("neighbour", "acknowledged")]
        assert await engine.acknowledge(inactivity.id, "daughter", "link") == "already"

        clock.advance_to(start + 10 * 3600)
        await settle(engine, store)
        assert len(receiver.messages) == 7  # nothing more after the acknowledgement
        assert await state_of(store, inactivity.id) == ("acknowledged", "acknowledged")
        actions = await audit_actions(store, inactivity.id)
        # (a page delivered but not yet booked may also be "superseded": harmless)
        assert [a for a in actions if a not in {"queued", "sent", "superseded"}] == [
            "raised",
            "pre_alarm",
            "cancel_window_over",
            "step",
            "step",
            "step",
            "repeat",
            "acknowledged",
            "ack_repeated",
        ]


async def test_acknowledgement_supersedes_undelivered_pages(tmp_path: Path, clock: VirtualClock) -> None:
    async with Receiver() as receiver:
        receiver.status = 503
        async with running_engine(webhook_config(receiver), clock, tmp_path / "hub.db") as (engine, store, _):
            help_ = incident(clock)
            await raise_incident(engine, store, help_)
            await settle(engine, store)
            assert len(await engine.outbox.pending()) == 1
            assert await engine.acknowledge(help_.id, "neighbour", "web") == "acknowledged"
            await settle(engine, store)
            receiver.status = 200
            clock.advance_to(clock.now().mono + 3600)
            await settle(engine, store)
            assert paths(receiver.messages) == [("daughter", "acknowledged")]
            assert "superseded" in await audit_actions(store, help_.id)


async def test_contacts_outside_their_hours_are_skipped(tmp_path: Path) -> None:
    clock = VirtualClock(Instant(T0 + 15 * 3600, 1000.0))  # 23:00 in Berlin
    async with (
        Receiver() as receiver,
        running_engine(webhook_config(receiver), clock, tmp_path / "hub.db") as (engine, store, _),
    ):
        help_ = incident(clock)
        await raise_incident(engine, store, help_)
        await receiver.wait_for(1)
        clock.advance_to(clock.now().mono + 300)
        await receiver.wait_for(2)
        await settle(engine, store)
        # Step 2 is neighbour + daughter; the neighbour is only available 08:00-21:00.
        assert paths(receiver.messages) == [("daughter", "alert"), ("daughter", "reminder")]
        assert "neighbour" not in json.dumps(await engine.incidents())


async def test_last_step_with_nobody_available_still_pages(tmp_path: Path) -> None:
    clock = VirtualClock(Instant(T0 + 15 * 3600, 1000.0))  # 23:00
    async with Receiver() as receiver:
        policy = "escalation:\n  default: {steps: [{notify: [neighbour], ack_timeout: 1m}]}\n"
        config = webhook_config(receiver, policy=policy)
        async with running_engine(config, clock, tmp_path / "hub.db") as (engine, store, _):
            help_ = incident(clock)
            await raise_incident(engine, store, help_)
            await receiver.wait_for(1)
            assert paths(receiver.messages) == [("neighbour", "alert")]
            assert "outside_availability" in await audit_actions(store, help_.id)


async def test_restart_resumes_the_timers_exactly(tmp_path: Path, clock: VirtualClock) -> None:
    db = tmp_path / "hub.db"
    async with Receiver() as receiver:
        config = webhook_config(receiver)
        start = clock.now().mono
        async with running_engine(config, clock, db) as (engine, store, _):
            help_ = incident(clock)
            await raise_incident(engine, store, help_)
            await receiver.wait_for(1)
            await settle(engine, store)
            # A second incident is committed by the desk, but the hub dies before escalating it.
            fall = incident(clock, IncidentKind.FALL, room="hall")
            await store.record_incident(fall)
        clock.advance_to(start + 200)
        async with running_engine(config, clock, db) as (engine, store, _):
            # Its 30 s cancel window ran out while the hub was down: it goes out at once.
            await receiver.wait_for(2)
            assert receiver.messages[1]["incident"]["id"] == fall.id
            assert await state_of(store, fall.id) == ("open", "step")
            clock.advance_to(start + 299)
            await settle(engine, store)
            assert len(receiver.messages) == 2
            clock.advance_to(start + 300)  # exactly the 5 min ack timeout of step 1 for the help call
            await receiver.wait_for(4)
            assert sorted(paths(receiver.messages[2:])) == [("daughter", "reminder"), ("neighbour", "alert")]


async def test_after_a_reboot_the_wall_clock_remainder_is_used(tmp_path: Path, clock: VirtualClock) -> None:
    db = tmp_path / "hub.db"
    async with Receiver() as receiver:
        config = webhook_config(receiver)
        async with running_engine(config, clock, db) as (engine, store, _):
            await raise_incident(engine, store, incident(clock))
            await receiver.wait_for(1)
            await settle(engine, store)
        # Reboot 100 s later: monotonic time starts again near zero.
        rebooted = VirtualClock(Instant(clock.now().wall + 100, 5.0))
        async with running_engine(config, rebooted, db) as (engine, store, _):
            rebooted.advance_to(5.0 + 199)
            await settle(engine, store)
            assert len(receiver.messages) == 1
            rebooted.advance_to(5.0 + 200)
            await receiver.wait_for(3)


async def test_same_kind_while_escalating_is_merged_and_follows_the_ack(
    tmp_path: Path, clock: VirtualClock
) -> None:
    async with (
        Receiver() as receiver,
        running_engine(webhook_config(receiver), clock, tmp_path / "hub.db") as (engine, store, _),
    ):
        first = incident(clock, room="bathroom")
        second = incident(clock, room="bedroom")
        await raise_incident(engine, store, first)
        await raise_incident(engine, store, second)
        await receiver.wait_for(1)
        await settle(engine, store)
        assert len(receiver.messages) == 1
        assert await state_of(store, second.id) == ("open", "merged")
        assert "merged_in" in await audit_actions(store, first.id)
        assert await engine.resolve(first.id, "daughter", "Sie war nur gestolpert") == "resolved"
        assert await state_of(store, second.id) == ("resolved", "resolved")


async def test_resolve_keeps_the_note_and_closes(tmp_path: Path, clock: VirtualClock) -> None:
    async with Receiver() as receiver:
        closed: list[str] = []
        async with running_engine(webhook_config(receiver), clock, tmp_path / "hub.db", closed=closed) as (
            engine,
            store,
            _,
        ):
            help_ = incident(clock)
            await raise_incident(engine, store, help_)
            await receiver.wait_for(1)
            assert (
                await engine.resolve(help_.id, "Pflegedienst Nord", "Nachbarin war da, alles gut")
                == "resolved"
            )
            assert await engine.resolve(help_.id, "x", "again") == "closed"
            assert await engine.acknowledge("nope", "x", "web") == "unknown"
            await receiver.wait_for(2)
            assert receiver.messages[1]["type"] == "resolved"
            assert receiver.messages[1]["note"] == "Nachbarin war da, alles gut"
            note = await store.call(lambda db: db.execute("SELECT note, closed FROM incidents").fetchone())
            assert note[0] == "Nachbarin war da, alles gut"
            assert note[1] is not None
            assert closed == [help_.id]
            [listed] = await engine.incidents(open_only=False)
            assert listed["state"] == "resolved"
            assert await engine.incidents() == []


async def test_ack_event_from_the_bus(tmp_path: Path, clock: VirtualClock) -> None:
    async with (
        Receiver() as receiver,
        running_engine(webhook_config(receiver), clock, tmp_path / "hub.db") as (engine, store, _),
    ):
        help_ = incident(clock)
        await raise_incident(engine, store, help_)
        await receiver.wait_for(1)
        now = clock.now()
        engine.on_event(
            Event(
                kind=EventKind.ACK,
                device="care-console",
                room=None,
                value=help_.id,
                wall=now.wall,
                mono=now.mono,
                source="mqtt",
            )
        )
        await settle(engine, store)
        assert await state_of(store, help_.id) == ("acknowledged", "acknowledged")


async def test_info_incidents_are_recorded_but_page_nobody(tmp_path: Path, clock: VirtualClock) -> None:
    async with (
        Receiver() as receiver,
        running_engine(webhook_config(receiver), clock, tmp_path / "hub.db") as (engine, store, _),
    ):
        info = incident(clock, IncidentKind.APPLIANCE_ON, severity=Severity.INFO)
        await raise_incident(engine, store, info)
        await settle(engine, store)
        clock.advance_to(clock.now().mono + 3600)
        await settle(engine, store)
        assert receiver.requests == []
        assert await state_of(store, info.id) == ("open", "none")


async def test_no_policy_pages_everybody(tmp_path: Path, clock: VirtualClock) -> None:
    async with Receiver() as receiver:
        config = webhook_config(receiver, policy="")
        async with running_engine(config, clock, tmp_path / "hub.db") as (engine, store, _):
            await raise_incident(engine, store, incident(clock))
            await receiver.wait_for(3)
            assert sorted(m["contact"] for m in receiver.messages) == [
                "care-service",
                "daughter",
                "neighbour",
            ]


def test_ack_links_are_bound_signed_and_expire() -> None:
    links = AckLinks(b"k" * 32, "https://hub.test/", ttl=3600)
    token = links.token("inc1", "daughter", expires=T0 + 3600)
    assert links.verify(token, T0) == ("inc1", "daughter")
    with pytest.raises(InvalidToken, match="expired"):
        links.verify(token, T0 + 3601)
    _body, mac = token.split(".")
    forged = links.token("inc2", "daughter", expires=T0 + 3600).split(".")[0] + "." + mac
    with pytest.raises(InvalidToken):
        links.verify(forged, T0)
    with pytest.raises(InvalidToken):
        AckLinks(b"x" * 32, "https://hub.test", 3600).verify(token, T0)
    with pytest.raises(InvalidToken):
        links.verify("garbage", T0)
    assert links.url("inc1", "daughter", T0).startswith("https://hub.test/ack/")


async def test_links_survive_a_restart(tmp_path: Path, clock: VirtualClock) -> None:
    async with Receiver() as receiver:
        config = webhook_config(receiver)
        async with running_engine(config, clock, tmp_path / "hub.db") as (engine, store, _):
            help_ = incident(clock)
            await raise_incident(engine, store, help_)
            [message] = await receiver.wait_for(1)
        async with running_engine(config, clock, tmp_path / "hub.db") as (engine, store, _):
            token = message["ack_url"].rsplit("/", 1)[1]
            assert engine.verify(token) == (help_.id, "daughter")


async def test_an_idle_engine_uses_no_cpu(tmp_path: Path) -> None:
    from hub.clock import RealClock

    async with Receiver() as receiver:
        settings = AlertSettings(heartbeat_every=3600, retry=FAST_RETRY)
        async with running_engine(
            webhook_config(receiver), RealClock(), tmp_path / "hub.db", settings=settings
        ):
            await asyncio.sleep(0.1)
            before = time.process_time()
            await asyncio.sleep(1.0)
            assert time.process_time() - before < 0.05


def test_alert_settings_come_from_the_config_and_the_environment_wins() -> None:
    from alerts.escalation import AlertSettings
    from hub.config import parse_config

    config = parse_config(
        "flat: {id: f, name: F}\nrooms: [hall]\n"
        "alerts:\n  public_url: https://hub.example.org\n  heartbeat_every: 10m\n  merge_same_kind: false\n"
        "  smtp: {host: mail.example.org, port: 465, username: hub, password: pw, starttls: false}\n",
        "flat.yaml",
    )
    settings = AlertSettings.from_config(config, env={})
    assert settings.public_url == "https://hub.example.org"
    assert settings.heartbeat_every == 600.0
    assert settings.merge_same_kind is False
    assert settings.channels.smtp is not None
    assert (settings.channels.smtp.host, settings.channels.smtp.port, settings.channels.smtp.starttls) == (
        "mail.example.org",
        465,
        False,
    )
    overridden = AlertSettings.from_config(
        config,
        env={
            "AAL_PUBLIC_URL": "https://other.example.org",
            "AAL_HEARTBEAT_EVERY": "0",
            "AAL_SMTP_HOST": "smtp.local",
        },
    )
    assert overridden.public_url == "https://other.example.org"
    assert overridden.heartbeat_every == 0.0
    assert overridden.channels.smtp is not None
    assert overridden.channels.smtp.host == "smtp.local"
    assert overridden.merge_same_kind is False


async def test_a_pre_alarm_from_before_a_reboot_keeps_only_its_remaining_window(
    tmp_path: Path, clock: VirtualClock
) -> None:
    import dataclasses

    db = tmp_path / "hub.db"
    async with Receiver() as receiver:
        config = webhook_config(receiver)
        # A fall (30 s cancel window) committed 10 s before the hub went down, late in a long
        # uptime; after the reboot the monotonic clock starts again near zero.
        before = dataclasses.replace(incident(clock, IncidentKind.FALL, room="hall"), mono=864_000.0)
        async with Store(db) as store:
            await store.record_incident(before)
        rebooted = VirtualClock(Instant(before.wall + 10, 5.0))
        async with running_engine(config, rebooted, db) as (engine, store, _):
            await settle(engine, store)
            rebooted.advance_to(5.0 + 19)
            await settle(engine, store)
            assert receiver.messages == []  # the resident still has the rest of the window
            rebooted.advance_to(5.0 + 20)
            await receiver.wait_for(1)
            assert receiver.messages[0]["incident"]["id"] == before.id
