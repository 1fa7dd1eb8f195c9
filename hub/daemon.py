"""The composition root: builds the hub from its config and runs it as one TaskGroup.

Named long-lived services (adapters, rule engine, incident desk, retention, web, watchdog) run
under a supervisor each: a service that fails is logged with its traceback, shown in
`/api/health`, and restarted with capped, jittered backoff; it never takes the hub down. SIGTERM
stops everything in order and drains the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import gc
import json
import logging
import random
import signal
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final

import sqlite_utils

from devices.base import SensorAdapter
from hub import sdnotify
from hub.bus import Bus
from hub.clock import Clock, Instant, RealClock
from hub.config import HubConfig, Mode
from hub.engine import RuleEngine
from hub.events import Event, Incident, IncidentKind, Severity
from hub.retention import expire
from hub.state import LiveState
from hub.store import Store, StoreError, audit, incident_from_row, insert_incident
from rules.base import ClearIncident, Detector

if TYPE_CHECKING:
    from alerts.escalation import AlertSettings, EscalationEngine
    from devices.availability import DeviceInfo

log = logging.getLogger(__name__)

BACKOFF_START: Final = 1.0
BACKOFF_CAP: Final = 60.0
RETENTION_EVERY: Final = 6 * 3600.0


GC_THRESHOLDS: Final = (50_000, 50, 100)


class ServiceState(enum.StrEnum):
    STARTING = "starting"
    RUNNING = "running"
    BACKOFF = "backoff"
    FINISHED = "finished"
    STOPPED = "stopped"


@dataclasses.dataclass(slots=True)
class ServiceStatus:
    name: str
    state: ServiceState = ServiceState.STARTING
    since: float = dataclasses.field(default_factory=time.time)
    restarts: int = 0
    last_error: str | None = None

    def set(self, state: ServiceState, error: str | None = None) -> None:
        self.state = state
        self.since = time.time()
        if error is not None:
            self.last_error = error

    def as_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


ServiceFactory = Callable[[], Awaitable[None]]
IncidentWriter = Callable[[sqlite_utils.Database, Incident, Instant], Callable[[], None]]
DESK_BATCH: Final = 500


def default_db_path(config: HubConfig) -> Path:
    import os

    if config.store.path:
        return Path(config.store.path)
    state_dir = os.environ.get("STATE_DIRECTORY")  # set by systemd's StateDirectory=
    return Path(state_dir or "var") / ("demo.db" if config.flat.mode is Mode.DEMO else "hub.db")


class Hub:
    def __init__(
        self,
        config: HubConfig,
        *,
        clock: Clock | None = None,
        db_path: Path | None = None,
        adapters: Sequence[SensorAdapter] | None = None,
        detectors: Sequence[Detector] | None = None,
        web: bool = True,
        web_port: int | None = None,
        stop_when_sources_end: bool = False,
        alerts: bool = True,
        alert_settings: AlertSettings | None = None,
        config_dir: Path | None = None,
    ) -> None:
        self.config = config
        self.clock: Clock = clock or RealClock()
        self.db_path = db_path or default_db_path(config)
        self.bus = Bus()
        self.state = LiveState(config)
        self.config_dir = config_dir
        self.adapters = (
            list(adapters)
            if adapters is not None
            else build_adapters(config, self.clock, self.db_path, config_dir, self.device_info)
        )
        from hub.detectors import build_detectors

        self.engine = RuleEngine(
            detectors if detectors is not None else build_detectors(config),
            self.clock,
            self.raise_incident,
            self._clear_incident,
        )
        self.web_enabled = web
        self.web_port = web_port if web_port is not None else config.web.port
        self.bound_port: int | None = None
        self.stop_when_sources_end = stop_when_sources_end
        self.services: dict[str, ServiceStatus] = {}
        self.ready = asyncio.Event()
        # Set once the web server is bound, or has failed: READY must not wait for a lost port.
        self.web_settled = asyncio.Event()
        self.stopping = asyncio.Event()
        # Called after an incident is committed (e.g. publishing it to a care-service broker).
        self.incident_hooks: list[Callable[[Incident], Awaitable[None]]] = []
        # Run inside the transaction that commits a new incident (the escalation's first step);
        # each returns what to do once that transaction is committed.
        self.incident_writers: list[IncidentWriter] = []
        self._incidents: asyncio.Queue[Incident] = asyncio.Queue()
        self._store: Store | None = None
        self._unknown_warned: set[str] = set()
        self.started_at = time.monotonic()
        self.incidents_raised = 0
        self._resync_wanted = False
        self.escalation: EscalationEngine | None = None
        if alerts:
            from alerts.escalation import AlertSettings, EscalationEngine

            self.escalation = EscalationEngine.attach(
                self, settings=alert_settings or AlertSettings.from_config(config)
            )

    @property
    def store(self) -> Store:
        if self._store is None:
            raise StoreError("the store is not open")
        return self._store

    # -- input -------------------------------------------------------------------------------

    def emit(self, event: Event) -> None:
        """The one entry for events from adapters, the web UI and tests."""
        if (
            event.device not in self.state.devices
            and event.device not in self._unknown_warned
            and not event.device.startswith(("link:", "kiosk"))
        ):
            # Kept and stored, but said once: an unknown device is an installer's loose end.
            self._unknown_warned.add(event.device)
            log.warning("event from a device not in the config", extra={"device": event.device})
        self.bus.publish(event)

    def now(self) -> Instant:
        return self.clock.now()

    def device_info(self, info: DeviceInfo) -> None:
        """What a radio learnt about a device (manufacturer, model): into the device table."""
        if info.device is None:
            log.info(
                "a device joined that is not in the config",
                extra={"transport": info.transport, "address": info.address, "model": info.model},
            )
            return

        def write(db: sqlite_utils.Database) -> None:
            db.execute(
                "UPDATE devices SET manufacturer = coalesce(?, manufacturer), model = coalesce(?, model),"
                " address = coalesce(?, address) WHERE id = ?",
                [info.manufacturer, info.model, info.address, info.device],
            )

        if self._store is not None:
            self._store.submit(write)

    async def permit_join(self, seconds: int) -> list[str]:
        """Open every radio that pairs (Zigbee) for `seconds`; returns which were opened."""
        opened = []
        for adapter in self.adapters:
            permit = getattr(adapter, "permit", None)
            if permit is not None:
                await permit(seconds)
                opened.append(adapter.name)
        return opened

    # -- running -----------------------------------------------------------------------------

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, self.request_stop)
        try:
            async with Store(self.db_path) as store:
                self._store = store
                await store.call(self._register_devices)
                for incident, state in await store.call(_open_incidents):
                    self.state.incident_opened(incident, acknowledged=state == "acknowledged")
                await self._restore_detectors()
                self.engine.start(self.clock.now())
                self.bus.subscribe("store", store.append_event)
                self.bus.subscribe("state", self.state.handle)
                self.bus.subscribe("rules", self.engine.handle)
                await self._run_services()
        finally:
            self._store = None
            for sig in (signal.SIGTERM, signal.SIGINT):
                with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                    loop.remove_signal_handler(sig)
            sdnotify.notify("STOPPING=1")

    def request_stop(self) -> None:
        log.info("stopping")
        sdnotify.notify("STOPPING=1")
        self.stopping.set()

    async def _run_services(self) -> None:
        services: dict[str, ServiceFactory] = {
            "rules": self.engine.run,
            "incidents": self._incident_desk,
            "retention": self._retention,
        }
        if self.escalation is not None:
            services["escalation"] = self.escalation.run
        for adapter in self.adapters:
            services[f"adapter:{adapter.name}"] = self._adapter_service(adapter)
        if self.web_enabled:
            from hub.web import serve

            services["web"] = lambda: serve(self)
        if (interval := sdnotify.watchdog_interval()) is not None:
            services["watchdog"] = lambda: self._watchdog(interval)
        async with asyncio.TaskGroup() as group:
            tasks = [
                group.create_task(self._supervise(name, factory), name=name)
                for name, factory in services.items()
            ]
            if self.web_enabled:
                await self.web_settled.wait()
            self.ready.set()
            # Start-up objects (config, imports) live as long as the hub: keep the collector off
            # them, or a full collection walks them all in the middle of an alarm.
            gc.freeze()
            # Young-generation collections every 700 allocations landed inside alarms (a help
            # press allocates thousands of objects). Fewer, larger ones: over 4,800 alarms at
            # 800/s, 962 -> 10 collections and 400 -> 60 ms spent collecting.
            gc.set_threshold(*GC_THRESHOLDS)
            sdnotify.notify(f"READY=1\nSTATUS=watching {self.config.flat.name}")
            from hub.detectors import coverage_advice

            for advice in coverage_advice(self.config):
                log.warning("protection gap", extra={"advice": advice})
            log.info(
                "hub ready",
                extra={
                    "flat": self.config.flat.id,
                    "mode": str(self.config.flat.mode),
                    "port": self.bound_port,
                },
            )
            await self.stopping.wait()
            for task in tasks:
                task.cancel()
        # Incidents raised in the last moments are committed before the store closes; their
        # escalation resumes from the database at the next start.
        if not self._incidents.empty():
            leftover = [self._incidents.get_nowait() for _ in range(self._incidents.qsize())]
            await self._commit_incidents(leftover)
        await self._save_detectors()
        await self.store.flush()

    async def _supervise(self, name: str, factory: ServiceFactory) -> None:
        status = self.services[name] = ServiceStatus(name)
        backoff = BACKOFF_START
        while True:
            status.set(ServiceState.RUNNING)
            started = time.monotonic()
            try:
                await factory()
            except asyncio.CancelledError:
                status.set(ServiceState.STOPPED)
                raise
            except Exception as err:
                log.exception("service failed", extra={"service": name})
                if name == "web":
                    self.web_settled.set()
                status.set(ServiceState.BACKOFF, f"{type(err).__name__}: {err}")
                status.restarts += 1
                if time.monotonic() - started > BACKOFF_CAP:
                    backoff = BACKOFF_START  # it ran a good while: a fresh fault, not a loop
                if status.restarts == 1 and name.startswith("adapter:"):
                    self.raise_incident(self._degraded(f"{name[8:]} sensors stopped: {err}", name))
                await asyncio.sleep(backoff * random.uniform(0.8, 1.2))  # noqa: S311 (jitter)
                backoff = min(backoff * 2, BACKOFF_CAP)
            else:
                status.set(ServiceState.FINISHED)
                if name.startswith("adapter:") and self.stop_when_sources_end and self._sources_ended():
                    self.request_stop()
                return

    def _sources_ended(self) -> bool:
        adapters = [s for n, s in self.services.items() if n.startswith("adapter:")]
        return all(s.state is ServiceState.FINISHED for s in adapters)

    def _adapter_service(self, adapter: SensorAdapter) -> ServiceFactory:
        async def service() -> None:
            async with adapter:
                await adapter.run(self.emit)

        return service

    # -- incidents ---------------------------------------------------------------------------

    def raise_incident(self, incident: Incident) -> None:
        self.incidents_raised += 1
        self._incidents.put_nowait(incident)

    def _clear_incident(self, clear: ClearIncident, now: Instant) -> None:
        log.info("condition cleared", extra={"kind": str(clear.kind), "room": clear.room})

    def _degraded(self, reason: str, source: str) -> Incident:
        now = self.clock.now()
        return Incident(
            kind=IncidentKind.DEGRADED_SAFETY,
            severity=Severity.WARNING,
            room=None,
            reason=reason,
            wall=now.wall,
            mono=now.mono,
            detector=source,
        )

    async def _incident_desk(self) -> None:
        """Commit incidents durably, merge repeats into the open one, then hand them on.

        Whatever is waiting is committed in one transaction, together with the start of each
        incident's escalation (`incident_writers`): one fsync per batch, not two per incident.
        """
        while True:
            batch = [await self._incidents.get()]
            while not self._incidents.empty() and len(batch) < DESK_BATCH:
                batch.append(self._incidents.get_nowait())
            new, afters = await self._commit_incidents(batch)
            failed = False
            for after in afters:
                try:
                    after()
                except Exception:
                    failed = True
                    log.exception("after-commit step failed; escalation resyncs from the database")
            if (failed or self._resync_wanted) and self.escalation is not None:
                self._resync_wanted = False
                await self.escalation.resync()
            for incident in new:
                for hook in self.incident_hooks:
                    await hook(incident)

    def _resync_escalation(self) -> None:
        self._resync_wanted = True

    async def _commit_incidents(
        self, batch: list[Incident]
    ) -> tuple[list[Incident], list[Callable[[], None]]]:
        """Commit a batch; returns the new incidents and what to do now that they are committed.

        While the store cannot write (a full card), the incidents are shown and retried, never
        dropped: the resident's help call must not vanish with a disk error.
        """
        merges: dict[str, str] = {}  # incident id -> the open incident it repeats
        new: list[Incident] = []
        for incident in batch:
            same = self.state.open_incident_like(incident)
            if same is not None:
                merges[incident.id] = same
            else:
                new.append(incident)
                self.state.incident_opened(incident)
        writers = list(self.incident_writers)
        now = self.clock.now()

        def write(db: sqlite_utils.Database) -> list[Callable[[], None]]:
            afters: list[Callable[[], None]] = []
            for incident in batch:
                if incident.id in merges:
                    audit(
                        db,
                        incident.wall,
                        merges[incident.id],
                        incident.detector,
                        "merged",
                        {"reason": incident.reason},
                    )
                    continue
                insert_incident(db, incident)
                for writer in writers:
                    try:
                        afters.append(writer(db, incident, now))
                    except Exception:
                        # A broken follow-up must not cost the incident its commit; the
                        # escalation finds it unstarted in the database and starts it.
                        log.exception("incident writer failed", extra={"incident": incident.id})
                        afters.append(self._resync_escalation)
            return afters

        backoff = BACKOFF_START
        while True:
            try:
                afters = await self.store.call(write)
            except StoreError:
                log.exception("incidents not yet stored, retrying", extra={"count": len(batch)})
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_CAP)
                continue
            break
        for incident in batch:
            if incident.id in merges:
                log.info(
                    "incident merged", extra={"incident": merges[incident.id], "kind": str(incident.kind)}
                )
            else:
                log.warning(
                    "incident",
                    extra={
                        "incident": incident.id,
                        "kind": str(incident.kind),
                        "room": incident.room,
                        "reason": incident.reason,
                    },
                )
        return new, afters

    # -- housekeeping ------------------------------------------------------------------------

    def _learning(self) -> list[Any]:
        """Detectors that learn (usual times, reporting intervals) and can say what they know."""
        return [d for d in self.engine.detectors if hasattr(d, "snapshot") and hasattr(d, "restore")]

    async def _restore_detectors(self) -> None:
        names = {d.name: d for d in self._learning()}
        if not names:
            return
        rows = await self.store.call(
            lambda db: db.execute("SELECT name, state FROM detector_state").fetchall()
        )
        for name, state in rows:
            if name in names:
                try:
                    names[name].restore(json.loads(state))
                except (ValueError, TypeError, KeyError):
                    # Learning starts again rather than the hub not starting: say so.
                    log.exception("learned state unreadable; learning anew", extra={"detector": name})

    async def _save_detectors(self) -> None:
        learning = self._learning()
        if not learning:
            return
        wall = self.clock.now().wall
        rows = [(d.name, json.dumps(d.snapshot()), wall) for d in learning]

        def save(db: sqlite_utils.Database) -> None:
            db.conn.executemany(
                "INSERT INTO detector_state (name, state, updated) VALUES (?, ?, ?) ON CONFLICT (name)"
                " DO UPDATE SET state = excluded.state, updated = excluded.updated",
                rows,
            )

        await self.store.call(save, durable=False)  # learning lost in a power cut is relearnt

    async def _retention(self) -> None:
        retention = self.config.retention
        while True:
            now = self.clock.now()

            def run(db: sqlite_utils.Database, wall: float = now.wall) -> dict[str, int]:
                return expire(
                    db,
                    wall,
                    raw_events=retention.raw_events.seconds,
                    incidents=retention.incidents.seconds,
                    activity=retention.activity.seconds,
                )

            removed = await self.store.call(run, durable=False)
            if any(removed.values()):
                log.info("retention", extra=removed)
            await self._save_detectors()  # a power cut costs at most this period of learning
            await self.clock.sleep_until(now.mono + RETENTION_EVERY)

    async def _watchdog(self, interval: float) -> None:
        while True:
            # Only a hub whose store writer is alive may tell systemd it is healthy.
            if any(t.name == "store-writer" and t.is_alive() for t in threading.enumerate()):
                sdnotify.notify("WATCHDOG=1")
            await asyncio.sleep(interval)

    def _register_devices(self, db: sqlite_utils.Database) -> None:
        now = time.time()
        for device in self.config.devices:
            address = device.zigbee or device.zigbee2mqtt or device.ble
            db.execute(
                "INSERT INTO devices (id, kind, room, name, transport, address, updated)"
                " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET kind = excluded.kind,"
                " room = excluded.room, name = excluded.name, transport = excluded.transport,"
                " address = excluded.address, updated = excluded.updated",
                [device.id, str(device.kind), device.room, device.name, device.transport, address, now],
            )

    def health(self) -> dict[str, Any]:
        store = self._store
        ok = all(s.state in {ServiceState.RUNNING, ServiceState.FINISHED} for s in self.services.values())
        store_ok = store is not None and store.last_error is None
        return {
            "status": "ok" if ok and store_ok else "degraded",
            "ready": self.ready.is_set(),
            "uptime_s": round(time.monotonic() - self.started_at, 3),
            "services": {name: s.as_json() for name, s in self.services.items()},
            "store": {
                "path": str(self.db_path),
                "events_written": store.events_written if store else 0,
                "error": store.last_error if store else "closed",
            },
            "bus": {"published": self.bus.published, "handler_errors": dict(self.bus.handler_errors)},
            "rules": {"failures": dict(self.engine.failures), "timers": self.engine.pending_timers},
            "escalation": self.escalation.status() if self.escalation is not None else None,
        }


def _open_incidents(db: sqlite_utils.Database) -> list[tuple[Incident, str]]:
    rows = db.execute(
        "SELECT id, kind, severity, room, reason, detector, evidence, wall, mono, state FROM incidents"
        " WHERE state IN ('open', 'acknowledged') ORDER BY wall"
    ).fetchall()
    return [(incident_from_row(row), row[9]) for row in rows]


def adapter_builders(
    config: HubConfig,
    clock: Clock,
    db_path: Path,
    config_dir: Path | None = None,
    on_device_info: Callable[[DeviceInfo], None] | None = None,
) -> dict[str, Callable[[], SensorAdapter]]:
    """How to build each adapter the config asks for, imported lazily (no BLE, no bleak)."""
    builders: dict[str, Callable[[], SensorAdapter]] = {}
    if config.radios.zigbee is not None:

        def zigbee() -> SensorAdapter:
            from devices.zigbee import ZigbeeAdapter

            return ZigbeeAdapter(
                config, clock, database=db_path.with_name("zigbee.db"), on_device_info=on_device_info
            )

        builders["zigbee"] = zigbee
    if config.radios.zigbee2mqtt is not None or any(d.zigbee2mqtt for d in config.devices):

        def zigbee2mqtt() -> SensorAdapter:
            from devices.mqtt import Zigbee2MqttAdapter

            return Zigbee2MqttAdapter(config, clock, on_device_info=on_device_info)

        builders["zigbee2mqtt"] = zigbee2mqtt
    if config.radios.ble is not None or any(d.ble for d in config.devices):

        def ble() -> SensorAdapter:
            from devices.ble import BleAdapter

            return BleAdapter(config, clock, key_dir=config_dir)

        builders["ble"] = ble
    if any(d.simulated for d in config.devices):

        def simulated() -> SensorAdapter:
            from devices.simulated import SimulatedFlat

            return SimulatedFlat(config, clock)

        builders["simulated"] = simulated
    return builders


def build_adapters(
    config: HubConfig,
    clock: Clock,
    db_path: Path,
    config_dir: Path | None = None,
    on_device_info: Callable[[DeviceInfo], None] | None = None,
) -> list[SensorAdapter]:
    """Each adapter is built when its service starts: a missing key file or a bad setting then
    fails that one service (retried, and raised as degraded safety), never the whole hub."""
    builders = adapter_builders(config, clock, db_path, config_dir, on_device_info)
    return [DeferredAdapter(name, build) for name, build in builders.items()]


class DeferredAdapter:
    """An adapter built on entry, so that its construction errors belong to its own service."""

    def __init__(self, name: str, build: Callable[[], SensorAdapter]) -> None:
        self.name = name
        self._build = build
        self.inner: SensorAdapter | None = None

    async def __aenter__(self) -> DeferredAdapter:
        inner = self._build()
        await inner.__aenter__()
        self.inner = inner
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        inner, self.inner = self.inner, None
        if inner is not None:
            await inner.__aexit__(exc_type, exc, tb)

    async def run(self, emit: Callable[[Event], None]) -> None:
        if self.inner is None:
            raise RuntimeError(f"{self.name}: run() outside `async with`")
        await self.inner.run(emit)

    def __getattr__(self, attribute: str) -> Any:
        # Radio actions (permit-join) and counters reach the running adapter.
        inner = self.__dict__.get("inner")
        if inner is None:
            raise AttributeError(attribute)
        return getattr(inner, attribute)


__all__ = ["Hub", "ServiceState", "build_adapters"]
