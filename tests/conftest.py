"""Shared fixtures. Test hygiene: a test that leaks threads fails."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hub.clock import Instant, VirtualClock
from hub.config import HubConfig, demo_config_path, load_config, parse_config

pytest_plugins = ["tests.hardware_plugin"]

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

# 2026-03-03 08:00 Europe/Berlin, a Tuesday: fixed so tests read the same on any day.
T0 = 1772521200.0


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + 2.0
    while True:
        leaked = [t for t in threading.enumerate() if t not in before and t.is_alive() and not t.daemon] + [
            t for t in threading.enumerate() if t not in before and t.name == "store-writer"
        ]
        if not leaked or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    assert not leaked, f"test leaked threads: {leaked}"


@pytest.fixture
def demo_config() -> HubConfig:
    return load_config(demo_config_path())


@pytest.fixture
def small_config() -> HubConfig:
    return parse_config(
        """
flat: {id: test-flat, name: Testwohnung}
rooms: [hall, bathroom, bedroom]
devices:
  - {id: door, room: hall, kind: contact, role: front_door}
  - {id: bath-pir, room: bathroom, kind: motion}
  - {id: leak, room: bathroom, kind: water_leak}
  - {id: bed, room: bedroom, kind: pressure_mat, role: bed}
web: {port: 0}
""",
        "test.yaml",
    )


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock(Instant(T0, 1000.0))
