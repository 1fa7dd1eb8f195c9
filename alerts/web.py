"""Acknowledge page and the escalation API, mounted into the hub's aiohttp app.

`/ack/<token>` is the one-tap link from a message. GET only shows what happened and a button;
the acknowledgement is the POST behind that button, because chat apps and mail scanners open
links to preview them and must not acknowledge an alarm nobody has read.
"""

from __future__ import annotations

import html
import json
from typing import TYPE_CHECKING, Any, Final

from aiohttp import web

from alerts.channels import KIND_NAMES
from alerts.escalation import InvalidToken

if TYPE_CHECKING:
    from alerts.escalation import EscalationEngine

ENGINE: Final = web.AppKey["EscalationEngine"]("escalation")
MAX_NOTE: Final = 2000

PAGE: Final = {
    "de": {
        "title": "Alarm bestätigen",
        "confirm": "Ich kümmere mich",
        "question": "Bitte bestätigen Sie nur, wenn Sie sich jetzt darum kümmern.",
        "done": "Danke. Der Alarm ist übernommen; die anderen werden nicht weiter gerufen.",
        "already": "Der Alarm wurde bereits übernommen.",
        "closed": "Dieser Alarm ist bereits erledigt.",
        "unknown": "Diesen Alarm kennt der Hub nicht.",
        "invalid": "Dieser Link ist ungültig oder abgelaufen.",
        "room": "Raum",
        "state": "Stand",
        "video": "Videoanruf starten",
    },
    "en": {
        "title": "Acknowledge alarm",
        "confirm": "I am on it",
        "question": "Please confirm only if you are taking care of it now.",
        "done": "Thank you. The alarm is yours; nobody else will be called.",
        "already": "Someone has already taken this alarm.",
        "closed": "This alarm is already resolved.",
        "unknown": "The hub does not know this alarm.",
        "invalid": "This link is invalid or has expired.",
        "room": "Room",
        "state": "State",
        "video": "Start video call",
    },
}


def add_routes(app: web.Application, engine: EscalationEngine) -> None:
    app[ENGINE] = engine
    app.router.add_get("/ack/{token}", ack_page)
    app.router.add_post("/ack/{token}", ack_confirm)
    app.router.add_get("/api/incidents", list_incidents)
    app.router.add_get("/api/incidents/{id}", incident_history)
    app.router.add_post("/api/incidents/{id}/ack", api_ack)
    app.router.add_post("/api/incidents/{id}/resolve", api_resolve)
    app.router.add_get("/api/outbox", outbox)
    if engine.channels.demo_receiver is not None:
        app.router.add_get("/api/demo/inbox", demo_inbox)


def _language(engine: EscalationEngine, contact_id: str | None) -> str:
    contact = next((c for c in engine.config.contacts if c.id == contact_id), None)
    return (contact.language if contact else None) or engine.config.flat.language


def _page(language: str, body: str, status: int = 200) -> web.Response:
    words = PAGE[language]
    text = f"""<!doctype html>
<html lang="{language}"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<title>{words["title"]} · aal-hub</title></head>
<body><main><h1>{words["title"]}</h1>{body}</main></body></html>"""
    response = web.Response(text=text, content_type="text/html", status=status)
    response.headers["Cache-Control"] = "no-store"
    return response


async def _incident(engine: EscalationEngine, incident_id: str) -> dict[str, Any] | None:
    return next(
        (i for i in await engine.incidents(open_only=False, limit=1000) if i["id"] == incident_id), None
    )


async def ack_page(request: web.Request) -> web.Response:
    engine = request.app[ENGINE]
    try:
        incident_id, contact = engine.verify(request.match_info["token"])
    except InvalidToken as err:
        language: str = engine.config.flat.language
        return _page(language, f"<p>{PAGE[language]['invalid']} ({html.escape(str(err))})</p>", 403)
    language = _language(engine, contact)
    words = PAGE[language]
    incident = await _incident(engine, incident_id)
    if incident is None:
        return _page(language, f"<p>{words['unknown']}</p>", 404)
    what = KIND_NAMES[language].get(incident["kind"], incident["kind"])
    demo = "<p><strong>DEMO</strong></p>" if engine.demo else ""
    summary = (
        f"{demo}<h2>{html.escape(what)}</h2><p>{html.escape(incident['reason'])}</p>"
        f"<p>{words['room']}: {html.escape(incident['room'] or '-')}<br>"
        f"{words['state']}: {html.escape(incident['state'])}</p>"
    )
    if incident["state"] != "open":
        key = "already" if incident["state"] == "acknowledged" else "closed"
        return _page(language, f"{summary}<p>{words[key]}</p>")
    form = (
        f'<p>{words["question"]}</p><form method="post">'
        f'<button type="submit">{words["confirm"]}</button></form>'
    )
    return _page(language, summary + form)


async def ack_confirm(request: web.Request) -> web.Response:
    engine = request.app[ENGINE]
    try:
        incident_id, contact = engine.verify(request.match_info["token"])
    except InvalidToken as err:
        language: str = engine.config.flat.language
        return _page(language, f"<p>{PAGE[language]['invalid']} ({html.escape(str(err))})</p>", 403)
    language = _language(engine, contact)
    outcome = await engine.acknowledge(incident_id, contact, "link")
    words = PAGE[language]
    key = "done" if outcome == "acknowledged" else outcome
    body = f"<p>{words[key]}</p>"
    video = engine.video_url(incident_id)  # the same link the message carried
    if outcome in {"acknowledged", "already"} and video:
        body += f'<p><a href="{html.escape(video)}">{words["video"]}</a></p>'
    return _page(language, body, 404 if outcome == "unknown" else 200)


async def list_incidents(request: web.Request) -> web.Response:
    engine = request.app[ENGINE]
    open_only = request.query.get("all") not in {"1", "true", "yes"}
    return web.json_response({"incidents": await engine.incidents(open_only=open_only)})


async def incident_history(request: web.Request) -> web.Response:
    engine = request.app[ENGINE]
    incident = await _incident(engine, request.match_info["id"])
    if incident is None:
        raise web.HTTPNotFound(reason="no such incident")
    incident["history"] = await engine.history(incident["id"])
    return web.json_response(incident)


async def _json_body(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    try:
        data = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise web.HTTPBadRequest(reason="expected a JSON object") from err
    if not isinstance(data, dict):
        raise web.HTTPBadRequest(reason="expected a JSON object")
    return data


def _by(data: dict[str, Any]) -> str:
    by = data.get("by", "web")
    if not isinstance(by, str) or not by.strip() or len(by) > 100:
        raise web.HTTPBadRequest(reason="`by` must be a name of at most 100 characters")
    return by.strip()


_STATUS: Final = {"acknowledged": 200, "resolved": 200, "already": 200, "closed": 409, "unknown": 404}


async def api_ack(request: web.Request) -> web.Response:
    engine = request.app[ENGINE]
    data = await _json_body(request)
    outcome = await engine.acknowledge(request.match_info["id"], _by(data), "web")
    return web.json_response({"outcome": outcome}, status=_STATUS[outcome])


async def api_resolve(request: web.Request) -> web.Response:
    engine = request.app[ENGINE]
    data = await _json_body(request)
    note = data.get("note")
    if not isinstance(note, str) or not note.strip() or len(note) > MAX_NOTE:
        raise web.HTTPBadRequest(reason=f"`note` is required: what happened (at most {MAX_NOTE} characters)")
    outcome = await engine.resolve(request.match_info["id"], _by(data), note.strip())
    return web.json_response({"outcome": outcome}, status=_STATUS[outcome])


async def outbox(request: web.Request) -> web.Response:
    engine = request.app[ENGINE]
    return web.json_response(
        {
            "pending": await engine.outbox.pending(),
            "failures": await engine.outbox.failures(),
            "status": engine.status(),
        }
    )


async def demo_inbox(request: web.Request) -> web.Response:
    receiver = request.app[ENGINE].channels.demo_receiver
    return web.json_response({"messages": receiver.as_json() if receiver else []})
