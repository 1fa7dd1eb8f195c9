"""End-to-end alarm latency: a Zigbee2MQTT help-button message on a real Mosquitto to the first
webhook message at a real HTTP receiver.

The hub is the real daemon in its own process (`aal-hub run` with a config file), as a flat runs
it: Mosquitto -> `devices.mqtt.Zigbee2MqttAdapter` -> bus -> rule engine (`rules.fall.FallDetector`
raises HELP) -> incident desk (the incident and its first escalation step, outbox row and audit
committed with fsync in one transaction; cancel window 0) -> outbox sender -> signed webhook POST
-> receiver. This process plays the outside world: the broker, the buttons, the care service.
Each button press comes from its own device in its own room, so neither the desk nor the
detector folds presses together; `alerts.merge_same_kind` is off for the same reason.

    python benchmarks/latency.py [--quick] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiomqtt
import yaml
from aiohttp import web

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.brokers import Mosquitto  # noqa: E402

PAYLOAD = json.dumps({"action": "single", "battery": 97, "linkquality": 150}).encode()


def _config(devices: int, broker: str, receiver: str, db: Path, port: int) -> dict[str, Any]:
    return {
        "flat": {"id": "bench", "name": "Benchmark"},
        "rooms": [f"r{i}" for i in range(devices)],
        "radios": {"zigbee2mqtt": {"broker": broker}},
        "devices": [
            {
                "id": f"btn{i}",
                "room": f"r{i}",
                "kind": "button",
                "role": "help_button",
                "zigbee2mqtt": f"btn_{i}",
            }
            for i in range(devices)
        ],
        "contacts": [{"id": "care", "channels": [{"webhook": {"url": receiver, "secret": "bench"}}]}],
        "escalation": {"default": {"cancel_window": 0, "steps": [{"notify": ["care"], "ack_timeout": 3600}]}},
        "alerts": {"heartbeat_every": 0, "merge_same_kind": False},
        "store": {"path": str(db)},
        "web": {"port": port},
    }


HUB_CLI = (sys.executable, "-m", "hub.cli", "--log-level")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _start_hub(config_file: Path, tmp: Path) -> subprocess.Popen[bytes]:
    """The real daemon; returns once it told systemd's notify socket READY=1."""
    notify = tmp / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(notify))
    sock.setblocking(False)
    env = {**os.environ, "NOTIFY_SOCKET": str(notify), "PYTHONPATH": str(REPO)}
    env.pop("WATCHDOG_USEC", None)
    hub = subprocess.Popen(  # noqa: ASYNC220 (start-up only, not on a measured path)
        [*HUB_CLI, os.environ.get("AAL_BENCH_LOG", "error"), "run", "--config", str(config_file)],
        env=env,
        cwd=REPO,
    )
    loop = asyncio.get_running_loop()
    try:
        while not (await asyncio.wait_for(loop.sock_recv(sock, 4096), 60)).startswith(b"READY=1"):
            pass
    finally:
        sock.close()
    return hub


class _Receiver:
    def __init__(self) -> None:
        self.arrived: dict[str, float] = {}
        self.changed = asyncio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        if body["type"] == "alert":
            self.arrived.setdefault(body["incident"]["evidence"]["device"], time.perf_counter())
            self.changed.set()
        return web.Response(text="ok")

    async def wait(self, devices: list[str], within: float) -> None:
        deadline = time.perf_counter() + within
        while any(d not in self.arrived for d in devices):
            self.changed.clear()
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), remaining)


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def _measure(quick: bool) -> dict[str, Any]:
    latency_n, spacing = (200, 0.02) if quick else (1000, 0.05)
    burst_n = 200
    rates = [250, 500, 1000] if quick else [250, 500, 750, 1000, 1500, 2000, 3000, 4000]
    window = 0.5 if quick else 1.0
    devices = latency_n + burst_n + int(sum(r * window for r in rates)) + 10
    with tempfile.TemporaryDirectory(prefix="aal-bench-") as tmp:
        (Path(tmp) / "mq").mkdir()
        broker = Mosquitto(Path(tmp) / "mq")
        broker.start()
        receiver = _Receiver()
        app = web.Application()
        app.router.add_post("/hook", receiver.handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        url = f"http://127.0.0.1:{runner.addresses[0][1]}/hook"
        try:
            return await _run(
                broker, receiver, url, Path(tmp), devices, latency_n, spacing, burst_n, rates, window
            )
        finally:
            await runner.cleanup()
            broker.stop()


async def _run(
    broker: Mosquitto,
    receiver: _Receiver,
    url: str,
    tmp: Path,
    devices: int,
    latency_n: int,
    spacing: float,
    burst_n: int,
    rates: list[int],
    window: float,
) -> dict[str, Any]:
    config_file = tmp / "flat.yaml"
    config = _config(devices, broker.url, url, tmp / "hub.db", _free_port())
    config_file.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    published: dict[str, float] = {}
    next_device = iter(range(devices))
    hub = await _start_hub(config_file, tmp)
    try:
        async with aiomqtt.Client(broker.host, broker.port, identifier="bench-publisher") as mqtt:

            async def press() -> str:
                i = next(next_device)
                published[f"btn{i}"] = time.perf_counter()
                await mqtt.publish(f"zigbee2mqtt/btn_{i}", PAYLOAD)
                return f"btn{i}"

            async def settle() -> None:
                await asyncio.sleep(0.5)  # let the hub's bookkeeping of what just arrived finish

            # Warm-up: connections, caches, the adapter's subscription.
            warm = [await press() for _ in range(5)]
            await receiver.wait(warm, 30)
            await settle()

            # 1. Latency: one press every `spacing` seconds.
            pressed = []
            start = time.perf_counter()
            for n in range(latency_n):
                await asyncio.sleep(max(0.0, start + n * spacing - time.perf_counter()))
                pressed.append(await press())
            await receiver.wait(pressed, 10)
            latency = [(receiver.arrived[d] - published[d]) * 1000 for d in pressed if d in receiver.arrived]
            lost = len(pressed) - len(latency)
            await settle()

            # 2. Burst: all at once.
            burst = [await press() for _ in range(burst_n)]
            await receiver.wait(burst, 30)
            burst_ms = [(receiver.arrived[d] - published[d]) * 1000 for d in burst if d in receiver.arrived]
            burst_lost = len(burst) - len(burst_ms)
            await settle()

            # 3. Saturation: the highest steady rate with p99 < 50 ms and nothing lost.
            saturation = 0.0
            steps: dict[str, float] = {}
            for rate in rates:
                tick = 0.005
                per_tick = rate * tick
                batch = []
                start = time.perf_counter()
                owed = 0.0
                ticks = round(window / tick)
                for t in range(ticks):
                    await asyncio.sleep(max(0.0, start + t * tick - time.perf_counter()))
                    owed += per_tick
                    while owed >= 1:
                        owed -= 1
                        batch.append(await press())
                await receiver.wait(batch, 10)
                times = [(receiver.arrived[d] - published[d]) * 1000 for d in batch if d in receiver.arrived]
                p99 = _p(times, 0.99) if times else float("inf")
                steps[str(rate)] = round(p99, 2)
                await settle()
                if len(times) < len(batch) or p99 >= 50:
                    break
                saturation = float(rate)
    finally:
        hub.terminate()
        try:
            hub.wait(30)
        except subprocess.TimeoutExpired:
            hub.kill()
            hub.wait()
    return {
        "latency_p50_ms": round(statistics.median(latency), 3),
        "latency_p99_ms": round(_p(latency, 0.99), 3),
        "burst_p99_ms": round(_p(burst_ms, 0.99), 3),
        "saturation_events_per_s": saturation,
        "latency_events": float(len(pressed)),
        "latency_lost": float(lost),
        "burst_lost": float(burst_lost),
        "saturation_p99_ms_by_rate": steps,
        "source": "aal-hub run (daemon process) with devices.mqtt.Zigbee2MqttAdapter",
    }


def measure(quick: bool = False) -> dict[str, float]:
    """The end-to-end keys for `benchmarks/run.py --json` (plus a few details)."""
    return asyncio.run(_measure(quick))  # type: ignore[return-value]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = measure(quick=args.quick)
    print(json.dumps(result, indent=None if args.json else 2))


if __name__ == "__main__":
    main()
