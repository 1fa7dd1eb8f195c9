"""The flat's live state in memory: what the web page, the showroom and `/api/state` show.

A bus subscriber: the latest value per device, when each was last seen, and the last sign of life
per room. It holds no history (the store does) and no personal data beyond the flat's own sensors.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from hub.config import DeviceConfig, HubConfig
from hub.events import Event, EventKind, Incident, IncidentKind, Value


@dataclasses.dataclass(slots=True)
class DeviceState:
    config: DeviceConfig
    values: dict[str, Value] = dataclasses.field(default_factory=dict)
    last_seen: float | None = None
    battery: float | None = None
    online: bool | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.config.id,
            "name": self.config.name or self.config.id,
            "kind": str(self.config.kind),
            "room": self.config.room,
            "transport": self.config.transport,
            "values": dict(self.values),
            "last_seen": self.last_seen,
            "battery": self.battery,
            "online": self.online,
        }


@dataclasses.dataclass(slots=True)
class RoomState:
    name: str
    last_activity: float | None = None
    occupied: bool = False


def merge_key(incident: Incident) -> tuple[object, ...]:
    """What makes a new incident a repeat of an open one: the same kind in the same room.

    A degraded-safety incident also needs the same source: a second radio going down is news,
    not a repeat of the first.
    """
    if incident.kind is IncidentKind.DEGRADED_SAFETY:
        return (incident.kind, incident.room, incident.detector, str(incident.evidence.get("device", "")))
    return (incident.kind, incident.room)


class LiveState:
    def __init__(self, config: HubConfig) -> None:
        self.config = config
        self.devices = {d.id: DeviceState(d) for d in config.devices}
        self.rooms = {r: RoomState(r) for r in config.rooms}
        self.open_incidents: dict[str, Incident] = {}
        self._open_by_kind_room: dict[tuple[object, ...], str] = {}
        self.last_event: float | None = None
        self.unknown_devices: set[str] = set()
        self.links: dict[str, bool] = {}  # radio or broker -> up

    def handle(self, event: Event) -> None:
        self.last_event = event.wall
        device = self.devices.get(event.device)
        if device is None:
            if event.kind is EventKind.AVAILABILITY and event.device.startswith("link:"):
                self.links[event.device.removeprefix("link:")] = bool(event.value)
            else:
                self.unknown_devices.add(event.device)
            return
        device.last_seen = event.wall
        if event.kind is EventKind.BATTERY and isinstance(event.value, int | float):
            device.battery = float(event.value)
        elif event.kind is EventKind.AVAILABILITY:
            device.online = bool(event.value)
        else:
            device.values[str(event.kind)] = event.value
            if device.online is None:
                device.online = True
        room = self.rooms.get(event.room or "")
        if room is not None and event.is_activity:
            room.last_activity = event.wall
        if room is not None and event.kind in {EventKind.MOTION, EventKind.PRESSURE}:
            room.occupied = any(
                d.values.get(str(k)) is True
                for d in self.devices.values()
                if d.config.room == room.name
                for k in (EventKind.MOTION, EventKind.PRESSURE)
            )

    def incident_opened(self, incident: Incident, *, acknowledged: bool = False) -> None:
        self.open_incidents[incident.id] = incident
        if not acknowledged:
            self._open_by_kind_room.setdefault(merge_key(incident), incident.id)

    def incident_closed(self, incident_id: str) -> None:
        incident = self.open_incidents.pop(incident_id, None)
        if incident is not None and self._open_by_kind_room.get(merge_key(incident)) == incident_id:
            del self._open_by_kind_room[merge_key(incident)]
            # Another open incident of the same kind and room (restored from before) takes over.
            for other in self.open_incidents.values():
                if merge_key(other) == merge_key(incident):
                    self._open_by_kind_room[merge_key(other)] = other.id
                    break

    def incident_acknowledged(self, incident_id: str) -> None:
        """Someone has taken it: a new incident of the same kind and room is a new alarm."""
        incident = self.open_incidents.get(incident_id)
        if incident is not None and self._open_by_kind_room.get(merge_key(incident)) == incident_id:
            del self._open_by_kind_room[merge_key(incident)]

    def open_incident_like(self, incident: Incident) -> str | None:
        """The open incident a new one repeats (same kind, same room), if any."""
        found = self._open_by_kind_room.get(merge_key(incident))
        return found if found != incident.id else None

    def as_json(self) -> dict[str, Any]:
        return {
            "flat": {
                "id": self.config.flat.id,
                "name": self.config.flat.name,
                "mode": str(self.config.flat.mode),
            },
            "rooms": [
                {"name": r.name, "last_activity": r.last_activity, "occupied": r.occupied}
                for r in self.rooms.values()
            ],
            "devices": [d.as_json() for d in self.devices.values()],
            "incidents": [
                {
                    "id": i.id,
                    "kind": str(i.kind),
                    "severity": i.severity.name.lower(),
                    "room": i.room,
                    "reason": i.reason,
                    "wall": i.wall,
                }
                for i in self.open_incidents.values()
            ],
            "last_event": self.last_event,
            "links": dict(self.links),
        }
