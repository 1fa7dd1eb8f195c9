"""BTHome v2 advertisements (service data UUID 0xFCD2): bytes in, typed objects out, no I/O.

The format (bthome.io/format): one "device information" byte (bit 0 encrypted, bit 1 MAC included,
bit 2 trigger based, bits 5-7 version = 2), optionally the MAC reversed, then objects, each an
object id followed by a value whose length and scale the id fixes (the table below), in ascending
id order. Encrypted payloads are AES-CCM with a 4-byte tag; the nonce is MAC + UUID + device
information byte + the 4-byte counter that follows the ciphertext.

Our own parser instead of `bthome-ble`: that package pulls habluetooth and a tree of Bluetooth
helpers onto the Pi; this table is tested against its published vectors (tests/test_bthome.py).

Pendant extension (the hub's own wearable; stable, the firmware uses it):
    0xF0 fall      1 byte   0x00 no fall, 0x01 fall detected            -> FALL_REPORTED
    0xF1 accel     6 bytes  x, y, z as int16 little endian in milli-g   -> ACCELERATION (g)
Both ids lie above every id BTHome has assigned, so they come last in a well-ordered payload and a
standard receiver (Home Assistant) still reads every object before them. The pendant's SOS button
is the standard button object 0x3A: a long press is a help call.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import struct
from collections.abc import Mapping
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESCCM

SERVICE_UUID: Final = "0000fcd2-0000-1000-8000-00805f9b34fb"
UUID16_LE: Final = b"\xd2\xfc"

ObjectValue = int | float | bool | str | bytes | tuple[float, ...]


class Fmt(enum.Enum):
    UINT = "uint"
    SINT = "sint"
    BOOL = "bool"
    STRING = "string"  # length-prefixed
    RAW = "raw"  # length-prefixed
    BUTTON = "button"
    DIMMER = "dimmer"
    ACCEL3 = "accel3"


@dataclasses.dataclass(frozen=True, slots=True)
class ObjectType:
    name: str
    length: int  # bytes after the id (for STRING/RAW: after the length byte, so 0 here)
    fmt: Fmt = Fmt.UINT
    factor: float = 1.0
    # 0.01 -> 2: scaled values are rounded so they compare exactly (25.06, not 25.060000000000002).
    decimals: int = dataclasses.field(init=False, default=0)

    def __post_init__(self) -> None:
        text = f"{self.factor:.10f}".rstrip("0")
        object.__setattr__(self, "decimals", len(text.split(".")[1]) if "." in text else 0)


def _u(name: str, length: int, factor: float = 1.0) -> ObjectType:
    return ObjectType(name, length, Fmt.UINT, factor)


def _s(name: str, length: int, factor: float = 1.0) -> ObjectType:
    return ObjectType(name, length, Fmt.SINT, factor)


def _b(name: str) -> ObjectType:
    return ObjectType(name, 1, Fmt.BOOL)


# Object id -> type. Names follow BTHome's; several ids share a name (different size or scale).
OBJECTS: Final[Mapping[int, ObjectType]] = {
    0x00: _u("packet_id", 1),
    0x01: _u("battery", 1),
    0x02: _s("temperature", 2, 0.01),
    0x03: _u("humidity", 2, 0.01),
    0x04: _u("pressure", 3, 0.01),
    0x05: _u("illuminance", 3, 0.01),
    0x06: _u("mass_kg", 2, 0.01),
    0x07: _u("mass_lb", 2, 0.01),
    0x08: _s("dew_point", 2, 0.01),
    0x09: _u("count", 1),
    0x0A: _u("energy", 3, 0.001),
    0x0B: _u("power", 3, 0.01),
    0x0C: _u("voltage", 2, 0.001),
    0x0D: _u("pm25", 2),
    0x0E: _u("pm10", 2),
    0x0F: _b("generic"),
    0x10: _b("power_on"),
    0x11: _b("opening"),
    0x12: _u("co2", 2),
    0x13: _u("tvoc", 2),
    0x14: _u("moisture", 2, 0.01),
    0x15: _b("battery_low"),
    0x16: _b("battery_charging"),
    0x17: _b("carbon_monoxide"),
    0x18: _b("cold"),
    0x19: _b("connectivity"),
    0x1A: _b("door"),
    0x1B: _b("garage_door"),
    0x1C: _b("gas"),
    0x1D: _b("heat"),
    0x1E: _b("light"),
    0x1F: _b("lock"),
    0x20: _b("moisture_detected"),
    0x21: _b("motion"),
    0x22: _b("moving"),
    0x23: _b("occupancy"),
    0x24: _b("plug"),
    0x25: _b("presence"),
    0x26: _b("problem"),
    0x27: _b("running"),
    0x28: _b("safety"),
    0x29: _b("smoke"),
    0x2A: _b("sound"),
    0x2B: _b("tamper"),
    0x2C: _b("vibration"),
    0x2D: _b("window"),
    0x2E: _u("humidity", 1),
    0x2F: _u("moisture", 1),
    0x3A: ObjectType("button", 1, Fmt.BUTTON),
    0x3C: ObjectType("dimmer", 2, Fmt.DIMMER),
    0x3D: _u("count", 2),
    0x3E: _u("count", 4),
    0x3F: _s("rotation", 2, 0.1),
    0x40: _u("distance_mm", 2),
    0x41: _u("distance_m", 2, 0.1),
    0x42: _u("duration", 3, 0.001),
    0x43: _u("current", 2, 0.001),
    0x44: _u("speed", 2, 0.01),
    0x45: _s("temperature", 2, 0.1),
    0x46: _u("uv_index", 1, 0.1),
    0x47: _u("volume", 2, 0.1),
    0x48: _u("volume_ml", 2),
    0x49: _u("volume_flow_rate", 2, 0.001),
    0x4A: _u("voltage", 2, 0.1),
    0x4B: _u("gas", 3, 0.001),
    0x4C: _u("gas", 4, 0.001),
    0x4D: _u("energy", 4, 0.001),
    0x4E: _u("volume", 4, 0.001),
    0x4F: _u("water", 4, 0.001),
    0x50: _u("timestamp", 4),
    0x51: _u("acceleration", 2, 0.001),
    0x52: _u("gyroscope", 2, 0.001),
    0x53: ObjectType("text", 0, Fmt.STRING),
    0x54: ObjectType("raw", 0, Fmt.RAW),
    0x55: _u("volume_storage", 4, 0.001),
    0x56: _u("conductivity", 2),
    0x57: _s("temperature", 1),
    0x58: _s("temperature", 1, 0.35),
    0x59: _s("count", 1),
    0x5A: _s("count", 2),
    0x5B: _s("count", 4),
    0x5C: _s("power", 4, 0.01),
    0x5D: _s("current", 2, 0.001),
    0x5E: _u("direction", 2, 0.01),
    0x5F: _u("precipitation", 2, 0.1),
    0x60: _u("channel", 1),
    0x61: _u("rotational_speed", 2),
    0x62: _s("speed", 4, 0.000001),
    0x63: _s("acceleration", 4, 0.000001),
    0x64: _u("light_level", 1),
    # The hub's pendant extension (module docstring).
    0xF0: _u("fall", 1),
    0xF1: ObjectType("accel", 6, Fmt.ACCEL3, 0.001),
}

FALL_OBJECT: Final = 0xF0
ACCEL_OBJECT: Final = 0xF1

# Button event byte -> the hub's action word.
BUTTON_EVENTS: Final[Mapping[int, str]] = {
    0x00: "none",
    0x01: "single",
    0x02: "double",
    0x03: "triple",
    0x04: "long",
    0x05: "long_double",
    0x06: "long_triple",
    0x80: "hold",
}
DIMMER_EVENTS: Final[Mapping[int, str]] = {0x00: "none", 0x01: "rotate_left", 0x02: "rotate_right"}


class BTHomeError(ValueError):
    """A refused advertisement; `reason` is short and stable, for counting per device."""

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        super().__init__(f"{reason}: {detail}" if detail else reason)


@dataclasses.dataclass(frozen=True, slots=True)
class Measurement:
    object_id: int
    name: str
    value: ObjectValue


@dataclasses.dataclass(frozen=True, slots=True)
class Advertisement:
    """One decoded advertisement. `counter` is the encryption counter (replay protection)."""

    measurements: tuple[Measurement, ...]
    encrypted: bool = False
    trigger_based: bool = False
    mac: str | None = None
    counter: int | None = None
    packet_id: int | None = None
    # Set when parsing stopped at an object id we do not know (objects before it are kept).
    unknown_object: int | None = None

    def values(self, name: str) -> list[ObjectValue]:
        return [m.value for m in self.measurements if m.name == name]


@functools.lru_cache(maxsize=256)
def _cipher(key: bytes) -> AESCCM:
    # Building the cipher costs more than decrypting one advertisement: one per bindkey.
    return AESCCM(key, tag_length=4)


def mac_bytes(address: str) -> bytes:
    """Address "54:48:E6:8F:80:A5" -> 6 bytes, as the nonce wants them."""
    try:
        raw = bytes.fromhex(address.replace(":", "").replace("-", ""))
    except ValueError:
        raise BTHomeError("bad address", address) from None
    if len(raw) != 6:
        raise BTHomeError("bad address", address)
    return raw


def parse(service_data: bytes, *, address: str, key: bytes | None = None) -> Advertisement:
    """Decode the 0xFCD2 service data of one advertisement from `address` (raises BTHomeError)."""
    if not service_data:
        raise BTHomeError("empty service data")
    info = service_data[0]
    if info >> 5 != 2:
        raise BTHomeError("not BTHome v2", f"version {info >> 5}")
    encrypted = bool(info & 0x01)
    mac_included = bool(info & 0x02)
    trigger_based = bool(info & 0x04)
    body = service_data[1:]
    mac: str | None = None
    if mac_included:
        if len(body) < 6:
            raise BTHomeError("truncated", "MAC announced but missing")
        mac = ":".join(f"{b:02X}" for b in reversed(body[:6]))
        body = body[6:]
    counter: int | None = None
    if encrypted:
        if key is None:
            raise BTHomeError("encrypted without bindkey")
        # ciphertext (>= 1 byte) + counter (4) + tag (4)
        if len(body) < 9:
            raise BTHomeError("truncated", "encrypted payload too short")
        counter = int.from_bytes(body[-8:-4], "little")
        nonce = mac_bytes(mac or address) + UUID16_LE + bytes([info]) + body[-8:-4]
        try:
            body = _cipher(key).decrypt(nonce, body[:-8] + body[-4:], None)
        except InvalidTag:
            raise BTHomeError("decryption failed", "wrong bindkey or corrupted") from None
    elif key is not None:
        # A bindkey is configured: plaintext from that address is a downgrade (or a spoof).
        raise BTHomeError("plaintext from an encrypted device")
    measurements, packet_id, unknown = _objects(body)
    return Advertisement(
        measurements=measurements,
        encrypted=encrypted,
        trigger_based=trigger_based,
        mac=mac,
        counter=counter,
        packet_id=packet_id,
        unknown_object=unknown,
    )


def _objects(payload: bytes) -> tuple[tuple[Measurement, ...], int | None, int | None]:
    out: list[Measurement] = []
    packet_id: int | None = None
    at = 0
    end = len(payload)
    while at < end:
        object_id = payload[at]
        kind = OBJECTS.get(object_id)
        if kind is None:
            # Lengths are known only from the table: nothing after an unknown id can be read.
            if not out:
                raise BTHomeError("unknown object id", f"0x{object_id:02X}")
            return tuple(out), packet_id, object_id
        at += 1
        if kind.fmt in {Fmt.STRING, Fmt.RAW}:
            if at >= end:
                raise BTHomeError("truncated", f"object 0x{object_id:02X} without length")
            length = payload[at]
            at += 1
        else:
            length = kind.length
        if at + length > end:
            raise BTHomeError("truncated", f"object 0x{object_id:02X} needs {length} bytes")
        raw = payload[at : at + length]
        at += length
        value = _value(kind, raw)
        if object_id == 0x00:
            packet_id = int(value)  # type: ignore[arg-type]
        out.append(Measurement(object_id, kind.name, value))
    if not out:
        raise BTHomeError("no objects")
    return tuple(out), packet_id, None


def _value(kind: ObjectType, raw: bytes) -> ObjectValue:
    fmt = kind.fmt
    if fmt is Fmt.UINT or fmt is Fmt.SINT:
        number = int.from_bytes(raw, "little", signed=fmt is Fmt.SINT)
        if kind.factor == 1.0:
            return number
        return round(number * kind.factor, kind.decimals)
    if fmt is Fmt.BOOL:
        return raw[0] != 0
    if fmt is Fmt.BUTTON:
        return BUTTON_EVENTS.get(raw[0], f"unknown_0x{raw[0]:02x}")
    if fmt is Fmt.DIMMER:
        return f"{DIMMER_EVENTS.get(raw[0], 'unknown')}:{int.from_bytes(raw[1:], 'little', signed=True)}"
    if fmt is Fmt.STRING:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise BTHomeError("bad text object") from None
    if fmt is Fmt.ACCEL3:
        x, y, z = struct.unpack("<hhh", raw)
        return (round(x * kind.factor, 3), round(y * kind.factor, 3), round(z * kind.factor, 3))
    return bytes(raw)


def encrypt(
    payload: bytes, *, address: str, key: bytes, counter: int, info: int = 0x41, mac_included: bool = False
) -> bytes:
    """Build encrypted service data (for tests, the benchmark and the pendant's golden vectors)."""
    info_byte = info | 0x01 | (0x02 if mac_included else 0)
    count = counter.to_bytes(4, "little")
    nonce = mac_bytes(address) + UUID16_LE + bytes([info_byte]) + count
    sealed = AESCCM(key, tag_length=4).encrypt(nonce, payload, None)
    prefix = bytes([info_byte]) + (mac_bytes(address)[::-1] if mac_included else b"")
    return prefix + sealed[:-4] + count + sealed[-4:]


@dataclasses.dataclass(slots=True)
class CounterGuard:
    """Replay protection for encrypted devices: the counter must grow.

    A counter below `RESTART_BELOW` after a higher one is taken as the device restarting (battery
    change) rather than refused: locking out a pendant until its counter catches up would lose real
    help calls, and a replayed old advertisement can at worst raise an alarm, never silence one.
    """

    RESTART_BELOW: int = 100
    # Refused counters that keep growing, one after the other, are a device that restarted while
    # the hub did not hear its first hundred adverts (out of range, BlueZ reconnecting): after
    # this many the new sequence is taken, so a pendant is never locked out for days.
    RESYNC_AFTER: int = 3
    last: dict[str, int] = dataclasses.field(default_factory=dict)
    _refused: dict[str, list[int]] = dataclasses.field(default_factory=dict)

    def check(self, device: str, counter: int) -> str | None:
        """None to accept; else "duplicate" (the same advertisement again) or "replayed counter"."""
        previous = self.last.get(device)
        if previous is not None:
            if counter == previous:
                return "duplicate"
            if counter < previous and counter >= self.RESTART_BELOW:
                refused = self._refused.setdefault(device, [])
                if refused and counter <= refused[-1]:
                    refused.clear()  # not a growing sequence: an old advertisement replayed
                refused.append(counter)
                if len(refused) < self.RESYNC_AFTER:
                    return "replayed counter"
        self._refused.pop(device, None)
        self.last[device] = counter
        return None


__all__ = [
    "ACCEL_OBJECT",
    "BUTTON_EVENTS",
    "FALL_OBJECT",
    "OBJECTS",
    "SERVICE_UUID",
    "Advertisement",
    "BTHomeError",
    "CounterGuard",
    "Measurement",
    "encrypt",
    "parse",
]
