"""BTHome v2 parser against the published vectors of bthome-ble (tests/test_parser_v2.py there)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devices.bthome import (
    Advertisement,
    BTHomeError,
    CounterGuard,
    Measurement,
    encrypt,
    parse,
)

BINDKEY = bytes.fromhex("231d39c1d7cc1ab1aee224cd096db932")
ATC = "A4:C1:38:8D:18:B2"
SHELLY = "54:48:E6:8F:80:A5"


def m(object_id: int, name: str, value: object) -> Measurement:
    return Measurement(object_id, name, value)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        # test_bthome_temperature_humidity
        (
            b"\x40\x02\xca\x09\x03\xbf\x13",
            Advertisement((m(0x02, "temperature", 25.06), m(0x03, "humidity", 50.55))),
        ),
        # test_bthome_packet_id_temperature_humidity_battery
        (
            b"\x40\x00\x09\x01\x5d\x02\x5d\x09\x03\xb7\x18",
            Advertisement(
                (
                    m(0x00, "packet_id", 9),
                    m(0x01, "battery", 93),
                    m(0x02, "temperature", 23.97),
                    m(0x03, "humidity", 63.27),
                ),
                packet_id=9,
            ),
        ),
        # test_bthome_pressure, test_bthome_illuminance
        (b"\x40\x04\x13\x8a\x01", Advertisement((m(0x04, "pressure", 1008.83),))),
        (b"\x40\x05\x13\x8a\x14", Advertisement((m(0x05, "illuminance", 13460.67),))),
        # test_bthome_with_mac
        (
            b"\x42\xb2\x18\x8d\x38\xc1\xa4\x04\x13\x8a\x01",
            Advertisement((m(0x04, "pressure", 1008.83),), mac=ATC),
        ),
        # test_sleepy_device: trigger based
        (b"\x44\x04\x13\x8a\x01", Advertisement((m(0x04, "pressure", 1008.83),), trigger_based=True)),
        # test_bthome_event_button_long_press
        (b"\x40\x3a\x04", Advertisement((m(0x3A, "button", "long"),))),
        # test_shelly_blu_ht_display_zb
        (
            b"\x40\x00\x2e\x01\x64\x1e\x01\x2e\x34\x45\x16\x01",
            Advertisement(
                (
                    m(0x00, "packet_id", 46),
                    m(0x01, "battery", 100),
                    m(0x1E, "light", True),
                    m(0x2E, "humidity", 52),
                    m(0x45, "temperature", 27.8),
                ),
                packet_id=46,
            ),
        ),
        # mass kg / lb, dew point
        (b"\x40\x06\x5e\x1f", Advertisement((m(0x06, "mass_kg", 80.3),))),
        (b"\x40\x07\x3e\x1d", Advertisement((m(0x07, "mass_lb", 74.86),))),
        (b"\x40\x08\xca\x06", Advertisement((m(0x08, "dew_point", 17.38),))),
        # binary sensors of a flat: motion, window open, moisture
        (b"\x40\x21\x01\x2d\x01", Advertisement((m(0x21, "motion", True), m(0x2D, "window", True)))),
        (b"\x40\x20\x00", Advertisement((m(0x20, "moisture_detected", False),))),
        # three buttons: none, press, triple press
        (
            b"\x40\x3a\x00\x3a\x01\x3a\x03",
            Advertisement(
                (m(0x3A, "button", "none"), m(0x3A, "button", "single"), m(0x3A, "button", "triple"))
            ),
        ),
        # dimmer rotated left 3 steps; a text object
        (b"\x40\x3c\x01\x03", Advertisement((m(0x3C, "dimmer", "rotate_left:3"),))),
        (b"\x40\x53\x0cHello World!", Advertisement((m(0x53, "text", "Hello World!"),))),
    ],
)
def test_published_plaintext_vectors(data: bytes, expected: Advertisement) -> None:
    assert parse(data, address=ATC) == expected


def test_published_encrypted_vectors() -> None:
    # test_bindkey_correct: Shelly BLU H&T
    assert parse(
        b"\x41\xa4\x72\x66\xc9\x5f\x73\x00\x11\x22\x33\x78\x23\x72\x14", address=SHELLY, key=BINDKEY
    ) == Advertisement(
        (m(0x02, "temperature", 25.06), m(0x03, "humidity", 50.55)), encrypted=True, counter=0x33221100
    )
    # test_bthome_with_mac_encrypted: the MAC in the payload is the nonce's, not the sender's
    assert parse(
        b"\x43\xa5\x80\x8f\xe6\x48\x54\xf1\x96\xc0\x6f\xfb\x49\x00\x11\x22\x33\xf0\x8e\xcb\xde",
        address="11:22:33:44:55:66",
        key=BINDKEY,
    ) == Advertisement(
        (m(0x02, "temperature", 25.06), m(0x03, "humidity", 50.55)),
        encrypted=True,
        mac=SHELLY,
        counter=0x33221100,
    )


@pytest.mark.parametrize(
    ("data", "key", "reason"),
    [
        # test_bindkey_wrong
        (
            b"\x41\xd2\xfc\xef\xe5\x2e\xb2\x12\xd6\x00\x11\x22\x33\xbc\x38\xc9\x66",
            bytes(16),
            "decryption failed",
        ),
        (b"\x41\xa4\x72\x66\xc9\x5f\x73\x00\x11\x22\x33\x78\x23\x72\x14", None, "encrypted without bindkey"),
        # test_encryption_downgrade_fails
        (b"\x40\x04\x13\x8a\x01", BINDKEY, "plaintext from an encrypted device"),
        # test_has_incorrect_version (v7)
        (b"\xe1\x02\x00\x0c\x04\x04\x13\x8a\x01", None, "not BTHome v2"),
        (b"", None, "empty service data"),
        (b"\x40\x02\xca", None, "truncated"),
        (b"\x42\xb2\x18", None, "truncated"),
        (b"\x41\x01\x02", BINDKEY, "truncated"),
        (b"\x40\x99\x01", None, "unknown object id"),
        (b"\x40", None, "no objects"),
        (b"\x40\x53\x02\xff\xfe", None, "bad text object"),
    ],
)
def test_refusals_carry_a_countable_reason(data: bytes, key: bytes | None, reason: str) -> None:
    with pytest.raises(BTHomeError) as caught:
        parse(data, address=SHELLY, key=key)
    assert caught.value.reason == reason


def test_unknown_object_after_known_ones_keeps_them() -> None:
    # after bthome-ble's test_bthome_battery_wrong_object_id_humidity (0x5D has been assigned since)
    assert parse(b"\x40\x01\x5d\x9f\x09\x03\xb7\x18", address=ATC) == Advertisement(
        (m(0x01, "battery", 93),), unknown_object=0x9F
    )


def test_pendant_extension_round_trip_encrypted() -> None:
    """The pendant's golden vector: packet id 7, battery 88 %, long press, fall, (0.02, -0.98, 0.11) g."""
    payload = bytes.fromhex("0007 0158 3a04 f001 f1 1400 2cfc 6e00".replace(" ", ""))
    data = encrypt(payload, address="C0:FF:EE:00:00:01", key=BINDKEY, counter=1234)
    assert data[0] == 0x41
    assert data[-8:-4] == (1234).to_bytes(4, "little")
    assert parse(data, address="C0:FF:EE:00:00:01", key=BINDKEY) == Advertisement(
        (
            m(0x00, "packet_id", 7),
            m(0x01, "battery", 88),
            m(0x3A, "button", "long"),
            m(0xF0, "fall", 1),
            m(0xF1, "accel", (0.02, -0.98, 0.11)),
        ),
        encrypted=True,
        counter=1234,
        packet_id=7,
    )
    # Another sender's address makes another nonce: refused.
    with pytest.raises(BTHomeError, match="decryption failed"):
        parse(data, address="C0:FF:EE:00:00:02", key=BINDKEY)


def test_counter_guard() -> None:
    guard = CounterGuard()
    assert guard.check("pendant", 500) is None
    assert guard.check("pendant", 500) == "duplicate"
    assert guard.check("pendant", 499) == "replayed counter"
    assert guard.check("pendant", 501) is None
    assert guard.check("pendant", 3) is None  # restarted after a battery change
    assert guard.check("pendant", 4) is None
    assert guard.check("other", 0) is None


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=40), st.sampled_from([None, BINDKEY]))
def test_fuzz_only_bthome_errors(data: bytes, key: bytes | None) -> None:
    try:
        parse(data, address=SHELLY, key=key)
    except BTHomeError as err:
        assert err.reason


def test_a_restarted_pendant_the_hub_did_not_hear_restart_is_taken_back() -> None:
    guard = CounterGuard()
    assert guard.check("pendant", 50_000) is None
    # Battery swapped while out of range: the hub first hears counter 400, then 401, 402.
    assert guard.check("pendant", 400) == "replayed counter"
    assert guard.check("pendant", 401) == "replayed counter"
    assert guard.check("pendant", 402) is None
    assert guard.check("pendant", 403) is None
    # Old adverts replayed out of order never make a sequence.
    assert guard.check("pendant", 300) == "replayed counter"
    assert guard.check("pendant", 250) == "replayed counter"
    assert guard.check("pendant", 260) == "replayed counter"
