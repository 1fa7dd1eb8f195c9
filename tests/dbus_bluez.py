"""A private system D-Bus with python-dbusmock's `bluez5` template as org.bluez, for bleak's real backend.

    from tests.dbus_bluez import bluez  # the fixture; yields a `FakeBlueZ`

`DBUS_SYSTEM_BUS_ADDRESS` points at a private `dbus-daemon` for the test. Advertisements are made
the way the design notes found to work: the template's `AddDevice` gives advertisement fields the
wrong D-Bus types, so a device object is created with `Mock.AddObject` and `InterfacesAdded` is
emitted by hand; later advertisements change its properties (`UpdateProperties` emits
`PropertiesChanged`), which is what BlueZ does for a device it already knows.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

DEVICE_IFACE = "org.bluez.Device1"
MOCK_IFACE = "org.freedesktop.DBus.Mock"
BLUEZ_MOCK_IFACE = "org.bluez.Mock"


class FakeBlueZ:
    """Drives the mock BlueZ: adapters come and go, devices advertise."""

    def __init__(self, mock: object, bus: object) -> None:
        self._mock = mock
        self._bus = bus
        self._devices: set[str] = set()
        self.process: Any = None  # the mock's process (dbusmock.SpawnedMock): stop it to stop "bluetoothd"

    def add_adapter(self, name: str = "hci0") -> None:
        self._mock.AddAdapter(name, "aal-hub", dbus_interface=BLUEZ_MOCK_IFACE)  # type: ignore[attr-defined]

    def remove_adapter(self, name: str = "hci0") -> None:
        self._devices = {p for p in self._devices if not p.startswith(f"/org/bluez/{name}/")}
        self._mock.RemoveAdapterWithDevices(name, dbus_interface=BLUEZ_MOCK_IFACE)  # type: ignore[attr-defined]

    def advertise(
        self,
        address: str,
        service_data: dict[str, bytes],
        *,
        rssi: int = -60,
        name: str | None = None,
        adapter: str = "hci0",
    ) -> None:
        import dbus

        path = f"/org/bluez/{adapter}/dev_{address.upper().replace(':', '_')}"
        data = dbus.Dictionary(
            {uuid: dbus.Array(list(value), signature="y") for uuid, value in service_data.items()},
            signature="sv",
        )
        if path not in self._devices:
            props = {
                "Address": dbus.String(address.upper()),
                "AddressType": dbus.String("public"),
                "Adapter": dbus.ObjectPath(f"/org/bluez/{adapter}"),
                "Alias": dbus.String(name or address.upper()),
                "Paired": dbus.Boolean(False),
                "Bonded": dbus.Boolean(False),
                "Trusted": dbus.Boolean(False),
                "Blocked": dbus.Boolean(False),
                "Connected": dbus.Boolean(False),
                "LegacyPairing": dbus.Boolean(False),
                "ServicesResolved": dbus.Boolean(False),
                "UUIDs": dbus.Array(list(service_data), signature="s"),
                "RSSI": dbus.Int16(rssi),
                "ServiceData": data,
            }
            if name is not None:
                props["Name"] = dbus.String(name)
            self._mock.AddObject(path, DEVICE_IFACE, props, [], dbus_interface=MOCK_IFACE)  # type: ignore[attr-defined]
            self._mock.EmitSignal(  # type: ignore[attr-defined]
                "org.freedesktop.DBus.ObjectManager",
                "InterfacesAdded",
                "oa{sa{sv}}",
                dbus.Array(
                    [
                        dbus.ObjectPath(path),
                        dbus.Dictionary(
                            {DEVICE_IFACE: dbus.Dictionary(props, signature="sv")}, signature="sa{sv}"
                        ),
                    ],
                    signature="v",
                ),
                dbus_interface=MOCK_IFACE,
            )
            self._devices.add(path)
            return
        device = self._bus.get_object("org.bluez", path)  # type: ignore[attr-defined]
        device.UpdateProperties(
            DEVICE_IFACE,
            dbus.Dictionary({"ServiceData": data, "RSSI": dbus.Int16(rssi)}, signature="sv"),
            dbus_interface=MOCK_IFACE,
        )


@pytest.fixture
def bluez_bus(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeBlueZ]:
    """The private bus and the mock BlueZ (with adapter hci0), sync part."""
    if shutil.which("dbus-daemon") is None:
        pytest.skip("dbus-daemon is not installed (apt-get install dbus)")
    dbusmock = pytest.importorskip("dbusmock")
    monkeypatch.delenv("DBUS_SYSTEM_BUS_ADDRESS", raising=False)
    private = dbusmock.PrivateDBus(dbusmock.BusType.SYSTEM)
    private.start()
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", private.address)
    try:
        mock = dbusmock.SpawnedMock.spawn_with_template("bluez5", {}, bustype=dbusmock.BusType.SYSTEM)
        try:
            bus = dbusmock.BusType.SYSTEM.get_connection()
            fake = FakeBlueZ(mock.obj, bus)
            fake.process = mock
            fake.add_adapter("hci0")
            yield fake
            bus.close()
        finally:
            mock.terminate()
    finally:
        private.stop()


@pytest.fixture
async def bluez(bluez_bus: FakeBlueZ) -> AsyncIterator[FakeBlueZ]:
    """The mock BlueZ; afterwards bleak's per-loop BlueZ manager is closed with the test's loop."""
    yield bluez_bus
    from bleak.backends.bluezdbus import manager

    instance = manager._global_instances.pop(asyncio.get_running_loop(), None)
    bus = getattr(instance, "_bus", None)
    if bus is not None:
        bus.disconnect()
        await bus.wait_for_disconnect()


__all__ = ["FakeBlueZ", "bluez", "bluez_bus"]
