"""Throughput and memory of the radio adapters (issue 3).

- `z2m_messages_per_s`: Zigbee2MQTT state messages published to a real Mosquitto (QoS 1) and
  decoded by `Zigbee2MqttAdapter` into hub events, end to end (target >= 5000/s).
- `ble_adverts_per_s`: BTHome advertisements parsed (a mix of plaintext and AES-CCM encrypted
  published vectors; target >= 50000/s); `ble_adverts_handled_per_s` adds the adapter's mapping.
- `zigbee_frames_per_s`: raw ZCL frames through zigpy's `packet_received` and the adapter's
  zigpy-based decoding, on the virtual radio of the tests.
- `adapter_rss_mb_<name>`: resident memory added by importing and starting each adapter, each in a
  fresh interpreter.

`measure()` prints nothing; `python benchmarks/adapters.py --json` prints the figures.
"""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

T0 = 1772521200.0


def _z2m_config(url: str) -> Any:
    from hub.config import parse_config

    return parse_config(
        f"""
flat: {{id: bench, name: Bench}}
rooms: [hall]
radios:
  zigbee2mqtt: {{broker: "{url}", base_topic: z2m}}
devices:
  - {{id: hall-motion, room: hall, kind: motion, zigbee2mqtt: hall motion}}
""",
        "bench.yaml",
    )


async def _z2m(count: int, url: str) -> float:
    """Messages queued for the hub's persistent session, then drained and decoded: the hub's side
    of the pipe (broker -> aiomqtt -> JSON -> events), without the test publisher's own cost."""
    import aiomqtt

    from devices.mqtt import Zigbee2MqttAdapter
    from hub.clock import RealClock
    from hub.events import Event, EventKind

    done = asyncio.Event()
    seen = 0

    def emit(event: Event) -> None:
        nonlocal seen
        if event.kind is EventKind.MOTION:
            seen += 1
            if seen == count:
                done.set()

    config = _z2m_config(url)
    host, port = url.removeprefix("mqtt://").split(":")
    async with Zigbee2MqttAdapter(config, RealClock(), client_id="bench-hub"):
        pass  # the session and its subscriptions now exist at the broker
    payloads = [
        json.dumps(
            {"battery": 100, "illuminance": 20 + i % 7, "linkquality": 120, "occupancy": i % 2 == 0}
        ).encode()
        for i in range(count)
    ]
    quiet = logging.getLogger("benchmarks.publisher")
    quiet.setLevel(logging.ERROR)  # aiomqtt warns about queued publishes
    async with aiomqtt.Client(host, int(port), identifier="bench-publisher", logger=quiet) as pub:
        for i in range(0, count, 100):
            await asyncio.gather(*(pub.publish("z2m/hall motion", p, qos=1) for p in payloads[i : i + 100]))
    adapter = Zigbee2MqttAdapter(config, RealClock(), client_id="bench-hub")
    start = time.perf_counter()
    async with adapter:
        task = asyncio.create_task(adapter.run(emit))
        async with asyncio.timeout(120):
            await done.wait()
        elapsed = time.perf_counter() - start
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    return count / elapsed


def _ble(count: int) -> tuple[float, float]:
    from devices.ble import BleAdapter
    from devices.bthome import encrypt, parse
    from hub.clock import Instant, VirtualClock
    from hub.config import parse_config

    key = bytes.fromhex("231d39c1d7cc1ab1aee224cd096db932")
    pendant = "C0:FF:EE:00:00:01"
    plain = [
        b"\x40\x00\x09\x01\x5d\x02\x5d\x09\x03\xb7\x18",
        b"\x40\x02\xca\x09\x03\xbf\x13",
        b"\x40\x00\x2e\x01\x64\x1e\x01\x2e\x34\x45\x16\x01",
        b"\x40\x3a\x04",
    ]
    sealed = [
        encrypt(bytes([0x00, i % 256, 0x01, 0x58, 0x3A, 0x01]), address=pendant, key=key, counter=i)
        for i in range(64)
    ]
    start = time.perf_counter()
    for i in range(count):
        if i % 5 == 4:
            parse(sealed[i % 64], address=pendant, key=key)
        else:
            parse(plain[i % 4], address="A4:C1:38:8D:18:B2")
    parse_rate = count / (time.perf_counter() - start)

    config = parse_config(
        """
flat: {id: bench, name: Bench}
rooms: [living]
devices:
  - {id: climate, room: living, kind: climate, ble: "A4:C1:38:8D:18:B2"}
""",
        "bench.yaml",
    )
    adapter = BleAdapter(config, VirtualClock(Instant(T0, 0.0)))
    adapter._emit = lambda _event: None
    adverts = [
        bytes([0x40, 0x00, i % 256, 0x02, (2000 + i % 300) & 0xFF, (2000 + i % 300) >> 8]) for i in range(256)
    ]
    start = time.perf_counter()
    for i in range(count):
        adapter.handle("A4:C1:38:8D:18:B2", adverts[i % 256])
    return parse_rate, count / (time.perf_counter() - start)


async def _zigbee(count: int, directory: Path) -> float:
    from devices.zigbee import ZigbeeAdapter
    from hub.clock import RealClock
    from hub.events import Event
    from tests.test_zigbee import Hardware, hue_motion, make_config

    hardware = Hardware()
    hue = hardware.add(hue_motion())
    joined = asyncio.Event()
    done = asyncio.Event()
    decoded = 0

    def emit(event: Event) -> None:
        nonlocal decoded
        if event.device == "hall-motion" and event.kind != "availability":
            decoded += 1
            if decoded == count:
                done.set()

    adapter = ZigbeeAdapter(
        make_config(),
        RealClock(),
        database=directory / "zigbee.db",
        app_class=hardware.app_class(),
        on_device_info=lambda _info: joined.set(),
    )
    async with adapter:
        task = asyncio.create_task(adapter.run(emit))
        app = adapter.app
        app.join(hue)
        async with asyncio.timeout(30):
            await joined.wait()
        # Occupancy reports alternating on/off with a fresh sequence number each: every one decodes.
        frames = [
            hue.packet(0x0406, 2, bytes([0x18, i % 256, 0x0A, 0x00, 0x00, 0x18, i % 2])) for i in range(count)
        ]
        start = time.perf_counter()
        for packet in frames:
            app.packet_received(packet)
        async with asyncio.timeout(60):
            await done.wait()
        elapsed = time.perf_counter() - start
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    return count / elapsed


def _rss_child(name: str) -> float:
    """In a fresh interpreter: RSS added by importing and starting one adapter, in MB."""
    import psutil

    process = psutil.Process()
    before = process.memory_info().rss

    async def start() -> None:
        from hub.clock import RealClock

        with tempfile.TemporaryDirectory() as tmp:
            if name == "zigbee2mqtt":
                from devices.mqtt import Zigbee2MqttAdapter
                from tests.brokers import Mosquitto

                broker = Mosquitto(Path(tmp))
                broker.start()
                try:
                    async with Zigbee2MqttAdapter(_z2m_config(broker.url), RealClock(), client_id="rss"):
                        pass
                finally:
                    broker.stop()
            elif name == "zigbee":
                from devices.zigbee import ZigbeeAdapter
                from tests.test_zigbee import Hardware, make_config

                async with ZigbeeAdapter(
                    make_config(), RealClock(), database=Path(tmp) / "z.db", app_class=Hardware().app_class()
                ):
                    pass
            elif name == "ble":
                import bleak  # noqa: F401  (the real cost: bleak and dbus-fast)

                from devices.ble import BleAdapter
                from hub.config import parse_config

                BleAdapter(parse_config("flat: {id: f, name: F}\nrooms: [a]\n", "r.yaml"), RealClock())

    asyncio.run(start())
    return (process.memory_info().rss - before) / 2**20


def measure(quick: bool = False) -> dict[str, float]:
    from tests.brokers import Mosquitto

    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        broker = Mosquitto(Path(tmp))
        broker.start()
        try:
            results["z2m_messages_per_s"] = round(asyncio.run(_z2m(2000 if quick else 20000, broker.url)), 1)
        finally:
            broker.stop()
    parse_rate, handled_rate = _ble(20000 if quick else 200000)
    results["ble_adverts_per_s"] = round(parse_rate, 1)
    results["ble_adverts_handled_per_s"] = round(handled_rate, 1)
    with tempfile.TemporaryDirectory() as tmp:
        results["zigbee_frames_per_s"] = round(asyncio.run(_zigbee(1000 if quick else 10000, Path(tmp))), 1)
    for name in ("zigbee", "zigbee2mqtt", "ble"):
        out = subprocess.run(
            [sys.executable, __file__, "--rss", name], capture_output=True, text=True, check=True, cwd=REPO
        )
        results[f"adapter_rss_mb_{name}"] = round(float(out.stdout.strip().splitlines()[-1]), 1)
    return results


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--rss":
        print(_rss_child(sys.argv[2]))
    else:
        figures = measure(quick="--quick" in sys.argv)
        print(json.dumps(figures, indent=2) if "--json" in sys.argv else figures)
