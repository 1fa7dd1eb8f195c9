"""The bus: in-order fan-out, loud handler failures, async streams with their undo."""

from __future__ import annotations

import asyncio

from hub import bus as bus_module
from hub.bus import Bus
from hub.events import Event, EventKind
from tests.conftest import T0


def ev(n: int) -> Event:
    return Event(kind=EventKind.MOTION, device=f"d{n}", room=None, value=True, wall=T0 + n, mono=float(n))


def test_handlers_see_every_event_in_order_and_a_failure_stops_nobody(caplog) -> None:
    bus = Bus()
    seen: list[str] = []

    def broken(event: Event) -> None:
        raise RuntimeError("handler bug")

    bus.subscribe("first", lambda e: seen.append(f"first:{e.device}"))
    bus.subscribe("broken", broken)
    undo = bus.subscribe("last", lambda e: seen.append(f"last:{e.device}"))
    bus.publish(ev(1))
    undo()
    undo()  # undoing twice is harmless
    bus.publish(ev(2))
    assert seen == ["first:d1", "last:d1", "first:d2"]
    assert bus.handler_errors == {"broken": 2}
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 2
    assert all(r.exc_info and r.handler == "broken" for r in errors)


async def test_stream_yields_published_events_and_unsubscribes_when_closed() -> None:
    bus = Bus()
    stream = bus.stream("web")
    first = asyncio.ensure_future(anext(stream))
    await asyncio.sleep(0)
    bus.publish(ev(1))
    bus.publish(ev(2))
    assert (await first).device == "d1"
    assert (await anext(stream)).device == "d2"
    await stream.aclose()
    bus.publish(ev(3))  # nobody listens any more: nothing queues up
    assert bus._handlers == []


async def test_a_stream_that_falls_behind_drops_its_oldest_and_says_so(monkeypatch, caplog) -> None:
    monkeypatch.setattr(bus_module, "STREAM_LIMIT", 3)
    bus = Bus()
    stream = bus.stream("slow-tab")
    first = asyncio.ensure_future(anext(stream))
    await asyncio.sleep(0)
    for n in range(6):
        bus.publish(ev(n))
    got = [(await first).device] + [(await anext(stream)).device for _ in range(2)]
    await stream.aclose()
    assert got == ["d3", "d4", "d5"]
    assert bus.stream_drops["slow-tab"] == 3
    assert sum("falls behind" in r.getMessage() for r in caplog.records) == 1
