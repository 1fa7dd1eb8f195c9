"""Opt-in test tier against real radios: `pytest --zigbee-port /dev/ttyUSB0 --zigbee-radio znp`,
`pytest --ble-adapter hci0`. Without the options these tests are skipped.

Register with `pytest_plugins = ["tests.hardware_plugin"]` in tests/conftest.py.
"""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("hardware", "tests against real radio hardware")
    group.addoption("--zigbee-port", default=None, help="serial port of a Zigbee stick, e.g. /dev/ttyUSB0")
    group.addoption(
        "--zigbee-radio", default="znp", choices=["znp", "ezsp", "deconz"], help="radio library of that stick"
    )
    group.addoption("--ble-adapter", default=None, help="a BlueZ adapter to scan with, e.g. hci0")


@pytest.fixture
def zigbee_port(request: pytest.FixtureRequest) -> tuple[str, str]:
    port = request.config.getoption("--zigbee-port", default=None)
    if not port:
        pytest.skip("needs --zigbee-port (real Zigbee radio)")
    return str(port), str(request.config.getoption("--zigbee-radio", default="znp"))


@pytest.fixture
def ble_adapter(request: pytest.FixtureRequest) -> str:
    adapter = request.config.getoption("--ble-adapter", default=None)
    if not adapter:
        pytest.skip("needs --ble-adapter (real Bluetooth adapter)")
    return str(adapter)


__all__ = ["ble_adapter", "pytest_addoption", "zigbee_port"]
