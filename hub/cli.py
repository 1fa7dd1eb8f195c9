"""`aal-hub`: run, demo, replay, check-config, devices, eval.

Exit codes: 0 fine, 1 a config error (file, line, what was expected), 2 a usage error,
3 the database cannot be used, 4 an input file could not be read.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import logging
import sqlite3
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final
from zoneinfo import ZoneInfo

from hub import logs
from hub.config import ConfigError, HubConfig, demo_config_path, load_config

log = logging.getLogger("hub.cli")

DEFAULT_CONFIG: Final = Path("/etc/aal-hub/config.yaml")
EXIT_CONFIG: Final = 1
EXIT_STORE: Final = 3
EXIT_INPUT: Final = 4


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    if extra and getattr(args, "func", None) is not _eval:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.options = extra  # `eval` hands its own options (--seed, --sweep, ...) to the evaluation
    logs.setup(args.log_level, args.log_format)
    try:
        result: int = args.func(args)
    except ConfigError as err:
        print(f"aal-hub: config error: {err}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return 130
    return result


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aal-hub", description="Home hub for ambient assisted living.")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    parser.add_argument("--log-format", default="logfmt", choices=["logfmt", "json"])
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="run the hub for a flat")
    run.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    run.add_argument("--db", type=Path, help="database file (default: from the config)")
    run.add_argument("--port", type=int, help="web UI port (default: from the config)")
    run.set_defaults(func=_run)

    demo = commands.add_parser("demo", help="run the demo flat: simulated sensors, demo receiver")
    demo.add_argument("--port", type=int, default=8080)
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument("--speed", type=float, default=30.0, help="flat seconds per real second (default 30)")
    demo.add_argument("--start", default="06:30", help="local time of day the demo starts at")
    demo.add_argument("--db", type=Path, help="database file (default: var/demo.db)")
    demo.add_argument("--seed", type=int, default=1)
    demo.set_defaults(func=_demo)

    replay = commands.add_parser("replay", help="replay a real home's sensor log through the hub")
    replay.add_argument("--data", type=Path, required=True, help="an Ordóñez or van Kasteren folder")
    replay.add_argument("--speed", type=float, help="home seconds per real second (default: flat out)")
    replay.add_argument("--db", type=Path, help="database file (default: a temporary one)")
    replay.add_argument("--port", type=int, help="also serve the web UI on this port")
    replay.add_argument("--json", action="store_true", help="print the summary as JSON")
    replay.set_defaults(func=_replay)

    check = commands.add_parser("check-config", help="validate a config file and exit")
    check.add_argument("file", type=Path)
    check.add_argument("--json", action="store_true", help="print the validated config as JSON")
    check.set_defaults(func=_check_config)

    devices = commands.add_parser("devices", help="list devices (room, battery, last seen) or pair new ones")
    devices.add_argument("action", nargs="?", default="list", choices=["list", "pair"])
    devices.add_argument("--seconds", type=int, default=120, help="pair: how long joining stays open")
    devices.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    devices.add_argument("--db", type=Path)
    devices.add_argument("--json", action="store_true")
    devices.set_defaults(func=_devices)

    evaluate = commands.add_parser(
        "eval",
        help="measure detection quality on public datasets",
        description="Further options (--seed, --sweep, --details, ...) go to the evaluation;"
        " see `aal-hub eval inactivity --data DIR --help`.",
    )
    evaluate.add_argument("what", choices=["falls", "inactivity"])
    evaluate.add_argument("--data", type=Path, required=True)
    evaluate.add_argument("--json", action="store_true")
    evaluate.set_defaults(func=_eval)
    return parser


# -- commands -----------------------------------------------------------------------------------


def _run(args: argparse.Namespace) -> int:
    if not args.config.exists() and args.config == DEFAULT_CONFIG:
        print(
            f"aal-hub: no config at {DEFAULT_CONFIG}; write one (see the README) "
            "or try the demo flat: aal-hub demo",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    config = load_config(args.config)
    from hub.daemon import Hub

    return _serve(lambda: Hub(config, db_path=args.db, web_port=args.port, config_dir=args.config.parent))


def _demo(args: argparse.Namespace) -> int:
    import msgspec

    from hub.clock import ScaledClock
    from hub.config import WebConfig
    from hub.daemon import Hub

    config = load_config(demo_config_path())
    config = msgspec.structs.replace(config, web=WebConfig(host=args.host, port=args.port))
    tz = ZoneInfo(config.flat.timezone)
    hours, minutes = (int(x) for x in args.start.split(":"))
    start = dt.datetime.combine(dt.datetime.now(tz).date(), dt.time(hours, minutes), tz).timestamp()
    clock = ScaledClock(start, args.speed)

    def build() -> Hub:
        from devices.simulated import SimulatedFlat

        return Hub(
            config, clock=clock, db_path=args.db, adapters=[SimulatedFlat(config, clock, seed=args.seed)]
        )

    return _serve(build)


def _serve(build: Any) -> int:
    from hub.store import StoreError

    started = time.monotonic()

    async def go() -> None:
        hub = build()
        task = asyncio.create_task(hub.run())
        ready = asyncio.create_task(hub.ready.wait())
        await asyncio.wait({task, ready}, return_when=asyncio.FIRST_COMPLETED)
        if ready.done():
            log.info("started", extra={"seconds": round(time.monotonic() - started, 3)})
        else:
            ready.cancel()
        await task

    try:
        asyncio.run(go())
    except StoreError as err:
        print(f"aal-hub: database error: {err}", file=sys.stderr)
        return EXIT_STORE
    return 0


def _replay(args: argparse.Namespace) -> int:
    from devices import replay as replay_mod

    try:
        dataset = replay_mod.load_dataset(args.data)
    except (OSError, replay_mod.ReplayFormatError) as err:
        print(f"aal-hub: cannot read {args.data}: {err}", file=sys.stderr)
        return EXIT_INPUT
    summary = asyncio.run(replay_home(dataset, speed=args.speed, db=args.db, port=args.port))
    if args.json:
        print(json.dumps(summary))
    else:
        for key, value in summary.items():
            print(f"{key:>22}: {value}")
    return 0


def replay_config(dataset: Any, *, mode: str = "demo") -> HubConfig:
    """A flat config for a dataset's home: its rooms and sensors, no real channels."""
    import msgspec

    from hub.config import HubConfig as Config

    devices = [
        {
            "id": s.device,
            "room": s.room,
            "kind": _DEVICE_KIND.get(str(s.kind), "motion"),
            "name": s.label,
            "role": s.role,
        }
        for s in dataset.sensors.values()
    ]
    rooms = sorted({*dataset.rooms, *(s.room for s in dataset.sensors.values() if s.room)})
    data = {
        "flat": {"id": dataset.name.lower(), "name": f"replay of {dataset.name}", "mode": mode},
        "rooms": rooms,
        "devices": devices,
    }
    return msgspec.convert(data, Config)


_DEVICE_KIND: Final = {
    "motion": "motion",
    "contact": "contact",
    "pressure": "pressure_mat",
    "flush": "flush",
    "appliance": "appliance",
}


async def replay_home(
    dataset: Any, *, speed: float | None, db: Path | None, port: int | None
) -> dict[str, Any]:
    import tempfile

    from devices.replay import ReplayAdapter, virtual_clock_for
    from hub.daemon import Hub

    config = replay_config(dataset)
    clock = virtual_clock_for(dataset)
    with tempfile.TemporaryDirectory(prefix="aal-replay-") as tmp:
        hub = Hub(
            config,
            clock=clock,
            db_path=db or Path(tmp) / "replay.db",
            adapters=[ReplayAdapter(dataset, clock, speed=speed)],
            web=port is not None,
            web_port=port,
            stop_when_sources_end=True,
        )
        started = time.perf_counter()
        await hub.run()
        elapsed = time.perf_counter() - started
        store_events = hub.bus.published
    days = (dataset.end - dataset.start) / 86400
    return {
        "home": dataset.name,
        "days": round(days, 2),
        "sensors": len(dataset.sensors),
        "events": store_events,
        "incidents": hub.incidents_raised,
        "seconds": round(elapsed, 3),
        "speedup": round(days * 86400 / elapsed) if elapsed > 0 else None,
    }


def _check_config(args: argparse.Namespace) -> int:
    config = load_config(args.file)
    # What only the adapters can tell: key files that exist and are readable, radio settings.
    from devices.base import AdapterError
    from hub.clock import RealClock
    from hub.daemon import adapter_builders

    for name, build in adapter_builders(
        config, RealClock(), Path("/nonexistent/hub.db"), args.file.parent
    ).items():
        try:
            build()
        except AdapterError as err:
            print(f"aal-hub: config error: {args.file}: {name}: {err}", file=sys.stderr)
            return EXIT_CONFIG
    if args.json:
        from hub.config import as_plain

        print(json.dumps(as_plain(config), indent=2, ensure_ascii=False))
    else:
        print(
            f"{args.file}: ok: flat {config.flat.id!r} ({config.flat.mode}), {len(config.rooms)} rooms, "
            f"{len(config.devices)} devices, {len(config.contacts)} contacts"
        )
        from hub.detectors import coverage_advice

        for advice in coverage_advice(config):
            print(f"advice: {advice}")
    return 0


def _pair(config: HubConfig, seconds: int) -> int:
    """Ask the running hub (it owns the radio's serial port) to open the network for joining."""
    import urllib.error
    import urllib.request

    host = "127.0.0.1" if config.web.host in {"0.0.0.0", "::"} else config.web.host  # noqa: S104
    url = f"http://{host}:{config.web.port}/api/devices/pair"
    request = urllib.request.Request(
        url,
        data=json.dumps({"seconds": seconds}).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            answer = json.load(response)
    except urllib.error.HTTPError as err:
        print(f"aal-hub: the hub refused: {json.load(err).get('error', err.reason)}", file=sys.stderr)
        return EXIT_INPUT
    except OSError as err:
        print(f"aal-hub: no running hub answers at {url} ({err}); start it first", file=sys.stderr)
        return EXIT_INPUT
    print(f"joining open for {answer['seconds']} s on: {', '.join(answer['radios'])}")
    return 0


def _devices(args: argparse.Namespace) -> int:
    config = load_config(args.config if args.config.exists() else demo_config_path())
    if args.action == "pair":
        return _pair(config, args.seconds)
    from hub.daemon import default_db_path

    db_path = args.db or default_db_path(config)
    rows: list[dict[str, Any]] = []
    if db_path.exists():
        try:
            conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
            conn.row_factory = sqlite3.Row
            rows = [dict(r) for r in conn.execute("SELECT * FROM devices ORDER BY room, id")]
            conn.close()
        except sqlite3.Error as err:
            print(f"aal-hub: cannot read the database {db_path}: {err}", file=sys.stderr)
            return EXIT_STORE
    if not rows:
        rows = [
            {
                "id": d.id,
                "room": d.room,
                "kind": str(d.kind),
                "transport": d.transport,
                "battery": None,
                "last_seen": None,
                "online": None,
            }
            for d in config.devices
        ]
    if args.json:
        print(json.dumps(rows, default=str))
        return 0
    print(f"{'device':<18} {'room':<10} {'kind':<13} {'via':<11} {'battery':>7}  last seen")
    for row in rows:
        battery = f"{row['battery']:.0f}%" if row.get("battery") is not None else "-"
        seen = (
            dt.datetime.fromtimestamp(row["last_seen"], dt.UTC).astimezone().strftime("%Y-%m-%d %H:%M:%S")
            if row.get("last_seen")
            else "never"
        )
        if row.get("online") == 0:
            seen += "  OFFLINE"
        room = row["room"] or "-"
        print(f"{row['id']:<18} {room:<10} {row['kind']:<13} {row['transport']:<11} {battery:>7}  {seen}")
    return 0


def _eval(args: argparse.Namespace) -> int:
    argv = ["--data", str(args.data), *(["--json"] if args.json else []), *args.options]
    if args.what == "falls":
        from hub.evaluation import falls

        return falls.main(argv)
    from hub.evaluation import inactivity

    return inactivity.main(argv)


if __name__ == "__main__":
    sys.exit(main())
