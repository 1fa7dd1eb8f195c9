"""The acknowledge page and the escalation API over real HTTP (aiohttp test server)."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from alerts.web import add_routes
from hub.clock import VirtualClock
from tests.alerts_receivers import Receiver, incident, raise_incident, running_engine, settle, webhook_config

pytestmark = pytest.mark.timeout(60)


async def test_link_shows_a_page_and_only_the_button_acknowledges(
    tmp_path: Path, clock: VirtualClock
) -> None:
    async with (
        Receiver() as receiver,
        running_engine(webhook_config(receiver), clock, tmp_path / "hub.db") as (engine, store, _),
    ):
        app = web.Application()
        add_routes(app, engine)
        async with TestClient(TestServer(app)) as client:
            help_ = incident(clock)
            await raise_incident(engine, store, help_)
            [message] = await receiver.wait_for(1)
            path = "/ack/" + message["ack_url"].rsplit("/", 1)[1]

            page = await client.get(path)  # a link preview must not acknowledge
            assert page.status == 200
            text = await page.text()
            assert "Ich kümmere mich" in text
            assert "Hilferuf" in text
            assert 'method="post"' in text
            assert (await engine.incidents())[0]["state"] == "open"

            done = await client.post(path)
            assert done.status == 200
            assert "Danke" in await done.text()
            assert "https://meet.example.org/" in await done.text()
            [listed] = (await (await client.get("/api/incidents")).json())["incidents"]
            assert listed["state"] == "acknowledged"
            assert listed["escalation"]["acknowledged_by"] == "daughter"
            assert "bereits übernommen" in await (await client.get(path)).text()

            forged = path[:-3] + ("AAA" if not path.endswith("AAA") else "BBB")
            assert (await client.get(forged)).status == 403
            assert (await client.post(forged)).status == 403
            await settle(engine, store)


async def test_api_ack_resolve_and_outbox(tmp_path: Path, clock: VirtualClock) -> None:
    async with Receiver() as receiver:
        receiver.status = 503
        async with running_engine(webhook_config(receiver), clock, tmp_path / "hub.db") as (engine, store, _):
            app = web.Application()
            add_routes(app, engine)
            async with TestClient(TestServer(app)) as client:
                help_ = incident(clock)
                await raise_incident(engine, store, help_)
                await settle(engine, store)
                outbox = await (await client.get("/api/outbox")).json()
                assert len(outbox["pending"]) == 1
                assert "HTTP 503" in outbox["failures"][0]["last_error"]

                bad = await client.post(f"/api/incidents/{help_.id}/resolve", json={"by": "Anna"})
                assert bad.status == 400  # a note is required
                ack = await client.post(f"/api/incidents/{help_.id}/ack", json={"by": "Anna"})
                assert (ack.status, (await ack.json())["outcome"]) == (200, "acknowledged")
                resolved = await client.post(
                    f"/api/incidents/{help_.id}/resolve",
                    json={"by": "Anna", "note": "Fehlalarm, Knopf gedrückt"},
                )
                assert (await resolved.json())["outcome"] == "resolved"
                again = await client.post(f"/api/incidents/{help_.id}/ack", json={"by": "Anna"})
                assert again.status == 409
                missing = await client.post("/api/incidents/nope/ack", json={"by": "Anna"})
                assert missing.status == 404
                history = await (await client.get(f"/api/incidents/{help_.id}")).json()
                assert [h["action"] for h in history["history"] if h["actor"] == "Anna"] == [
                    "acknowledged",
                    "resolved",
                ]
                assert (await (await client.get("/api/incidents")).json())["incidents"] == []
                await settle(engine, store)
