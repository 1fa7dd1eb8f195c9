"""The web skeleton: aiohttp under AppRunner inside the daemon's TaskGroup.

`/` shows the flat's live state, `/api/state` the same as JSON, `/api/stream` pushes changes as
server-sent events, `/api/health` reports each service. The full caregiver, resident and visitor
faces are later issues; they hang off the same app and reach the hub through `HUB`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import html
import json
import logging
import weakref
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import TYPE_CHECKING, Any, Final

from aiohttp import web

from hub.events import Event, EventKind

if TYPE_CHECKING:
    from hub.daemon import Hub

log = logging.getLogger(__name__)

HUB: Final = web.AppKey["Hub"]("hub")
STREAMS: Final = web.AppKey["weakref.WeakSet[web.StreamResponse]"]("streams")

_CSP: Final = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def _guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Security headers on every answer; API errors as JSON with a clear message.

    A page on another site must not press the kiosk's buttons or acknowledge an alarm through a
    visitor's browser: state-changing requests that come with a foreign Origin are refused.
    """
    try:
        if request.method not in {"GET", "HEAD", "OPTIONS"} and not _same_origin(request):
            raise web.HTTPForbidden(reason="cross-site request refused")
        if request.path.startswith(_PROTECTED) and not _authorised(request):
            raise web.HTTPUnauthorized(
                reason="this API needs `Authorization: Bearer <web.api_token>` from beyond this machine"
            )
        response = await handler(request)
    except web.HTTPException as err:
        if not request.path.startswith("/api/"):
            raise
        response = web.json_response({"error": err.reason, "status": err.status}, status=err.status)
    response.headers.setdefault("Content-Security-Policy", _CSP)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    return response


# What changes the state of alarms or the flat. On the hub itself (loopback) no token is needed:
# the local kiosk and the CLI are the resident's and installer's own.
_PROTECTED: Final = ("/api/incidents", "/api/outbox", "/api/buttons", "/api/devices", "/api/demo")


def _authorised(request: web.Request) -> bool:
    if request.remote in {"127.0.0.1", "::1"}:
        return True
    token = request.app[HUB].config.web.api_token
    given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
    return bool(token) and hmac.compare_digest(given.encode(), (token or "").encode())


def _same_origin(request: web.Request) -> bool:
    origin = request.headers.get("Origin")
    if origin is None:
        return True  # not a browser's cross-site request (curl, the CLI, a care service)
    return origin.split("://", 1)[-1].rstrip("/") == request.host


def build_app(hub: Hub) -> web.Application:
    app = web.Application(middlewares=[_guard], client_max_size=64 * 1024)
    app[HUB] = hub
    app[STREAMS] = weakref.WeakSet()
    app.router.add_get("/", index)
    app.router.add_get("/api/health", health)
    app.router.add_get("/api/state", state)
    app.router.add_get("/api/privacy", privacy_json)
    app.router.add_get("/datenschutz", privacy_page)
    app.router.add_get("/api/stream", stream)
    app.router.add_post("/api/buttons/{button}", button)
    app.router.add_post("/api/devices/pair", pair)
    if hub.escalation is not None:
        from alerts.web import add_routes

        add_routes(app, hub.escalation)
    static = resources.files("hub") / "web_static"
    app.router.add_static("/static/", str(static), append_version=True)
    app.on_shutdown.append(_close_streams)
    return app


async def serve(hub: Hub) -> None:
    """Run the web server until cancelled (a TaskGroup service)."""
    runner = web.AppRunner(build_app(hub), access_log=None, handler_cancellation=True)
    await runner.setup()
    try:
        site = web.TCPSite(runner, hub.config.web.host, hub.web_port, reuse_address=True)
        await site.start()
        sockets = list(runner.addresses)
        hub.bound_port = int(sockets[0][1]) if sockets else hub.web_port
        hub.web_settled.set()
        log.info("web ui", extra={"url": f"http://{hub.config.web.host}:{hub.bound_port}/"})
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


async def _close_streams(app: web.Application) -> None:
    # Open event streams would hold shutdown for 60 s unless woken.
    streams: weakref.WeakSet[web.StreamResponse] = app[STREAMS]
    for response in list(streams):
        with contextlib.suppress(Exception):
            await response.write_eof()


async def index(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    snapshot = hub.state.as_json()
    demo = snapshot["flat"]["mode"] == "demo"
    rooms = "".join(
        f'<section class="room" data-room="{html.escape(r["name"])}"><h2>{html.escape(r["name"])}</h2>'
        f'<ul class="devices"></ul></section>'
        for r in snapshot["rooms"]
    )
    body = f"""<!doctype html>
<html lang="{hub.config.flat.language}"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(hub.config.flat.name)} · aal-hub</title>
<link rel="stylesheet" href="{_static(request, "hub.css")}"></head>
<body><header><h1>{html.escape(hub.config.flat.name)}</h1>
{'<p class="demo">DEMO</p>' if demo else ""}<p id="clock" aria-live="polite"></p></header>
<main><section id="incidents" aria-live="assertive"></section><div id="rooms">{rooms}</div></main>
<footer><a href="/api/health">health</a></footer>
<script src="{_static(request, "hub.js")}" defer></script></body></html>"""
    return web.Response(text=body, content_type="text/html")


def _static(request: web.Request, name: str) -> str:
    return (
        str(request.app.router["static"].url_for(filename=name))
        if "static" in request.app.router
        else (f"/static/{name}")
    )


def _days(seconds: float) -> int:
    return round(seconds / 86400)


def _privacy(hub: Hub) -> dict[str, Any]:
    retention = hub.config.retention
    return {
        "raw_events_days": _days(retention.raw_events.seconds),
        "activity_counts_days": _days(retention.activity.seconds),
        "incidents_days": _days(retention.incidents.seconds),
        "sensors": [
            {"name": d.name or d.id, "room": d.room, "kind": str(d.kind)} for d in hub.config.devices
        ],
        "contacts": [c.name or c.id for c in hub.config.contacts],
        "stored_on": "this hub only",
    }


async def privacy_json(request: web.Request) -> web.Response:
    return web.json_response(_privacy(request.app[HUB]))


async def privacy_page(request: web.Request) -> web.Response:
    """What is sensed, who is told, and how long anything is kept: in the resident's words."""
    info = _privacy(request.app[HUB])
    sensors = "".join(
        f"<li>{html.escape(s['name'])} ({html.escape(s['room'] or 'am Körper')})</li>"
        for s in info["sensors"]
    )
    contacts = ", ".join(html.escape(c) for c in info["contacts"]) or "niemand"
    body = f"""<!doctype html><html lang="de"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>Datenschutz</title>
<link rel="stylesheet" href="/static/hub.css"></head><body><main class="privacy">
<h1>Was der Hub erfasst</h1><ul>{sensors}</ul>
<h2>Wie lange</h2>
<p>Einzelne Sensorereignisse werden nach {info["raw_events_days"]} Tagen gelöscht.
Danach bleibt nur, wie oft pro Stunde und Raum sich etwas bewegt hat
({info["activity_counts_days"]} Tage). Alarme und ihr Verlauf werden {info["incidents_days"]} Tage
aufbewahrt.</p>
<h2>Wer benachrichtigt wird</h2><p>Nur bei einem Alarm: {contacts}.</p>
<p>Alle Daten bleiben auf diesem Gerät in Ihrer Wohnung.</p></main></body></html>"""
    return web.Response(text=body, content_type="text/html")


async def health(request: web.Request) -> web.Response:
    report = request.app[HUB].health()
    return web.json_response(report, status=200 if report["status"] == "ok" else 503)


async def state(request: web.Request) -> web.Response:
    return web.json_response(request.app[HUB].state.as_json())


async def stream(request: web.Request) -> web.StreamResponse:
    """Server-sent events: one `event` line per sensor event; the page re-reads the state."""
    hub = request.app[HUB]
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await response.prepare(request)
    request.app[STREAMS].add(response)
    async for event in hub.bus.stream("web-stream"):
        payload = {"kind": str(event.kind), "device": event.device, "room": event.room, "value": event.value}
        await response.write(f"data: {json.dumps(payload)}\n\n".encode())
    return response


async def pair(request: web.Request) -> web.Response:
    """Open the Zigbee network for joining (the caregiver's or installer's action)."""
    hub = request.app[HUB]
    try:
        body = await request.json() if request.can_read_body else {}
        seconds = int(body.get("seconds", 120))
    except (ValueError, TypeError, AttributeError):
        raise web.HTTPBadRequest(reason='expected JSON like {"seconds": 120}') from None
    if not 0 <= seconds <= 254:
        raise web.HTTPBadRequest(reason="seconds must lie between 0 and 254")
    try:
        radios = await hub.permit_join(seconds)
    except Exception as err:
        log.exception("permit join failed")
        raise web.HTTPServiceUnavailable(reason=f"the radio cannot open joining: {err}") from err
    if not radios:
        raise web.HTTPConflict(reason="no radio that pairs is configured (radios.zigbee)")
    return web.json_response({"seconds": seconds, "radios": radios})


_BUTTONS: Final = {"help": EventKind.HELP, "ok": EventKind.RESIDENT_OK, "checkin": EventKind.CHECKIN}


async def button(request: web.Request) -> web.Response:
    """The kiosk's buttons: "Hilfe", "Mir geht es gut", the daily check-in."""
    hub = request.app[HUB]
    kind = _BUTTONS.get(request.match_info["button"])
    if kind is None:
        raise web.HTTPNotFound(reason=f"unknown button; expected one of: {', '.join(_BUTTONS)}")
    now = hub.clock.now()
    hub.emit(
        Event(kind=kind, device="kiosk", room=None, value="kiosk", wall=now.wall, mono=now.mono, source="web")
    )
    return web.json_response({"ok": True, "button": request.match_info["button"]})
