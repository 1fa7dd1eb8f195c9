"""The contract every detector keeps: `(state, event, now) -> decisions`.

A detector owns its state, never sleeps, never reads a clock and never does I/O. Timers are
`WakeAt` decisions that the hub's rule engine schedules on its clock and answers with `on_wake`.
The same detector therefore runs identically live, in replay and in tests.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Protocol, TypeAlias

from hub.clock import Instant
from hub.events import Event, Incident, IncidentKind


@dataclasses.dataclass(frozen=True, slots=True)
class RaiseIncident:
    incident: Incident


@dataclasses.dataclass(frozen=True, slots=True)
class ClearIncident:
    """The condition behind an open incident of this kind (and room) is gone."""

    kind: IncidentKind
    room: str | None
    reason: str


@dataclasses.dataclass(frozen=True, slots=True)
class WakeAt:
    """Call `on_wake(key, now)` once the hub clock's monotonic time reaches `mono`.

    A later WakeAt with the same key replaces the earlier one; `mono=None` cancels it.
    """

    key: str
    mono: float | None


Decision: TypeAlias = RaiseIncident | ClearIncident | WakeAt


class Detector(Protocol):
    """`kinds`, if a detector has it, is the set of event kinds it reads; the engine then does
    not call it for others (a detector without it sees every event). `on_start(now)`, if it has
    one, is called once when the hub starts, after its learned state is restored: the moment to
    set timers for what it already knows (a device it expects to hear from)."""

    name: str

    def on_event(self, event: Event, now: Instant) -> Sequence[Decision]: ...

    def on_wake(self, key: str, now: Instant) -> Sequence[Decision]: ...
