"""Helpers for the alerts tests: a real HTTP receiver, configs, and a running engine."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from aiohttp import web

from alerts.escalation import AlertSettings, EscalationEngine
from alerts.outbox import RetryPolicy
from hub.clock import Clock
from hub.config import HubConfig, parse_config
from hub.events import Incident, IncidentKind, Severity
from hub.store import Store


class Receiver:
    """A webhook receiver on a free loopback port; `status`/`delay` simulate faults."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.status = 200
        self.fail_next = 0  # answer this many requests with 500 first
        self.delay = 0.0
        self.arrived = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.requests.append((dict(request.headers), body))
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail_next > 0:
            self.fail_next -= 1
            return web.Response(status=500, text="receiver is down")
        if self.status != 200:
            return web.Response(status=self.status)
        self.messages.append(json.loads(body))
        self.arrived.set()
        return web.Response(text="ok")

    async def __aenter__(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def wait_for(self, count: int, within: float = 5.0) -> list[dict[str, Any]]:
        async with asyncio.timeout(within):
            while len(self.messages) < count:
                self.arrived.clear()
                await self.arrived.wait()
        return self.messages


def config_for(
    daughter: str,
    neighbour: str,
    care: str,
    *,
    extra: str = "",
    mode: str = "live",
    policy: str | None = None,
) -> HubConfig:
    policy = (
        policy
        if policy is not None
        else """
escalation:
  default:
    cancel_window: 60s
    steps:
      - {notify: [daughter], ack_timeout: 5m}
      - {notify: [neighbour, daughter], ack_timeout: 5m}
      - {notify: [care-service], repeat_every: 10m}
  fall: {cancel_window: 30s}
  help: {cancel_window: 0s}
"""
    )
    return parse_config(
        f"""
flat: {{id: test-flat, name: Testwohnung, mode: {mode}}}
rooms: [hall, bathroom, bedroom]
contacts:
  - {{id: daughter, name: Anna, channels: [{daughter}]}}
  - {{id: neighbour, name: Herr Meier, language: en, channels: [{neighbour}], available: ["08:00", "21:00"]}}
  - {{id: care-service, channels: [{care}]}}
{policy}
telemedicine: {{video: {{jitsi: "https://meet.example.org"}}}}
web: {{port: 8080}}
{extra}
""",
        "alerts-test.yaml",
    )


def webhook_config(receiver: Receiver, **kwargs: Any) -> HubConfig:
    return config_for(
        f'{{webhook: {{url: "{receiver.url}/daughter", secret: s3cret}}}}',
        f'{{webhook: "{receiver.url}/neighbour"}}',
        f'{{webhook: "{receiver.url}/care"}}',
        **kwargs,
    )


class RecordingAnnouncer:
    def __init__(self) -> None:
        self.said: list[tuple[str, str]] = []

    async def announce(self, text: str, language: str) -> None:
        self.said.append((text, language))


def incident(
    clock: Clock,
    kind: IncidentKind = IncidentKind.HELP,
    room: str | None = "bathroom",
    severity: Severity = Severity.CRITICAL,
) -> Incident:
    now = clock.now()
    return Incident(
        kind=kind,
        severity=severity,
        room=room,
        reason=f"{kind} in {room}",
        wall=now.wall,
        mono=now.mono,
        detector="test",
        evidence={"device": "pendant"},
    )


FAST_RETRY = RetryPolicy(base=1.0, cap=8.0, jitter=0.0, per_channel=2, send_timeout=2.0)


@contextlib.asynccontextmanager
async def running_engine(
    config: HubConfig,
    clock: Clock,
    path: Path,
    *,
    settings: AlertSettings | None = None,
    store: Store | None = None,
    closed: list[str] | None = None,
) -> AsyncIterator[tuple[EscalationEngine, Store, RecordingAnnouncer]]:
    announcer = RecordingAnnouncer()
    settings = settings or AlertSettings(heartbeat_every=0, retry=FAST_RETRY, public_url="https://hub.test")
    async with contextlib.AsyncExitStack() as stack:
        if store is None:
            store = await stack.enter_async_context(Store(path))
        engine = EscalationEngine(
            config,
            clock,
            store,
            settings=settings,
            announcer=announcer,
            on_closed=closed.append if closed is not None else None,
        )
        task = asyncio.create_task(engine.run())
        try:
            async with asyncio.timeout(5):
                await engine.ready.wait()
            yield engine, store, announcer
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def raise_incident(engine: EscalationEngine, store: Store, inc: Incident) -> None:
    """What the hub's incident desk does: commit, then call the hook."""
    await store.record_incident(inc)
    await engine.on_incident(inc)


async def settle(engine: EscalationEngine, store: Store, rounds: int = 3) -> None:
    """Let queued commands, commits and due sends run to completion."""
    for _ in range(rounds):
        for _ in range(100):
            if engine._queue.empty() and not engine.outbox._inflight:
                break
            await asyncio.sleep(0.005)
        await store.flush()
        await asyncio.sleep(0.01)


async def audit_actions(store: Store, incident_id: str | None = None) -> list[str]:
    def query(db: Any) -> list[str]:
        if incident_id is None:
            return [r[0] for r in db.execute("SELECT action FROM audit ORDER BY id").fetchall()]
        return [
            r[0]
            for r in db.execute("SELECT action FROM audit WHERE incident_id = ? ORDER BY id", [incident_id])
        ]

    return await store.call(query)
