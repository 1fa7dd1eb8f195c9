"""Zigbee through zigpy and the radio library the config names (`znp`, `ezsp`, `deconz`).

One zigpy `ControllerApplication` per connection. The network is formed on the first start (or
restored from zigpy's last backup) and kept in zigpy's database; each backup zigpy makes is also
written as an Open Coordinator Backup JSON file beside that database, so a dead stick can be
replaced with `zigpy-cli` or Zigbee2MQTT's tools.

Frames enter through zigpy's application-level `handle_message` listener, which sees every packet
of every known device (also while it is being interviewed, and for devices restored from the
database, which exist before per-cluster listeners could be attached). Each frame is parsed by
the device's zigpy cluster (`Cluster.deserialize`: the real ZCL header, attribute records and
command schemas) and its values are mapped by the tables in `devices.zigbee_clusters`. A frame
zigpy cannot parse is refused and counted here; zigpy itself would drop it with a debug line.

The hub does what ZHA otherwise does for a flat's devices: IAS zone enrolment (CIE address,
enroll response, answering enroll requests) and reporting configuration so sleepy devices check
in at least hourly (battery every 6 h), which feeds the learned availability.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self

from devices.availability import (
    AvailabilityTracker,
    Backoff,
    ChangeFilter,
    DeviceInfo,
    DeviceInfoCallback,
    Reconnect,
    Rejections,
)
from devices.base import AdapterError, Emit
from devices.zigbee_clusters import (
    BUTTON_CLUSTERS,
    IAS_ZONE,
    REPORTING,
    SCALE_ATTRIBUTES,
    BadValue,
    Scale,
    button_event,
    decode_attribute,
    zone_event,
)
from hub.clock import Clock
from hub.config import DeviceConfig, DeviceKind, HubConfig
from hub.events import Event, EventKind, Value

log = logging.getLogger(__name__)

RADIO_MODULES: Final = {
    "znp": "zigpy_znp.zigbee.application",
    "ezsp": "bellows.zigbee.application",
    "deconz": "zigpy_deconz.zigbee.application",
}
HA_PROFILES: Final = frozenset({0x0104, 0xC05E})  # Home Automation, Light Link
DUPLICATE_WINDOW: Final = 10.0  # seconds; zigpy's own packet debounce window
CONFIGURE_TIMEOUT: Final = 60.0  # a sleepy device stays awake about this long after joining
MAINS_KINDS: Final = frozenset({DeviceKind.PLUG, DeviceKind.APPLIANCE, DeviceKind.RADAR})

Job = Callable[[], Awaitable[None]]


def normalize_ieee(address: str) -> str:
    """ "0x00158D0001E5A2B1" or "00:15:8d:00:01:e5:a2:b1" -> zigpy's "00:15:8d:00:01:e5:a2:b1"."""
    text = address.strip().lower().removeprefix("0x").replace(":", "").replace("-", "")
    if len(text) != 16 or any(c not in "0123456789abcdef" for c in text):
        raise ValueError(f"not an IEEE address: {address!r}")
    return ":".join(text[i : i + 2] for i in range(0, 16, 2))


def radio_class(kind: str) -> type[Any]:
    """The radio library's ControllerApplication, imported only when a flat has that radio."""
    try:
        module = importlib.import_module(RADIO_MODULES[kind])
    except KeyError:
        raise AdapterError(
            f"zigbee: unknown radio type {kind!r}; expected one of {sorted(RADIO_MODULES)}"
        ) from None
    except ImportError as err:
        raise AdapterError(f"zigbee: the {kind} radio library is not installed ({err.name})") from err
    return module.ControllerApplication  # type: ignore[no-any-return]


class ZigbeeAdapter:
    """Zigbee devices from the config (`zigbee: <IEEE address>`) as hub events."""

    name = "zigbee"

    def __init__(
        self,
        config: HubConfig,
        clock: Clock,
        *,
        database: Path | str,
        on_device_info: DeviceInfoCallback | None = None,
        app_class: type[Any] | None = None,
        backoff: Backoff | None = None,
        zigpy_config: dict[str, Any] | None = None,
    ) -> None:
        radio = config.radios.zigbee
        if radio is None:
            raise AdapterError("zigbee: the config has no radios.zigbee section")
        self.radio = radio
        self.database = Path(database)
        self.backup_file = self.database.with_name(self.database.stem + "-backup.json")
        self.clock = clock
        self._on_device_info = on_device_info
        self._app_class = app_class
        self._extra_config = zigpy_config or {}
        self._by_ieee: dict[str, DeviceConfig] = {}
        for device in config.devices:
            if device.zigbee is not None:
                try:
                    self._by_ieee[normalize_ieee(device.zigbee)] = device
                except ValueError as err:
                    raise AdapterError(f"zigbee: device {device.id}: {err}") from err
        offline_after = config.rules.device_health.offline_after
        self.availability = AvailabilityTracker(
            clock, self.name, offline_after=offline_after.seconds if offline_after is not None else None
        )
        for device in self._by_ieee.values():
            self.availability.watch(device.id, device.room, mains=device.kind in MAINS_KINDS)
        self.reconnect = Reconnect(self.name, clock, backoff)
        self.changes = ChangeFilter()
        self.rejections = Rejections(self.name)
        self.rejected = self.rejections.counts
        self.frames = 0
        self.events = 0
        self.app: Any = None
        self._lost: asyncio.Future[BaseException] | None = None
        self._pending: list[Event] = []
        self._emit: Emit = self._pending.append  # until `run` hands over the hub's emit
        self._jobs: asyncio.Queue[Job] = asyncio.Queue()
        self._scales: dict[tuple[str, int, int], dict[str, float]] = {}
        self._zone_types: dict[str, int] = {}
        self._recent: dict[tuple[str, int, int], tuple[bytes, float]] = {}

    # -- connection --------------------------------------------------------------------------

    def zigpy_config(self) -> dict[str, Any]:
        network: dict[str, Any] = {}
        if self.radio.channel is not None:
            network["channel"] = self.radio.channel
        config: dict[str, Any] = {
            "database_path": str(self.database),
            "device": {"path": self.radio.port, "baudrate": self.radio.baudrate},
            "network": network,
            "ota": {"enabled": False},  # no firmware updates from the internet in a senior's flat
            "topology_scan_enabled": False,
        }
        config.update(self._extra_config)
        return config

    async def _start(self) -> Any:
        cls = _guarded(self._app_class or radio_class(self.radio.type), self.rejections, self._device_name)
        self.database.parent.mkdir(parents=True, exist_ok=True)
        self._lost = asyncio.get_running_loop().create_future()
        app = await cls.new(config=self.zigpy_config(), start_radio=False)
        try:
            await app.startup(auto_form=True)
            app.add_listener(self)
            app.backups.add_listener(self)
            if (backup := app.backups.most_recent_backup()) is not None:
                self.network_backup_created(backup)
        except BaseException:
            app.remove_listener(self)
            app.backups.remove_listener(self)
            await app.shutdown(db=True)  # zigpy closes only the radio on a failed start, not its database
            raise
        return app

    async def __aenter__(self) -> Self:
        try:
            self.app = await self._start()
        except asyncio.CancelledError:
            raise
        except Exception as err:
            raise AdapterError(
                f"zigbee: cannot start the {self.radio.type} radio on {self.radio.port}: {_describe(err)}"
            ) from err
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._stop_app()

    async def _stop_app(self) -> None:
        app, self.app = self.app, None
        if app is not None:
            app.remove_listener(self)
            app.backups.remove_listener(self)
            await app.shutdown(db=True)

    async def permit(self, seconds: int = 60) -> None:
        """Open the network for joining (`aal-hub devices pair`); 0 closes it."""
        if self.app is None:
            raise AdapterError("zigbee: the radio is not connected")
        await self.app.permit(max(0, min(254, int(seconds))))

    # -- running -----------------------------------------------------------------------------

    async def run(self, emit: Emit) -> None:
        self._emit = emit
        pending, self._pending = self._pending, []
        if self.app is not None:
            self.reconnect.connected(emit)
        for event in pending:
            emit(event)
        self._seed_availability(emit)
        async with asyncio.TaskGroup() as group:
            group.create_task(self.availability.run(emit), name="zigbee-availability")
            group.create_task(self._work(), name="zigbee-jobs")
            await self._supervise(emit)

    async def _supervise(self, emit: Emit) -> None:
        while True:
            if self.app is None:
                try:
                    self.app = await self._start()
                except asyncio.CancelledError:
                    raise
                except Exception as err:  # noqa: BLE001 (any radio library error is a failed attempt)
                    self.reconnect.lost(emit, err)
                    await self.reconnect.wait()
                    continue
            self.reconnect.connected(emit)
            lost = self._lost
            if lost is None:  # _start always sets it; keeps the type checker honest
                raise AdapterError("zigbee: started without a connection watch")
            error = await lost
            await self._stop_app()
            self.reconnect.lost(emit, error)
            await self.reconnect.wait()

    async def _work(self) -> None:
        """Radio requests the listeners asked for (enrolment, reporting, backups), one at a time."""
        while True:
            job = await self._jobs.get()
            try:
                await job()
            except asyncio.CancelledError:
                raise
            except Exception:  # a sleepy device that went back to sleep is normal
                log.warning("zigbee job failed", exc_info=True)

    def _seed_availability(self, emit: Emit) -> None:
        """Devices restored from zigpy's database start from their last_seen, not from now."""
        if self.app is None:
            return
        now = self.clock.now()
        for ieee, device in self._by_ieee.items():
            zdev = self._zigpy_device(ieee)
            last_seen = getattr(zdev, "last_seen", None) if zdev is not None else None
            if isinstance(last_seen, int | float) and last_seen > 0:
                self.availability.seen(device.id, emit, mono=now.mono - max(0.0, now.wall - last_seen))

    def _device_name(self, ieee: str) -> str:
        config = self._by_ieee.get(ieee)
        return config.id if config is not None else ieee

    def _zigpy_device(self, ieee: str) -> Any:
        if self.app is None:
            return None
        return next((d for key, d in self.app.devices.items() if str(key) == ieee), None)

    # -- zigpy listener callbacks (application and backup manager) ------------------------------

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._lost is not None and not self._lost.done():
            self._lost.set_result(exc or ConnectionError("radio connection lost"))

    def network_backup_created(self, backup: Any) -> None:
        try:
            data = backup.as_open_coordinator_json()
        except Exception:  # a backup that cannot be written must not stop the radio
            log.exception("zigbee network backup could not be serialised")
            return
        self._jobs.put_nowait(lambda: asyncio.to_thread(_write_json, self.backup_file, data))

    def device_joined(self, device: Any) -> None:
        log.info("zigbee device joined", extra={"ieee": str(device.ieee), "nwk": f"0x{int(device.nwk):04x}"})

    def device_initialized(self, device: Any) -> None:
        """Interview done: tell the hub what joined, then enrol and configure it."""
        ieee = str(device.ieee)
        config = self._by_ieee.get(ieee)
        node_desc = getattr(device, "node_desc", None)
        mains = getattr(node_desc, "is_mains_powered", None) if node_desc is not None else None
        info = DeviceInfo(
            device=config.id if config else None,
            transport=self.name,
            address=ieee,
            manufacturer=device.manufacturer,
            model=device.model,
            power_source=None if mains is None else "mains" if mains else "battery",
        )
        log.info(
            "zigbee device interviewed",
            extra={
                "ieee": ieee,
                "device": info.device,
                "manufacturer": info.manufacturer,
                "model": info.model,
            },
        )
        if self._on_device_info is not None:
            self._on_device_info(info)
        self._jobs.put_nowait(lambda: self._configure(device))

    def device_left(self, device: Any) -> None:
        log.warning("zigbee device left the network", extra={"ieee": str(device.ieee)})

    def device_removed(self, device: Any) -> None:
        log.warning("zigbee device removed", extra={"ieee": str(device.ieee)})

    def handle_message(
        self, device: Any, profile: int, cluster: int, src_ep: int, dst_ep: int, message: bytes
    ) -> None:
        """Every packet of a known device, before zigpy's own handling. Never raises."""
        self.frames += 1
        ieee = str(device.ieee)
        config = self._by_ieee.get(ieee)
        if config is None:
            self.rejections.reject(ieee, "unknown device (not in the config)")
            return
        self.availability.seen(config.id, self._emit)
        if profile not in HA_PROFILES or src_ep == 0:
            return  # ZDO and vendor profiles: nothing a flat's rules need
        key = (ieee, src_ep, cluster)
        now = self.clock.now().mono
        previous = self._recent.get(key)
        self._recent[key] = (bytes(message), now)
        if previous is not None and previous[0] == message and now - previous[1] < DUPLICATE_WINDOW:
            return  # a retransmission (the ZCL sequence number is the same)
        try:
            decoded = self._decode(device, config, cluster, src_ep, bytes(message))
        except BadValue as err:
            self.rejections.reject(config.id, f"bad value on cluster 0x{cluster:04x}", err)
            return
        except _Refused as refused:
            self.rejections.reject(config.id, refused.reason, message.hex())
            return
        self._emit_all(config, decoded)

    # -- decoding ----------------------------------------------------------------------------

    def _decode(
        self, device: Any, config: DeviceConfig, cluster_id: int, src_ep: int, message: bytes
    ) -> list[tuple[EventKind, Value]]:
        from zigpy.zcl import Cluster, foundation

        try:
            hdr, _ = foundation.ZCLHeader.deserialize(message)
        except Exception:  # noqa: BLE001 (any parse error of random bytes is a malformed frame)
            raise _Refused("malformed ZCL header") from None
        endpoint = device.endpoints.get(src_ep)
        if endpoint is None or src_ep == 0:
            raise _Refused("frame from an endpoint not interviewed yet")
        client_to_server = hdr.frame_control.direction == foundation.Direction.Client_to_Server
        first, second = (endpoint.out_clusters, endpoint.in_clusters)
        if not client_to_server:
            first, second = second, first
        cluster = first.get(cluster_id) or second.get(cluster_id)
        if cluster is None:
            try:
                cluster = Cluster.from_id(endpoint, cluster_id, is_server=not client_to_server)
            except Exception:  # noqa: BLE001
                raise _Refused(f"unknown cluster 0x{cluster_id:04x}") from None
        try:
            hdr, args = cluster.deserialize(message)
        except Exception:  # noqa: BLE001 (zigpy's schemas raise whatever random bytes provoke)
            raise _Refused(f"malformed frame on cluster 0x{cluster_id:04x}") from None
        if isinstance(args, bytes):
            raise _Refused(f"unsupported command 0x{hdr.command_id:02x} on cluster 0x{cluster_id:04x}")
        ieee = str(device.ieee)
        if hdr.frame_control.frame_type == foundation.FrameType.GLOBAL_COMMAND:
            records: list[tuple[int, Any]] = []
            if hdr.command_id == foundation.GeneralCommand.Report_Attributes:
                records = [(a.attrid, a.value.value) for a in args.attribute_reports]
            elif hdr.command_id == foundation.GeneralCommand.Read_Attributes_rsp:
                records = [
                    (r.attrid, r.value.value)
                    for r in args.status_records
                    if r.status == foundation.Status.SUCCESS
                ]
            return self._attributes(ieee, config, src_ep, cluster_id, records)
        return self._command(ieee, config, cluster, cluster_id, hdr.command_id, client_to_server, args)

    def _attributes(
        self, ieee: str, config: DeviceConfig, src_ep: int, cluster_id: int, records: list[tuple[int, Any]]
    ) -> list[tuple[EventKind, Value]]:
        out: list[tuple[EventKind, Value]] = []
        scale = self._scales.setdefault((ieee, src_ep, cluster_id), {})
        for attrid, value in records:
            field = SCALE_ATTRIBUTES.get((cluster_id, attrid))
            if field is not None:
                if isinstance(value, int) and value > 0:
                    scale[field] = float(value)
                continue
            if (cluster_id, attrid) == (IAS_ZONE, 0x0001) and isinstance(value, int):
                self._zone_types[ieee] = int(value)
                continue
            event = decode_attribute(cluster_id, attrid, value, config, Scale(**scale))
            if event is not None:
                out.append(event)
        return out

    def _command(
        self,
        ieee: str,
        config: DeviceConfig,
        cluster: Any,
        cluster_id: int,
        command_id: int,
        client_to_server: bool,
        args: Any,
    ) -> list[tuple[EventKind, Value]]:
        if cluster_id == IAS_ZONE and not client_to_server:
            if command_id == 0x00:  # zone status change notification
                event = zone_event(int(args.zone_status), config, self._zone_types.get(ieee))
                return [event] if event is not None else []
            if command_id == 0x01:  # zone enroll request: answer it
                self._zone_types[ieee] = int(args.zone_type)
                self._jobs.put_nowait(lambda: self._enroll_response(cluster))
            return []
        if cluster_id in BUTTON_CLUSTERS and client_to_server:
            command = cluster.server_commands.get(command_id)
            if command is not None:
                return [button_event(command.name, config)]
        return []

    def _emit_all(self, config: DeviceConfig, decoded: list[tuple[EventKind, Value]]) -> None:
        if not decoded:
            return
        now = self.clock.now()
        for kind, value in decoded:
            if not self.changes.is_news(config.id, kind, value):
                continue
            self.events += 1
            self._emit(
                Event(
                    kind=kind,
                    device=config.id,
                    room=config.room,
                    value=value,
                    wall=now.wall,
                    mono=now.mono,
                    source=self.name,
                )
            )

    # -- enrolment and reporting ---------------------------------------------------------------

    async def _configure(self, device: Any) -> None:
        async with asyncio.timeout(CONFIGURE_TIMEOUT):
            for endpoint in device.non_zdo_endpoints:
                for cluster_id, cluster in endpoint.in_clusters.items():
                    if cluster_id == IAS_ZONE:
                        await self._enroll(cluster)
                    plan = REPORTING.get(cluster_id)
                    if plan is None:
                        continue
                    await self._try(cluster.bind(), device, f"bind 0x{cluster_id:04x}")
                    for attribute, low, high, change in plan:
                        await self._try(
                            cluster.configure_reporting(attribute, low, high, change),
                            device,
                            f"report {attribute}",
                        )
                for cluster_id, cluster in endpoint.out_clusters.items():
                    if cluster_id in BUTTON_CLUSTERS:
                        # A remote sends its commands to whatever it is bound to: the coordinator.
                        await self._try(cluster.bind(), device, f"bind 0x{cluster_id:04x}")

    async def _enroll(self, cluster: Any) -> None:
        ieee = self.app.state.node_info.ieee
        await self._try(
            cluster.write_attributes({"cie_addr": ieee}), cluster.endpoint.device, "IAS CIE address"
        )
        await self._try(cluster.read_attributes(["zone_type"]), cluster.endpoint.device, "IAS zone type")
        await self._enroll_response(cluster)

    async def _enroll_response(self, cluster: Any) -> None:
        await self._try(
            cluster.enroll_response(enroll_response_code=0, zone_id=0), cluster.endpoint.device, "IAS enroll"
        )

    async def _try(self, request: Awaitable[Any], device: Any, what: str) -> None:
        try:
            await request
        except Exception as err:  # noqa: BLE001 (zigpy's DeliveryError, timeouts: the device may be asleep)
            log.warning(
                "zigbee request failed", extra={"ieee": str(device.ieee), "request": what, "error": repr(err)}
            )


def _guarded(cls: type[Any], rejections: Rejections, name_of: Callable[[str], str]) -> type[Any]:
    """The radio's ControllerApplication, made to survive frames zigpy itself chokes on.

    zigpy parses the ZCL header of every packet without a guard; random bytes from a broken device
    would raise into the radio library's reader. Refused and counted here instead.
    """

    def packet_received(self: Any, packet: Any) -> None:
        try:
            cls.packet_received(self, packet)
        except Exception:  # noqa: BLE001 (whatever zigpy raises on bad bytes is a refused frame)
            source = getattr(getattr(packet, "src", None), "address", None)
            try:
                name = name_of(str(self.get_device(nwk=source).ieee))
            except (KeyError, TypeError, ValueError):
                name = str(source)
            rejections.reject(name, "frame zigpy could not handle")

    return type(f"Guarded{cls.__name__}", (cls,), {"packet_received": packet_received})


class _Refused(Exception):
    """Internal: a frame refused, with the reason that is counted."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


def _describe(err: BaseException) -> str:
    """zigpy wraps the radio's error (TransientConnectionError with no text): name the whole chain."""
    parts: list[str] = []
    current: BaseException | None = err
    while current is not None and len(parts) < 4:
        text = str(current)
        parts.append(f"{type(current).__name__}: {text}" if text else type(current).__name__)
        current = current.__cause__ or current.__context__
    return " <- ".join(parts)


def _write_json(path: Path, data: object) -> None:
    """Atomically: a power cut while writing must not leave half a network key on disk."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str), encoding="utf-8")
    tmp.chmod(0o600)  # the network key is in it
    tmp.replace(path)


__all__ = ["RADIO_MODULES", "ZigbeeAdapter", "normalize_ieee", "radio_class"]
