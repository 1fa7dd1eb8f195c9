"""Health bookkeeping shared by the radio adapters: who is online, how links reconnect, what was refused.

Three small pieces, none of which polls:

- `AvailabilityTracker` learns each device's reporting interval from the gaps between its reports
  and says "offline" once a device stays silent much longer than it ever did (safety rule 2: a dead
  sensor is not a quiet resident). Its `run` sleeps on the hub clock until the next deadline only.
- `Reconnect` is the reconnect policy of one radio or broker link as an explicit state machine with
  capped, jittered backoff (aioesphomeapi's reconnect_logic, in small). A link that goes away becomes
  an AVAILABILITY event for `link:<adapter>`; an inactivity alarm must never be raised, or silenced,
  because a radio died.
- `Rejections` counts bad input per device and reason and logs each pair once, so a sensor sending
  garbage every second cannot flood the journal, and the counts show up in health.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import enum
import heapq
import logging
import random
from collections.abc import Callable
from typing import Final

from devices.base import Emit
from hub.clock import Clock
from hub.events import Event, EventKind, Value

log = logging.getLogger(__name__)

# Until a device has shown its rhythm: the common policy (design notes) for mains and battery devices.
DEFAULT_MAINS_TIMEOUT: Final = 2 * 3600.0
DEFAULT_BATTERY_TIMEOUT: Final = 6 * 3600.0
# A learned timeout is this many times the longest recent gap ...
GAP_FACTOR: Final = 2.5
# ... but never shorter than this (a BLE sensor advertising every 10 s must not flap on a missed
# scan window) nor longer than a day.
MIN_TIMEOUT: Final = 10 * 60.0
MAX_TIMEOUT: Final = 24 * 3600.0
# Gaps remembered per device; enough to cover a day of a sensor that checks in hourly.
GAP_HISTORY: Final = 48
# Gaps needed before the learned timeout replaces the default.
MIN_GAPS: Final = 4


def link_device(adapter: str) -> str:
    """The device id under which an adapter reports its own radio or broker link."""
    return f"link:{adapter}"


@dataclasses.dataclass(frozen=True, slots=True)
class DeviceInfo:
    """What a radio learnt about a device when it joined or was listed (for the hub's device table)."""

    device: str | None  # the configured device id; None for a device not in the config (yet)
    transport: str  # zigbee, zigbee2mqtt, ble
    address: str  # IEEE address, friendly name or MAC
    manufacturer: str | None = None
    model: str | None = None
    power_source: str | None = None  # "mains" or "battery" when the radio says


DeviceInfoCallback = Callable[[DeviceInfo], None]


# ---------------------------------------------------------------------------------------------
# Repeated state

# Kinds whose every report is news: a second "occupied" is new movement, a button is pressed again.
_EVERY_TRUE: Final = frozenset({EventKind.MOTION, EventKind.FALL_REPORTED})
_ALWAYS: Final = frozenset({EventKind.BUTTON, EventKind.HELP, EventKind.ACCELERATION})


class ChangeFilter:
    """Drops repeats of unchanged state (radios resend whole state with every battery report)."""

    def __init__(self) -> None:
        self._last: dict[tuple[str, EventKind], Value] = {}

    def is_news(self, device: str, kind: EventKind, value: Value) -> bool:
        if kind in _ALWAYS or (kind in _EVERY_TRUE and value is True):
            self._last[(device, kind)] = value
            return True
        key = (device, kind)
        if key in self._last and self._last[key] == value:
            return False
        self._last[key] = value
        return True

    def forget(self, device: str) -> None:
        """After a device was offline its next report is news again, whatever it says."""
        for key in [k for k in self._last if k[0] == device]:
            del self._last[key]


# ---------------------------------------------------------------------------------------------
# Bad input


class Rejections:
    """Counts refused input per `device: reason`; the first of each pair is logged, the rest counted."""

    def __init__(self, adapter: str) -> None:
        self.adapter = adapter
        self.counts: collections.Counter[str] = collections.Counter()

    def reject(self, device: str, reason: str, detail: object = None) -> None:
        key = f"{device}: {reason}"
        self.counts[key] += 1
        if self.counts[key] == 1:
            log.warning(
                "input refused (logged once per device and reason, then counted)",
                extra={"adapter": self.adapter, "device": device, "reason": reason, "detail": repr(detail)},
            )

    @property
    def total(self) -> int:
        return sum(self.counts.values())


# ---------------------------------------------------------------------------------------------
# Link reconnect policy


class LinkState(enum.StrEnum):
    CONNECTING = "connecting"
    CONNECTED = "connected"
    WAITING = "waiting"  # lost, backing off before the next attempt


@dataclasses.dataclass(slots=True)
class Backoff:
    """Capped exponential backoff with +-20 % jitter, so a flat of hubs does not reconnect in step."""

    start: float = 1.0
    cap: float = 60.0
    factor: float = 2.0
    jitter: float = 0.2
    _next: float = dataclasses.field(init=False, default=0.0)

    def __post_init__(self) -> None:
        self._next = self.start

    def reset(self) -> None:
        self._next = self.start

    def next_delay(self) -> float:
        delay = self._next * random.uniform(1 - self.jitter, 1 + self.jitter)  # noqa: S311 (jitter)
        self._next = min(self._next * self.factor, self.cap)
        return min(delay, self.cap)


class Reconnect:
    """States of one link: CONNECTING -> CONNECTED -> WAITING -> CONNECTING ...

    The adapter tells it what happened (`connected`, `lost`); it emits the AVAILABILITY edges for
    `link:<adapter>` and sleeps the backoff on the hub clock, so tests with a virtual clock decide
    when a reconnect is attempted.
    """

    def __init__(self, adapter: str, clock: Clock, backoff: Backoff | None = None) -> None:
        self.adapter = adapter
        self.device = link_device(adapter)
        self.clock = clock
        self.backoff = backoff or Backoff()
        self.state = LinkState.CONNECTING
        self.attempts = 0
        self.losses = 0
        self.last_error: str | None = None
        self._announced: bool | None = None  # last AVAILABILITY value emitted

    def connected(self, emit: Emit) -> None:
        self.state = LinkState.CONNECTED
        self.attempts = 0
        self.backoff.reset()
        self._announce(emit, True)

    def lost(self, emit: Emit, error: BaseException | str) -> None:
        """The link went away (or an attempt failed): say so once, then back off."""
        if self.state is LinkState.CONNECTED:
            self.losses += 1
        self.state = LinkState.WAITING
        self.last_error = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        self._announce(emit, False)

    async def wait(self) -> None:
        """Sleep the next backoff delay, then enter CONNECTING."""
        delay = self.backoff.next_delay()
        log.info(
            "link down, reconnecting",
            extra={"adapter": self.adapter, "delay_s": round(delay, 2), "error": self.last_error},
        )
        await self.clock.sleep_until(self.clock.now().mono + delay)
        self.state = LinkState.CONNECTING
        self.attempts += 1

    def _announce(self, emit: Emit, up: bool) -> None:
        if self._announced is up:
            return
        self._announced = up
        now = self.clock.now()
        emit(
            Event(
                kind=EventKind.AVAILABILITY,
                device=self.device,
                room=None,
                value=up,
                wall=now.wall,
                mono=now.mono,
                source=self.adapter,
            )
        )
        if up:
            log.info("link up", extra={"adapter": self.adapter})
        else:
            log.warning("link lost", extra={"adapter": self.adapter, "error": self.last_error})


# ---------------------------------------------------------------------------------------------
# Per-device availability


@dataclasses.dataclass(slots=True)
class _Device:
    device: str
    room: str | None
    default_timeout: float
    last_seen: float | None = None
    online: bool | None = None  # None: not heard of since start
    gaps: collections.deque[float] = dataclasses.field(
        default_factory=lambda: collections.deque(maxlen=GAP_HISTORY)
    )
    deadline: float | None = None


class AvailabilityTracker:
    """Learned per-device reporting interval -> AVAILABILITY events, on the hub clock.

    A device is offline once it has been silent for `GAP_FACTOR` times the longest of its recent
    gaps (clamped to `MIN_TIMEOUT`..`MAX_TIMEOUT`); until it has shown `MIN_GAPS` gaps, for its
    default (2 h mains, 6 h battery). A fixed `offline_after` from the config replaces learning.
    """

    def __init__(self, clock: Clock, source: str, *, offline_after: float | None = None) -> None:
        self.clock = clock
        self.source = source
        self.offline_after = offline_after
        self._devices: dict[str, _Device] = {}
        self._heap: list[tuple[float, str]] = []  # (deadline, device); stale entries skipped
        self._changed = asyncio.Event()

    def watch(self, device: str, room: str | None, *, mains: bool) -> None:
        """Know a device before it reports, so one that never reports is also found offline."""
        if device in self._devices:
            return
        default = DEFAULT_MAINS_TIMEOUT if mains else DEFAULT_BATTERY_TIMEOUT
        entry = _Device(device, room, default)
        self._devices[device] = entry
        self._schedule(entry, self.clock.now().mono)

    def timeout(self, device: str) -> float:
        entry = self._devices[device]
        if self.offline_after is not None:
            return self.offline_after
        if len(entry.gaps) < MIN_GAPS:
            return entry.default_timeout
        return min(MAX_TIMEOUT, max(MIN_TIMEOUT, GAP_FACTOR * max(entry.gaps)))

    def seen(self, device: str, emit: Emit, mono: float | None = None) -> None:
        """A report from the device arrived: learn the gap, move its deadline, say "online" on an edge."""
        entry = self._devices.get(device)
        if entry is None:
            return
        now = self.clock.now()
        at = now.mono if mono is None else mono
        if entry.last_seen is not None and at > entry.last_seen:
            entry.gaps.append(at - entry.last_seen)
        entry.last_seen = at
        if entry.online is not True:
            entry.online = True
            emit(self._event(entry, True))
        self._schedule(entry, at)

    def set_online(self, device: str, online: bool, emit: Emit) -> None:
        """An explicit statement from the transport (Zigbee2MQTT's availability topic)."""
        entry = self._devices.get(device)
        if entry is None or entry.online is online:
            return
        if online:
            self.seen(device, emit)
            return
        entry.online = False
        entry.deadline = None
        emit(self._event(entry, False))

    def next_deadline(self) -> float | None:
        while self._heap:
            deadline, device = self._heap[0]
            if self._devices[device].deadline == deadline:
                return deadline
            heapq.heappop(self._heap)  # superseded by a later report
        return None

    def expire(self, emit: Emit) -> None:
        """Mark every device whose deadline has passed offline."""
        now = self.clock.now().mono
        while (deadline := self.next_deadline()) is not None and deadline <= now:
            _, device = heapq.heappop(self._heap)
            entry = self._devices[device]
            entry.deadline = None
            if entry.online is not False:
                entry.online = False
                log.warning(
                    "device offline",
                    extra={
                        "device": device,
                        "silent_s": round(now - (entry.last_seen if entry.last_seen is not None else now), 1),
                        "timeout_s": round(self.timeout(device), 1),
                    },
                )
                emit(self._event(entry, False))

    async def run(self, emit: Emit) -> None:
        """Sleep until the next deadline (or until a report moves the deadlines), expire, repeat."""
        while True:
            self._changed.clear()
            self.expire(emit)
            deadline = self.next_deadline()
            sleeper = asyncio.ensure_future(
                self.clock.sleep_until(deadline) if deadline is not None else asyncio.Event().wait()
            )
            changed = asyncio.ensure_future(self._changed.wait())
            try:
                await asyncio.wait({sleeper, changed}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for future in (sleeper, changed):
                    future.cancel()
                await asyncio.gather(sleeper, changed, return_exceptions=True)

    def status(self) -> dict[str, dict[str, float | bool | None]]:
        """Per device: online, last seen (mono) and the timeout in force, for health pages."""
        return {
            name: {"online": entry.online, "last_seen": entry.last_seen, "timeout_s": self.timeout(name)}
            for name, entry in self._devices.items()
        }

    def _schedule(self, entry: _Device, at: float) -> None:
        previous = self.next_deadline()
        entry.deadline = at + self.timeout(entry.device)
        heapq.heappush(self._heap, (entry.deadline, entry.device))
        if previous is None or entry.deadline < previous:
            self._changed.set()  # an earlier deadline than the one `run` sleeps on

    def _event(self, entry: _Device, online: bool) -> Event:
        now = self.clock.now()
        return Event(
            kind=EventKind.AVAILABILITY,
            device=entry.device,
            room=entry.room,
            value=online,
            wall=now.wall,
            mono=now.mono,
            source=self.source,
        )


__all__ = [
    "AvailabilityTracker",
    "Backoff",
    "ChangeFilter",
    "DeviceInfo",
    "DeviceInfoCallback",
    "LinkState",
    "Reconnect",
    "Rejections",
    "link_device",
]
