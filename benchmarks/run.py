"""Speed and memory of the hub, measured and printed: `python benchmarks/run.py --json`.

Never a timed assertion in a test: these machines are shared and noisy. Each figure is measured
here, in one run, and printed with its target. Keys:

- events_per_s: Zigbee2MQTT-shaped JSON decoded into events -> bus -> rules -> store, sustained,
  one process (the real Hub with its store writer; measured until the last event is committed).
- rss_mb: resident memory of `aal-hub demo` after 60 s.
- startup_s: process start to systemd READY=1 (median of 5).
- idle_cpu_percent: CPU of an idle hub (a flat with no events) over 60 s after READY.
- replay_*_s: wall seconds to replay a real home's whole log through the hub.
Other modules in this folder add their own keys through `measure(quick)`.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Self

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from devices.base import Emit  # noqa: E402
from hub.clock import Instant, VirtualClock  # noqa: E402
from hub.config import parse_config  # noqa: E402
from hub.daemon import Hub  # noqa: E402
from hub.events import Event, EventKind  # noqa: E402

TARGETS = {
    "events_per_s": ">= 20000",
    "rss_mb": "<= 60",
    "startup_s": "<= 1.0",
    "idle_cpu_percent": "<= 0.03",
}

BENCH_FLAT = """
flat: {id: bench, name: Bench}
rooms: [hall, living, kitchen, bathroom, bedroom]
devices:
  - {id: hall-door, room: hall, kind: contact, role: front_door}
  - {id: living-motion, room: living, kind: motion}
  - {id: kitchen-motion, room: kitchen, kind: motion}
  - {id: bathroom-motion, room: bathroom, kind: motion}
  - {id: bathroom-leak, room: bathroom, kind: water_leak}
  - {id: bed-mat, room: bedroom, kind: pressure_mat, role: bed}
web: {port: 0}
"""

_DEVICES = [
    ("living-motion", "living", "occupancy"),
    ("kitchen-motion", "kitchen", "occupancy"),
    ("bathroom-motion", "bathroom", "occupancy"),
    ("hall-door", "hall", "contact"),
    ("bed-mat", "bedroom", "occupancy"),
]
_KINDS = {"occupancy": EventKind.MOTION, "contact": EventKind.CONTACT}


class PayloadAdapter:
    """Decodes Zigbee2MQTT-shaped JSON payloads into events, as fast as the hub takes them."""

    name = "bench"

    def __init__(self, payloads: list[tuple[int, bytes]], clock: VirtualClock) -> None:
        self.payloads = payloads
        self.clock = clock
        self.started = 0.0

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None

    async def run(self, emit: Emit) -> None:
        import msgspec

        decoder = msgspec.json.Decoder(dict[str, Any])
        self.started = time.perf_counter()
        start = self.clock.now()
        for i, (device_index, payload) in enumerate(self.payloads):
            device, room, key = _DEVICES[device_index]
            data = decoder.decode(payload)
            value = data[key]
            if key == "contact":
                value = not value  # Zigbee2MQTT: contact=true means closed
            mono = start.mono + i * 0.5
            self.clock.advance_to(mono)
            emit(
                Event(
                    kind=_KINDS[key],
                    device=device,
                    room=room,
                    value=value,
                    wall=start.wall + i * 0.5,
                    mono=mono,
                    source="bench",
                )
            )
            if i % 1000 == 999:
                await asyncio.sleep(0)  # let the store's futures and other services run


def measure_events_per_s(count: int) -> float:
    config = parse_config(BENCH_FLAT)
    payloads = [
        (
            i % len(_DEVICES),
            json.dumps(
                {_DEVICES[i % len(_DEVICES)][2]: (i // 5) % 2 == 0, "battery": 90, "linkquality": 120}
            ).encode(),
        )
        for i in range(count)
    ]

    async def go(db: Path) -> float:
        clock = VirtualClock(Instant(1_772_521_200.0, 0.0))
        adapter = PayloadAdapter(payloads, clock)
        hub = Hub(config, clock=clock, db_path=db, adapters=[adapter], web=False, stop_when_sources_end=True)
        await hub.run()  # returns after the last event is committed (the store flushes on stop)
        elapsed = time.perf_counter() - adapter.started
        if hub.bus.published != count:
            raise RuntimeError(f"only {hub.bus.published} of {count} events went through")
        return count / elapsed

    with tempfile.TemporaryDirectory() as tmp:
        return asyncio.run(go(Path(tmp) / "bench.db"))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start(args: list[str], tmp: Path) -> tuple[subprocess.Popen[bytes], float, float]:
    """Start the hub; return (process, seconds to READY, the monotonic instant of READY)."""
    path = tmp / f"notify-{time.monotonic_ns()}.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(30)
    env = {**os.environ, "NOTIFY_SOCKET": str(path)}
    env.pop("WATCHDOG_USEC", None)
    started = time.monotonic()
    process = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while not sock.recv(4096).startswith(b"READY=1"):
            pass
    finally:
        sock.close()
    ready = time.monotonic()
    return process, ready - started, ready


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _aal_hub() -> list[str]:
    return [sys.executable, "-m", "hub.cli", "--log-level", "warning"]


def measure_startup(tmp: Path, runs: int) -> float:
    times = []
    for i in range(runs):
        args = [*_aal_hub(), "demo", "--port", str(_free_port()), "--db", str(tmp / f"startup{i}.db")]
        process, seconds, _ = _start(args, tmp)
        _stop(process)
        times.append(seconds)
    return statistics.median(times)


def measure_rss(tmp: Path, seconds: float) -> float:
    args = [*_aal_hub(), "demo", "--port", str(_free_port()), "--db", str(tmp / "rss.db"), "--speed", "60"]
    process, _, _ = _start(args, tmp)
    try:
        time.sleep(seconds)
        status = Path(f"/proc/{process.pid}/status").read_text()
    finally:
        _stop(process)
    kb = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
    return kb / 1024


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure_idle_cpu(tmp: Path, seconds: float) -> float:
    config = tmp / "idle.yaml"
    config.write_text(
        BENCH_FLAT.replace("port: 0", f"port: {_free_port()}") + f"store: {{path: {tmp / 'idle.db'}}}\n"
    )
    process, _, _ = _start([*_aal_hub(), "run", "--config", str(config)], tmp)
    try:
        time.sleep(2.0)  # let start-up work (imports, first retention pass) finish
        before, t0 = _cpu_seconds(process.pid), time.monotonic()
        time.sleep(seconds)
        after, t1 = _cpu_seconds(process.pid), time.monotonic()
    finally:
        _stop(process)
    return 100.0 * (after - before) / (t1 - t0)


def measure_replays(data: Path) -> dict[str, float]:
    from devices.replay import load_dataset
    from hub.cli import replay_home

    results: dict[str, float] = {}
    for key, folder in (
        ("replay_ordonez_a_s", "ordonez"),
        ("replay_kasteren_a_s", "kasteren"),
        ("replay_kasteren_b_s", "kasteren/houseB"),
    ):
        if not (data / folder).exists():
            continue
        started = time.perf_counter()
        dataset = load_dataset(data / folder)
        asyncio.run(replay_home(dataset, speed=None, db=None, port=None))
        results[key] = round(time.perf_counter() - started, 3)
    return results


EXTRA_MODULES = ("adapters", "latency")  # their measure(quick) adds keys


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--quick", action="store_true", help="shorter runs (a smoke test, not a measurement)")
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    args = parser.parse_args()
    result: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        result["events_per_s"] = round(measure_events_per_s(20_000 if args.quick else 200_000))
        result["startup_s"] = round(measure_startup(tmp, 2 if args.quick else 5), 3)
        result["rss_mb"] = round(measure_rss(tmp, 5 if args.quick else 60), 1)
        result["idle_cpu_percent"] = round(measure_idle_cpu(tmp, 5 if args.quick else 60), 4)
        result.update(measure_replays(args.data))
    sys.path.insert(0, str(Path(__file__).parent))
    for name in EXTRA_MODULES:
        if not (Path(__file__).parent / f"{name}.py").exists():
            continue
        module = importlib.import_module(name)
        result.update(module.measure(quick=args.quick))
    result["targets"] = TARGETS
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>28}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
