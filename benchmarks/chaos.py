"""Chaos: SIGKILL the real daemon at random instants and check that no alarm is lost.

    python benchmarks/chaos.py --kills 100 --json [--seed 1] [--incidents 300]

The parent runs a webhook receiver (which also answers 10 % of requests with HTTP 500) and
starts the daemon (`Hub` + `EscalationEngine`, real store, real clock) as a subprocess. The child
raises a scripted stream of incidents at fixed offsets from a common epoch (each once: on start it
raises those that are due and not yet in its database). The parent kills the child with SIGKILL
at N seeded random instants (0.2-2.5 s after each start, so kills land in start-up, in commits
and in sends alike) and restarts it at once. After the last kill the child runs until everything
is delivered, and the parent compares what the receiver got with the database and its audit log:

- `lost`: expected messages (one page per scripted incident, idempotency key `<id>/0/care`) that
  never arrived, and outbox rows neither delivered nor superseded;
- `duplicates`: deliveries of an idempotency key beyond the first (at-least-once allows them:
  a kill between the receiver's 200 and the outbox's bookkeeping).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import logging
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from aiohttp import web

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


# -- the child: the daemon under test ----------------------------------------------------------


async def _child(directory: Path) -> None:
    import msgspec

    from alerts.escalation import AlertSettings
    from alerts.outbox import RetryPolicy
    from hub.config import HubConfig, _dec_hook
    from hub.daemon import Hub
    from hub.events import Incident, IncidentKind, Severity

    logging.basicConfig(level=logging.CRITICAL)
    config = msgspec.convert(
        json.loads((directory / "config.json").read_text()), HubConfig, dec_hook=_dec_hook
    )
    script = json.loads((directory / "script.json").read_text())
    retry = RetryPolicy(base=0.5, cap=4.0, send_timeout=5.0)
    # Every scripted help call is its own page (no merging): more messages to lose.
    settings = AlertSettings(heartbeat_every=0, retry=retry, merge_same_kind=False)
    hub = Hub(
        config, db_path=directory / "hub.db", adapters=[], detectors=[], web=False, alert_settings=settings
    )

    async def feed() -> None:
        def existing(db: Any) -> set[str]:
            return {r[0] for r in db.execute("SELECT id FROM incidents").fetchall()}

        done = await hub.store.call(existing)
        epoch = script["epoch"]
        for number, offset in script["incidents"]:
            incident_id = f"chaos-{number:05d}"
            if incident_id in done:
                continue
            delay = epoch + offset - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            now = hub.clock.now()
            hub.raise_incident(
                Incident(
                    id=incident_id,
                    kind=IncidentKind.HELP,
                    severity=Severity.CRITICAL,
                    room=f"r{number}",
                    reason=f"scripted help call {number}",
                    wall=now.wall,
                    mono=now.mono,
                    detector="chaos",
                )
            )

    async with asyncio.TaskGroup() as group:
        hub_task = group.create_task(hub.run())
        await hub.ready.wait()
        feeder = group.create_task(feed())
        (directory / "ready").touch()
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, stop.set)
        await stop.wait()  # SIGTERM is the hub's own clean stop
        feeder.cancel()
        hub.request_stop()
        await hub_task


# -- the parent --------------------------------------------------------------------------------


class _Receiver:
    def __init__(self, rng: random.Random, fail_rate: float) -> None:
        self.delivered: collections.Counter[str] = collections.Counter()
        self.requests = 0
        self._rng = rng
        self._fail_rate = fail_rate

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests += 1
        if self._rng.random() < self._fail_rate:
            return web.Response(status=500)
        self.delivered[body["key"]] += 1
        return web.Response(text="ok")


def _config(url: str) -> dict[str, Any]:
    return {
        "flat": {"id": "chaos", "name": "Chaos"},
        "rooms": ["hall"],
        "contacts": [{"id": "care", "channels": [{"webhook": {"url": url, "secret": "chaos"}}]}],
        "escalation": {
            "default": {"cancel_window": 0, "steps": [{"notify": ["care"], "ack_timeout": 86400}]}
        },
    }


def _start(directory: Path) -> subprocess.Popen[bytes]:
    with contextlib.suppress(FileNotFoundError):
        (directory / "ready").unlink()
    return subprocess.Popen(
        [sys.executable, __file__, "--child", str(directory)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


async def _parent(kills: int, seed: int, incidents: int) -> dict[str, Any]:
    rng = random.Random(seed)
    receiver = _Receiver(random.Random(seed + 1), fail_rate=0.1)
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/hook"
    started = time.monotonic()
    try:
        with tempfile.TemporaryDirectory(prefix="aal-chaos-") as tmp:
            directory = Path(tmp)
            (directory / "config.json").write_text(json.dumps(_config(url)))
            kill_gaps = [rng.uniform(0.2, 2.5) for _ in range(kills)]
            span = max(5.0, sum(kill_gaps) * 0.8)
            offsets = sorted(rng.uniform(0, span) for _ in range(incidents))
            script = {"epoch": time.time() + 1.0, "incidents": list(enumerate(offsets))}
            (directory / "script.json").write_text(json.dumps(script))

            child = _start(directory)
            for gap in kill_gaps:
                await asyncio.sleep(gap)
                child.send_signal(signal.SIGKILL)
                await asyncio.to_thread(child.wait)
                child = _start(directory)
            expected = {f"chaos-{n:05d}/0/care" for n in range(incidents)}
            deadline = time.monotonic() + 60 + span
            while time.monotonic() < deadline and not expected <= set(receiver.delivered):  # noqa: ASYNC110
                await asyncio.sleep(0.2)  # bounded: the other side is another process
            await asyncio.sleep(0.5)
            child.send_signal(signal.SIGUSR1)
            try:
                await asyncio.wait_for(asyncio.to_thread(child.wait), 30)
            except TimeoutError:
                child.kill()
                await asyncio.to_thread(child.wait)
            report = _check(directory / "hub.db", expected, receiver)
    finally:
        await runner.cleanup()
    report.update(
        kills=kills,
        seed=seed,
        receiver_requests=receiver.requests,
        seconds=round(time.monotonic() - started, 1),
    )
    return report


def _check(db: Path, expected: set[str], receiver: _Receiver) -> dict[str, Any]:
    conn = sqlite3.connect(db)
    try:
        integrity = conn.execute("PRAGMA integrity_check").fetchone()[0]
        rows = conn.execute("SELECT idempotency_key, state FROM outbox").fetchall()
        queued = {
            r[0]
            for r in conn.execute("SELECT json_extract(detail, '$.key') FROM audit WHERE action = 'queued'")
        }
        sent_audit = {
            r[0]
            for r in conn.execute("SELECT json_extract(detail, '$.key') FROM audit WHERE action = 'sent'")
        }
        incidents = conn.execute("SELECT count(*) FROM incidents").fetchone()[0]
    finally:
        conn.close()
    delivered = set(receiver.delivered)
    undelivered_rows = {key for key, state in rows if state != "cancelled" and key not in delivered}
    lost = (expected - delivered) | undelivered_rows
    return {
        "incidents": incidents,
        "messages": len(rows),
        "delivered": len(delivered),
        "lost": len(lost),
        "duplicates": sum(n - 1 for n in receiver.delivered.values()),
        "queued_in_audit": len(queued),
        "sent_in_audit": len(sent_audit),
        "audit_consistent": queued == {key for key, _ in rows} and sent_audit <= delivered,
        "integrity": integrity,
        "lost_keys": sorted(lost)[:10],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=100)
    parser.add_argument("--incidents", type=int, default=300)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        asyncio.run(_child(args.child))
        return
    result = asyncio.run(_parent(args.kills, args.seed, args.incidents))
    print(json.dumps(result, indent=None if args.json else 2))


if __name__ == "__main__":
    main()
