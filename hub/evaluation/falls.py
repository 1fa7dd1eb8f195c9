"""`aal-hub eval falls`: stream every trial of SisFall or UMAFall through the fall algorithm.

Each trial gets a fresh `FallCore` at the data's own sample rate. A fall trial counts as detected
if the algorithm fires at least once; an ADL trial is a false positive if it fires at all, and
every firing in an ADL trial is a false alarm (per hour of ADL recording).

- SisFall (Sucerquia et al. 2017): `Dxx_SUBJ_Rnn.txt` / `Fxx_SUBJ_Rnn.txt`, 200 Hz, the
  ADXL345 columns (the first three; 13 bit, +-16 g, i.e. 1/256 g per count), worn at the waist.
- UMAFall (Santoyo-Ramon et al. 2017): `;`-separated CSV whose `%` header maps Sensor_ID to body
  position per file; the chest sensor's accelerometer (Sensor Type 0) is used, at the rate its
  own timestamps show (about 20 Hz).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import os
import re
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from rules.fallcore import NO_FALL, FallCore

SISFALL_G_PER_COUNT = 2 * 16 / 2**13  # ADXL345: 0.00390625 g per count
SISFALL_RATE_HZ = 200.0
UMAFALL_BODY_POSITION = "CHEST"
UMAFALL_ACCELEROMETER = 0
_PARALLEL_FROM = 8  # trials; fewer run in this process unless workers are asked for

_SISFALL_NAME = re.compile(r"^(?P<code>[DF]\d\d)_(?P<subject>S[AE]\d\d)_R(?P<trial>\d\d)\.txt$")
_UMAFALL_NAME = re.compile(
    r"^UMAFall_Subject_(?P<subject>\d+)_(?P<label>ADL|Fall)_(?P<activity>.+?)_(?P<trial>\d+)_"
    r"\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d\.csv$"
)


class DatasetError(Exception):
    """The folder is not a SisFall or UMAFall folder, or a file in it cannot be read."""


@dataclasses.dataclass(frozen=True, slots=True)
class Trial:
    name: str
    subject: str
    activity: str  # SisFall code (D01..F15) or UMAFall activity (forwardFall, Walking, ...)
    fall: bool
    rate_hz: float
    samples: tuple[tuple[float, float, float], ...]

    @property
    def hours(self) -> float:
        return len(self.samples) / self.rate_hz / 3600.0


@dataclasses.dataclass(frozen=True, slots=True)
class Outcome:
    """What one trial did; no samples, so workers hand back little."""

    name: str
    subject: str
    activity: str
    fall: bool
    rate_hz: float
    hours: float
    firings: int
    codes: tuple[int, ...]
    impacts_g: tuple[float, ...]


def detect_dataset(data_dir: Path) -> str:
    """Which dataset the folder holds: "sisfall" or "umafall"."""
    if not data_dir.is_dir():
        raise DatasetError(f"{data_dir}: not a directory")
    for path in data_dir.rglob("*"):
        if _SISFALL_NAME.match(path.name):
            return "sisfall"
        if _UMAFALL_NAME.match(path.name):
            return "umafall"
    raise DatasetError(f"{data_dir}: no SisFall (Dxx_SA01_R01.txt) or UMAFall (UMAFall_*.csv) files")


def read_sisfall(path: Path) -> Trial:
    match = _SISFALL_NAME.match(path.name)
    if match is None:
        raise DatasetError(f"{path}: not a SisFall trial name")
    samples: list[tuple[float, float, float]] = []
    with path.open(encoding="ascii", errors="replace") as lines:
        for number, line in enumerate(lines, 1):
            fields = line.strip().rstrip(";").split(",")
            if len(fields) < 3:
                continue  # blank line
            try:
                x, y, z = (int(f) * SISFALL_G_PER_COUNT for f in fields[:3])
            except ValueError as err:
                raise DatasetError(f"{path}:{number}: expected integer counts") from err
            samples.append((x, y, z))
    return Trial(
        name=path.name,
        subject=match["subject"],
        activity=match["code"],
        fall=match["code"].startswith("F"),
        rate_hz=SISFALL_RATE_HZ,
        samples=tuple(samples),
    )


def read_umafall(path: Path) -> Trial:
    match = _UMAFALL_NAME.match(path.name)
    if match is None:
        raise DatasetError(f"{path}: not a UMAFall trial name")
    positions: dict[str, int] = {}
    id_col = position_col = -1
    columns = {"time": 0, "x": 2, "y": 3, "z": 4, "type": 5, "id": 6}
    times: list[float] = []
    samples: list[tuple[float, float, float]] = []
    chest: int | None = None
    with path.open(encoding="latin-1") as lines:
        for number, raw in enumerate(lines, 1):
            line = raw.strip()
            if not line:
                continue
            if line.startswith("%"):
                fields = [f.strip() for f in line[1:].split(";")]
                lowered = [f.lower() for f in fields]
                if "sensor_id" in lowered and "position" in lowered:
                    id_col, position_col = lowered.index("sensor_id"), lowered.index("position")
                elif "timestamp" in lowered and "sensor id" in lowered:
                    columns = _umafall_columns(lowered)
                elif id_col >= 0 and len(fields) > max(id_col, position_col):
                    try:
                        positions[fields[position_col].upper()] = int(fields[id_col])
                    except ValueError:
                        id_col = position_col = -1  # the sensor table has ended
                continue
            if chest is None:
                chest = positions.get(UMAFALL_BODY_POSITION)
                if chest is None:
                    raise DatasetError(f"{path}: the header names no {UMAFALL_BODY_POSITION} sensor")
            fields = line.split(";")
            try:
                if (
                    int(fields[columns["type"]]) != UMAFALL_ACCELEROMETER
                    or int(fields[columns["id"]]) != chest
                ):
                    continue
                times.append(float(fields[columns["time"]]))
                samples.append(
                    (float(fields[columns["x"]]), float(fields[columns["y"]]), float(fields[columns["z"]]))
                )
            except (ValueError, IndexError) as err:
                raise DatasetError(f"{path}:{number}: expected a `;`-separated sample row") from err
    if len(samples) < 2 or times[-1] <= times[0]:
        raise DatasetError(f"{path}: too few {UMAFALL_BODY_POSITION} accelerometer samples")
    return Trial(
        name=path.name,
        subject=f"Subject_{match['subject']}",
        activity=match["activity"],
        fall=match["label"] == "Fall",
        rate_hz=(len(times) - 1) / ((times[-1] - times[0]) / 1000.0),
        samples=tuple(samples),
    )


def _umafall_columns(lowered: Sequence[str]) -> dict[str, int]:
    def find(*words: str) -> int:
        for i, name in enumerate(lowered):
            if all(word in name for word in words):
                return i
        raise DatasetError(f"UMAFall column header lacks {' '.join(words)!r}")

    return {
        "time": find("timestamp"),
        "x": find("x-axis"),
        "y": find("y-axis"),
        "z": find("z-axis"),
        "type": find("sensor type"),
        "id": find("sensor id"),
    }


def trial_paths(data_dir: Path, dataset: str) -> list[Path]:
    pattern = _SISFALL_NAME if dataset == "sisfall" else _UMAFALL_NAME
    return sorted(
        (p for p in data_dir.rglob("*") if pattern.match(p.name) and p.is_file()),
        key=lambda p: p.name,
    )


def read_trial(path: Path, dataset: str) -> Trial:
    return read_sisfall(path) if dataset == "sisfall" else read_umafall(path)


def resample(trial: Trial, rate_hz: float) -> Trial:
    """The trial as a slower sensor would report it: means over blocks of a whole number of samples."""
    factor = max(1, round(trial.rate_hz / rate_hz))
    if factor == 1:
        return trial
    samples: list[tuple[float, float, float]] = []
    for start in range(0, len(trial.samples) - factor + 1, factor):
        block = trial.samples[start : start + factor]
        samples.append(
            (
                sum(s[0] for s in block) / factor,
                sum(s[1] for s in block) / factor,
                sum(s[2] for s in block) / factor,
            )
        )
    return dataclasses.replace(trial, rate_hz=trial.rate_hz / factor, samples=tuple(samples))


def run_trial(trial: Trial) -> Outcome:
    core = FallCore(trial.rate_hz)
    codes: list[int] = []
    impacts: list[float] = []
    for x, y, z in trial.samples:
        code = core.update(x, y, z)
        if code != NO_FALL:
            codes.append(code)
            impacts.append(round(core.impact_g, 2))
    return Outcome(
        name=trial.name,
        subject=trial.subject,
        activity=trial.activity,
        fall=trial.fall,
        rate_hz=trial.rate_hz,
        hours=trial.hours,
        firings=len(codes),
        codes=tuple(codes),
        impacts_g=tuple(impacts),
    )


def _load_and_run(job: tuple[Path, str, float | None]) -> Outcome:
    path, dataset, rate_hz = job
    trial = read_trial(path, dataset)
    if rate_hz is not None:
        trial = resample(trial, rate_hz)
    return run_trial(trial)


def _ratio(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def summarize(outcomes: Sequence[Outcome]) -> dict[str, object]:
    """The metrics of the contract for one group of trials."""
    falls = [o for o in outcomes if o.fall]
    adl = [o for o in outcomes if not o.fall]
    tp = sum(1 for o in falls if o.firings)
    fp = sum(1 for o in adl if o.firings)
    false_alarms = sum(o.firings for o in adl)
    adl_hours = sum(o.hours for o in adl)
    return {
        "trials": len(outcomes),
        "falls": len(falls),
        "adl": len(adl),
        "tp": tp,
        "fn": len(falls) - tp,
        "tn": len(adl) - fp,
        "fp": fp,
        "sensitivity": _ratio(tp, len(falls)),
        "specificity": _ratio(len(adl) - fp, len(adl)),
        "false_alarms": false_alarms,
        "adl_hours": round(adl_hours, 4),
        "false_alarms_per_hour": round(false_alarms / adl_hours, 4) if adl_hours else None,
    }


def evaluate(
    data_dir: Path, *, rate_hz: float | None = None, workers: int | None = None
) -> dict[str, object]:
    """Stream every trial under `data_dir` through `FallCore`; the JSON object of the contract."""
    started = time.monotonic()
    dataset = detect_dataset(data_dir)
    paths = trial_paths(data_dir, dataset)
    jobs = [(path, dataset, rate_hz) for path in paths]
    if workers is None:
        workers = (os.cpu_count() or 1) if len(jobs) >= _PARALLEL_FROM else 1
    if workers > 1:
        # spawn, not fork: forking a process that may run threads (a test runner, the daemon's
        # CLI) is unsafe and deprecated from Python 3.12.
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            outcomes = list(pool.map(_load_and_run, jobs, chunksize=4))
    else:
        outcomes = [_load_and_run(job) for job in jobs]
    rates = [o.rate_hz for o in outcomes]
    result: dict[str, object] = {"dataset": dataset, "data": str(data_dir)}
    result["rate_hz"] = round(sum(rates) / len(rates), 2) if rates else None
    result["rate_hz_range"] = [round(min(rates), 2), round(max(rates), 2)] if rates else None
    result.update(summarize(outcomes))
    subjects = sorted({o.subject for o in outcomes})
    result["per_subject"] = {s: summarize([o for o in outcomes if o.subject == s]) for s in subjects}
    activities = sorted({(o.fall, o.activity) for o in outcomes})
    result["per_activity"] = {
        activity: {
            "fall": fall,
            "trials": sum(1 for o in outcomes if o.activity == activity),
            "fired": sum(1 for o in outcomes if o.activity == activity and o.firings),
        }
        for fall, activity in activities
    }
    result["missed_falls"] = [o.name for o in outcomes if o.fall and not o.firings]
    result["false_positive_trials"] = [o.name for o in outcomes if not o.fall and o.firings]
    result["runtime_s"] = round(time.monotonic() - started, 2)
    return result


def _print_summary(result: dict[str, object]) -> None:
    print(
        f"{result['dataset']}: {result['trials']} trials ({result['falls']} falls, "
        f"{result['adl']} ADL) at {result['rate_hz']} Hz"
    )
    print(
        f"sensitivity {result['sensitivity']}  specificity {result['specificity']}  "
        f"false alarms/h {result['false_alarms_per_hour']}"
    )
    per_subject = result["per_subject"]
    if isinstance(per_subject, dict):
        for subject, metrics in per_subject.items():
            print(
                f"  {subject}: sensitivity {metrics['sensitivity']}  specificity "
                f"{metrics['specificity']}  false alarms/h {metrics['false_alarms_per_hour']}"
            )
    for key in ("missed_falls", "false_positive_trials"):
        names = result[key]
        if isinstance(names, list) and names:
            print(f"{key.replace('_', ' ')}: {', '.join(names)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="aal-hub eval falls",
        description="Measure the fall algorithm on a SisFall or UMAFall folder.",
    )
    parser.add_argument("--data", type=Path, required=True, help="SisFall or UMAFall folder")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--rate",
        type=float,
        default=None,
        metavar="HZ",
        help="resample to about this rate first (block means), e.g. 50 or 20",
    )
    parser.add_argument("--workers", type=int, default=None, help="processes (default: CPUs)")
    args = parser.parse_args(argv)
    try:
        result = evaluate(args.data, rate_hz=args.rate, workers=args.workers)
    except (DatasetError, OSError) as err:
        print(f"aal-hub eval falls: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result, indent=2, allow_nan=False))
    else:
        _print_summary(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
