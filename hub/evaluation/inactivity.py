"""`aal-hub eval inactivity`: replay a real home through the whole rule set and inject emergencies.

The home's sensor log (Ordóñez or van Kasteren, detected by `devices.replay.load_dataset`) is
played through every detector `hub.detectors.build_detectors` makes for the home's config, in a
`RuleEngine` on a `VirtualClock` (the engine without the daemon: same decisions, no store).

- **False alarms**: inactivity incidents on the unmodified log.
- **Emergencies**: at seeded random instants when the labels say the resident is at home and
  awake (inside the labelled period, outside every sleeping and leaving label), the resident
  stops: no sensor event after the instant, sensors already on stay on. The engine's state at
  the instant is copied and its timers run on for up to 12 h; the time from the instant to the
  first inactivity incident raised at or after it is the time to alert. No incident within 12 h
  is a miss. An inactivity incident already open at the instant (a false alarm that happened to
  be running) counts as alerted after 0 minutes and is reported as `already_open`.
- Learning uses only the past: the detectors see the log in order, and each emergency is judged
  by the state they had learned up to its instant.
- **What no detector can beat** (`bound_median_minutes`, `bound_p90_minutes`): an emergency
  injected at an instant looks exactly like the real log until the resident's next real sign of
  life. A detector that raises nothing on the unmodified log therefore cannot alert before it:
  the time from each instant to that next sign of life is a lower bound on its time to alert.
- **What no detector of this kind can beat, even knowing the whole log** (`hindsight_median_minutes`,
  and `hindsight_weekday_median_minutes` with a profile per weekday): limits per context and
  15-minute slot of the day set, with hindsight, to the longest quiet that was ever in progress
  there on the unmodified log (so, by construction, no false alarm), and each emergency judged
  by them. A learning detector knows less than that; if this median misses a target, the target
  is out of reach for any detector that decides by context and time of day.
- **Trade-off** (`--sweep`): the same replay for several sensitivities (the learned margin and
  the shortest learned limit), so what a home allows at a given false-alarm rate is measured,
  not guessed.
"""

from __future__ import annotations

import argparse
import bisect
import collections
import copy
import dataclasses
import datetime as dt
import json
import math
import random
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final
from zoneinfo import ZoneInfo

import msgspec

from devices.replay import ReplayDataset, ReplayFormatError, load_dataset, to_events, virtual_clock_for
from hub.clock import Instant
from hub.detectors import build_detectors, inactivity_params
from hub.engine import RuleEngine
from hub.events import Incident, IncidentKind
from rules.base import ClearIncident
from rules.inactivity import DEFAULT_LIMITS as _DEFAULT_LIMITS
from rules.inactivity import (
    SLOT_S,
    SLOTS,
    InactivityDetector,
    Posture,
    PostureLimits,
    is_sign_of_life,
    slot_index,
)
from rules.localtime import local

CAP_S: Final = 12 * 3600.0
DEFAULT_INJECTIONS: Final = 200
DEFAULT_TZ: Final = "Europe/Berlin"
# Label words that mean "asleep" or "not at home" in the supported releases (and their siblings).
_ASLEEP: Final = ("sleep", "bed")
_AWAY: Final = ("leav", "away", "outside", "out of home")
# Sensitivities `--sweep` tries: (margin on the longest quiet seen, shortest learned limit in minutes).
SWEEP: Final = tuple((margin, floor) for margin in (1.25, 1.5, 2.0, 3.0) for floor in (60, 90, 120, 180, 240))


class _Sink:
    """Collects what the engine raises and clears; copied together with the engine for a probe."""

    def __init__(self) -> None:
        self.raised: list[Incident] = []
        self.open_inactivity = 0

    def raise_incident(self, incident: Incident) -> None:
        self.raised.append(incident)
        if incident.kind is IncidentKind.INACTIVITY:
            self.open_inactivity += 1

    def clear_incident(self, clear: ClearIncident, now: Instant) -> None:
        if clear.kind is IncidentKind.INACTIVITY:
            self.open_inactivity = max(0, self.open_inactivity - 1)


@dataclasses.dataclass(frozen=True, slots=True)
class _Probe:
    wall: float
    context: str
    quiet_since: float | None  # the last sign of life before the instant (wall)
    away: bool  # the detector believed the resident away: suspended
    stage: str  # "learning" (confidence < 1) or "learned"
    minutes: float | None  # None: missed
    already_open: bool


def eligible_spans(dataset: ReplayDataset) -> list[tuple[float, float]]:
    """Labelled time when the resident is at home and awake: the labelled period minus sleep and absence."""
    if not dataset.activities:
        return []
    excluded = sorted(
        (a.start, a.end)
        for a in dataset.activities
        if any(word in a.label.lower() for word in (*_ASLEEP, *_AWAY))
    )
    start = dataset.activities[0].start
    end = max(a.end for a in dataset.activities)
    spans: list[tuple[float, float]] = []
    cursor = start
    for lo, hi in excluded:
        if lo > cursor:
            spans.append((cursor, min(lo, end)))
        cursor = max(cursor, hi)
    if cursor < end:
        spans.append((cursor, end))
    return [(lo, hi) for lo, hi in spans if hi > lo]


def sample_instants(spans: Sequence[tuple[float, float]], count: int, seed: int) -> list[float]:
    """`count` instants uniformly over the spans, sorted; the same seed gives the same instants."""
    total = sum(hi - lo for lo, hi in spans)
    if total <= 0 or count <= 0:
        return []
    rng = random.Random(seed)  # noqa: S311 (reproducible sampling, not secrecy)
    cumulative: list[float] = []
    running = 0.0
    for lo, hi in spans:
        running += hi - lo
        cumulative.append(running)
    instants = []
    for _ in range(count):
        x = rng.uniform(0, total)
        index = min(bisect.bisect_left(cumulative, x), len(spans) - 1)
        lo, hi = spans[index]
        before = cumulative[index] - (hi - lo)
        instants.append(min(hi, lo + (x - before)))
    return sorted(instants)


def _quantile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _round(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


def evaluate(
    data_dir: Path,
    seed: int = 1,
    *,
    injections: int = DEFAULT_INJECTIONS,
    timezone: str = DEFAULT_TZ,
    overrides: Mapping[str, Any] | None = None,
    details: bool = False,
) -> dict[str, Any]:
    """Replay the home, inject emergencies, and measure; `overrides` replace inactivity parameters."""
    from hub.cli import replay_config

    started = time.perf_counter()
    tz = ZoneInfo(timezone)
    dataset = load_dataset(Path(data_dir), tz)
    config = replay_config(dataset)
    config = msgspec.structs.replace(config, flat=msgspec.structs.replace(config.flat, timezone=timezone))
    detectors = build_detectors(config)
    if overrides:
        params = {**inactivity_params(config), **overrides}
        detectors = [
            InactivityDetector(**params) if isinstance(d, InactivityDetector) else d for d in detectors
        ]
    clock = virtual_clock_for(dataset)
    sink = _Sink()
    engine = RuleEngine(detectors, clock, sink.raise_incident, sink.clear_incident)
    instants = sample_instants(eligible_spans(dataset), injections, seed)
    origin = clock.now()

    def at(wall: float) -> Instant:
        return Instant(wall, origin.mono + (wall - origin.wall))

    probes: list[_Probe] = []
    pending = collections.deque(instants)
    events = list(to_events(dataset, origin.mono))
    alive = [e.wall for e in events if is_sign_of_life(e)]
    bounds = [
        (alive[i] - instant) / 60.0
        if (i := bisect.bisect_right(alive, instant)) < len(alive)
        else CAP_S / 60.0
        for instant in instants
    ]
    for event in events:
        while pending and pending[0] < event.wall:
            probes.append(_probe(engine, sink, at(pending.popleft())))
        clock.advance_to(event.mono)
        engine.handle(event)
    while pending:
        probes.append(_probe(engine, sink, at(pending.popleft())))
    engine.fire_due(at(dataset.end))

    kinds = collections.Counter(str(i.kind) for i in sink.raised)
    hindsight: dict[str, float | None] = {}
    per_probe: list[float | None] = [None] * len(probes)
    learned = next((d for d in detectors if isinstance(d, InactivityDetector)), None)
    if learned is not None:
        gaps = [(float(g[0]), float(g[1]), str(g[2])) for g in learned.snapshot()["gaps"]]
        for name, by_weekday in (("hindsight", False), ("hindsight_weekday", True)):
            limits = hindsight_limits(gaps, tz, weekday=by_weekday)
            minutes = [hindsight_minutes(p, limits, tz, weekday=by_weekday) for p in probes]
            if not by_weekday:
                per_probe = minutes
            found = [m for m in minutes if m is not None]
            hindsight[f"{name}_median_minutes"] = _round(_quantile(found, 0.5))
            hindsight[f"{name}_p90_minutes"] = _round(_quantile(found, 0.9))
    false_alarms = [i for i in sink.raised if i.kind is IncidentKind.INACTIVITY]
    times = [p.minutes for p in probes if p.minutes is not None]
    inactivity = next((d for d in detectors if isinstance(d, InactivityDetector)), None)
    days = dataset.days
    result: dict[str, Any] = {
        "home": dataset.name,
        "days": round(days, 2),
        "events": len(dataset.changes),
        "timezone": timezone,
        "seed": seed,
        "false_alarms": len(false_alarms),
        "false_alarms_per_day": round(len(false_alarms) / days, 3) if days > 0 else None,
        "injected": len(probes),
        "detected": len(times),
        "missed": len(probes) - len(times),
        "already_open": sum(p.already_open for p in probes),
        "median_minutes_to_alert": _round(_quantile(times, 0.5)),
        "p90_minutes_to_alert": _round(_quantile(times, 0.9)),
        "bound_median_minutes": _round(_quantile(bounds, 0.5)),
        "bound_p90_minutes": _round(_quantile(bounds, 0.9)),
        **hindsight,
        "by_context": _breakdown(probes, lambda p: p.context),
        "by_stage": _breakdown(probes, lambda p: p.stage),
        "incidents_by_kind": dict(sorted(kinds.items())),
        "false_alarm_reasons": [f"{local(i.wall, tz):%a %Y-%m-%d %H:%M}: {i.reason}" for i in false_alarms],
        "learning": inactivity.learning_state() if inactivity is not None else None,
        "detector_failures": dict(engine.failures),
        "seconds": round(time.perf_counter() - started, 2),
    }
    if details:
        result["probes"] = [
            {
                "at": f"{local(p.wall, tz):%a %Y-%m-%d %H:%M}",
                "context": p.context,
                "stage": p.stage,
                "minutes": _round(p.minutes),
                "bound_minutes": _round(bound),
                "hindsight_minutes": _round(seen),
            }
            for p, bound, seen in zip(probes, bounds, per_probe, strict=True)
        ]
    return result


def sweep(
    data_dir: Path,
    seed: int = 1,
    *,
    injections: int = DEFAULT_INJECTIONS,
    timezone: str = DEFAULT_TZ,
    settings: Sequence[tuple[float, float]] = SWEEP,
) -> dict[str, Any]:
    """False alarms against time to alert for each (margin, shortest limit in minutes).

    The shortest limit applies to the active and seated postures (in bed keeps its own), so the
    rows show how far learned limits could be trusted on this home; `best` is the setting with
    the shortest median among those within the 0.03 false alarms per day target, if any.
    """
    rows = []
    for margin, floor_min in settings:
        limits = {
            posture: PostureLimits(floor_s=floor_min * 60.0, ceiling_s=bounds.ceiling_s)
            for posture, bounds in _DEFAULT_LIMITS.items()
            if posture is not Posture.IN_BED
        }
        result = evaluate(
            data_dir,
            seed,
            injections=injections,
            timezone=timezone,
            overrides={"margin": margin, "limits": limits},
        )
        rows.append(
            {
                "margin": margin,
                "floor_minutes": floor_min,
                **{key: result[key] for key in (*_SWEEP_KEYS, "bound_median_minutes")},
            }
        )
    within = [
        r for r in rows if r["false_alarms_per_day"] is not None and r["false_alarms_per_day"] <= FA_TARGET
    ]
    timed = [r for r in within if r["median_minutes_to_alert"] is not None]
    best = min(timed, key=lambda r: r["median_minutes_to_alert"], default=None)
    home = rows[0]["home"] if rows else None
    return {"home": home, "seed": seed, "fa_target_per_day": FA_TARGET, "best": best, "settings": rows}


FA_TARGET: Final = 0.03
_SWEEP_KEYS: Final = (
    "home",
    "false_alarms",
    "false_alarms_per_day",
    "detected",
    "injected",
    "median_minutes_to_alert",
    "p90_minutes_to_alert",
)


def _breakdown(probes: Sequence[_Probe], key: Callable[[_Probe], str]) -> dict[str, dict[str, Any]]:
    groups: dict[str, list[_Probe]] = collections.defaultdict(list)
    for probe in probes:
        groups[key(probe)].append(probe)
    result = {}
    for name, mine in sorted(groups.items()):
        found = [p.minutes for p in mine if p.minutes is not None]
        result[name] = {
            "injected": len(mine),
            "detected": len(found),
            "median_minutes_to_alert": _round(_quantile(found, 0.5)),
        }
    return result


def _probe(engine: RuleEngine, sink: _Sink, instant: Instant) -> _Probe:
    """The resident stops at `instant`: run a copy of the engine's timers on, with no more events."""
    probe_engine, probe_sink = copy.deepcopy((engine, sink))
    detector = next((d for d in probe_engine.detectors if isinstance(d, InactivityDetector)), None)
    status = detector.status() if detector is not None else {}
    context = str(status.get("context"))
    quiet_since = status.get("last_wall")
    away = status.get("presence") == "away"
    learned = (
        detector is not None and detector.confidence(local(instant.wall, detector.tz).date().toordinal()) >= 1
    )
    stage = "learned" if learned else "learning"
    already_open = sink.open_inactivity > 0
    before = len(probe_sink.raised)
    probe_engine.fire_due(instant.after(CAP_S))
    alerts = [
        i for i in probe_sink.raised[before:] if i.kind is IncidentKind.INACTIVITY and i.mono >= instant.mono
    ]
    if already_open:
        return _Probe(instant.wall, context, quiet_since, away, stage, 0.0, already_open=True)
    if not alerts:
        return _Probe(instant.wall, context, quiet_since, away, stage, None, already_open=False)
    minutes = (alerts[0].mono - instant.mono) / 60.0
    return _Probe(instant.wall, context, quiet_since, away, stage, minutes, already_open=False)


Gap = tuple[float, float, str]  # start (wall), duration (s), context


def hindsight_limits(
    gaps: Sequence[Gap], tz: dt.tzinfo, *, weekday: bool
) -> dict[tuple[str, int], list[float]]:
    """Per (context, weekday or -1) and slot: the longest quiet ever in progress there, at least
    one slot (shorter quiets are not kept, so a slot must allow them all)."""
    limits: dict[tuple[str, int], list[float]] = {}
    for start, duration, context in gaps:
        end = start + duration
        slot = math.floor(start / SLOT_S) * SLOT_S
        while slot < end:
            moment = local(slot, tz)
            row = limits.setdefault((context, moment.weekday() if weekday else -1), [float(SLOT_S)] * SLOTS)
            index = slot_index(moment)
            row[index] = max(row[index], min(slot + SLOT_S, end) - start)
            slot += SLOT_S
    return limits


def hindsight_minutes(
    probe: _Probe, limits: Mapping[tuple[str, int], list[float]], tz: dt.tzinfo, *, weekday: bool
) -> float | None:
    """When limits set with hindsight would first see the emergency at `probe` (None: never
    within the cap, or the resident was believed away)."""
    if probe.away or probe.quiet_since is None:
        return None
    start = probe.quiet_since
    moment_wall = probe.wall
    while moment_wall < probe.wall + CAP_S:
        moment = local(moment_wall, tz)
        row = limits.get((probe.context, moment.weekday() if weekday else -1))
        limit = row[slot_index(moment)] if row is not None else float(SLOT_S)
        slot_end = (math.floor(moment_wall / SLOT_S) + 1) * SLOT_S
        fire = max(moment_wall, start + limit)
        if fire < slot_end:
            return (fire - probe.wall) / 60.0
        moment_wall = slot_end
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="aal-hub eval inactivity",
        description="Replay a real home through the whole rule set and inject emergencies.",
    )
    parser.add_argument("--data", type=Path, required=True, help="an Ordóñez or van Kasteren home folder")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--injections", type=int, default=DEFAULT_INJECTIONS)
    parser.add_argument("--tz", default=DEFAULT_TZ, help="the home's time zone (default Europe/Berlin)")
    parser.add_argument("--details", action="store_true", help="list every injected emergency")
    parser.add_argument(
        "--sweep", action="store_true", help="false alarms against time to alert for several sensitivities"
    )
    args = parser.parse_args(argv)
    try:
        if args.sweep:
            return _print_sweep(
                sweep(args.data, args.seed, injections=args.injections, timezone=args.tz), args.json
            )
        result = evaluate(
            args.data, args.seed, injections=args.injections, timezone=args.tz, details=args.details
        )
    except (OSError, ReplayFormatError) as err:
        print(f"aal-hub eval inactivity: cannot read {args.data}: {err}", file=sys.stderr)
        return 4
    if args.json:
        print(json.dumps(result, ensure_ascii=False))
    else:
        for key, value in result.items():
            if key not in {"false_alarm_reasons", "learning", "by_context", "by_stage", "probes"}:
                print(f"{key:>26}: {value}")
        for line in result["false_alarm_reasons"]:
            print(f"{'false alarm':>26}: {line}")
    return 0


def _print_sweep(result: Mapping[str, Any], as_json: bool) -> int:
    if as_json:
        print(json.dumps(result, ensure_ascii=False))
        return 0
    print(f"{result['home']} (seed {result['seed']}): false alarms against time to alert")
    print(f"{'margin':>6} {'floor':>6} {'FA':>3} {'FA/day':>7} {'median':>7} {'p90':>7} {'found':>8}")
    for row in result["settings"]:
        print(
            f"{row['margin']:>6} {row['floor_minutes']:>6} {row['false_alarms']:>3} "
            f"{row['false_alarms_per_day']:>7} {row['median_minutes_to_alert']!s:>7} "
            f"{row['p90_minutes_to_alert']!s:>7} {row['detected']:>4}/{row['injected']:<3}"
        )
    best = result["best"]
    bound = result["settings"][0]["bound_median_minutes"] if result["settings"] else None
    if best is None:
        print(f"no setting stays within {result['fa_target_per_day']} false alarms per day")
    else:
        print(
            f"best within {result['fa_target_per_day']} false alarms per day: margin {best['margin']}, "
            f"floor {best['floor_minutes']} min, median {best['median_minutes_to_alert']} min"
        )
    print(f"no detector without false alarms can have a median below {bound} min on this home")
    return 0


if __name__ == "__main__":
    sys.exit(main())
