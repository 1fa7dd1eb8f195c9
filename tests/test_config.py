"""The config: typed objects from one YAML file; errors name file, line and what was expected."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hub.config import (
    ConfigError,
    DeviceKind,
    DeviceRole,
    Duration,
    IncidentKind,
    Mode,
    TimeOfDay,
    load_config,
    parse_config,
    policy_for,
)
from tests.conftest import REPO

MINIMAL = "flat: {id: f1, name: Wohnung}\nrooms: [hall, kitchen]\n"


def error_of(text: str, file: str = "flat.yaml") -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, file)
    return caught.value


def test_demo_flat_is_valid(demo_config) -> None:
    assert demo_config.flat.mode is Mode.DEMO
    assert demo_config.rooms == ("hall", "living", "kitchen", "bathroom", "bedroom")
    roles = {d.role: d.id for d in demo_config.devices if d.role}
    assert roles[DeviceRole.FRONT_DOOR] == "hall-door"
    assert roles[DeviceRole.BED] == "bed-mat"
    assert roles[DeviceRole.SEAT] == "chair-mat"
    assert all(d.simulated for d in demo_config.devices)


def test_installer_example_from_the_design_notes_is_valid() -> None:
    example = REPO.parent / "shared" / "example-config.yaml"
    if not example.exists():
        pytest.skip("shared/example-config.yaml is not beside the repository")
    config = load_config(example)
    assert config.device("bed-mat").kind is DeviceKind.PRESSURE_MAT
    assert config.device("pendant").transport == "ble"
    assert config.rules.inactivity.fixed[0].limit == Duration(3 * 3600)
    assert config.rules.checkin.window == (TimeOfDay(8 * 60), TimeOfDay(11 * 60))
    # help_button is an alias for the help incident; fall keeps the default steps.
    assert policy_for(config, IncidentKind.HELP).cancel_window == Duration(0)
    fall = policy_for(config, IncidentKind.FALL)
    assert fall.cancel_window == Duration(30)
    assert [s.notify for s in fall.steps or ()] == [
        ("daughter",),
        ("neighbour", "daughter"),
        ("care-service",),
    ]
    assert config.retention.incidents == Duration(2 * 365 * 86400)


def test_minimal_config_gets_safe_defaults() -> None:
    config = parse_config(MINIMAL)
    assert config.flat.timezone == "Europe/Berlin"
    assert config.flat.mode is Mode.LIVE
    assert config.web.host == "127.0.0.1"  # never on the LAN unless asked
    assert config.rules.inactivity.enabled
    assert config.retention.raw_events == Duration(30 * 86400)


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        (
            MINIMAL.replace("name: Wohnung", "name: Wohnung, colour: red"),
            1,
            "flat.colour: unknown key; expected one of: id, name, timezone, language, mode",
        ),
        (
            MINIMAL + "devices:\n  - {id: d1, kind: motion, room: garage}\n",
            4,
            "devices[0].room: unknown room 'garage'; expected one of: hall, kitchen",
        ),
        (
            MINIMAL + "devices:\n  - id: d1\n    kind: moton\n",
            5,
            "devices[0].kind: invalid enum value 'moton'; expected one of: motion, presence",
        ),
        (
            MINIMAL + "rules:\n  bathroom_stay:\n    limit: lots\n",
            5,
            "rules.bathroom_stay.limit: expected a duration such as 90s, 5m, 3h or 30d, got 'lots'",
        ),
        (
            MINIMAL + "rules:\n  checkin: {window: [07:00, 25:00]}\n",
            4,
            "rules.checkin.window[1]: expected a time of day like \"07:30\", got '25:00'",
        ),
        ("flat: {id: f1}\nrooms: [a]\n", 1, "flat: object missing required field `name`"),
        ("flat: {id: f1, name: x}\nrooms: hall\n", 2, "rooms: expected `array`, got `str`"),
        (MINIMAL + "web: {port: eighty}\n", 3, "web.port: expected `int`, got `str`"),
        ("flat: [\n", 2, "not valid YAML"),
        ("- just\n- a list\n", 1, "expected a mapping with at least `flat:` and `rooms:`"),
        (MINIMAL.replace("id: f1", "id: Flat 1"), 1, "flat.id: expected lower-case letters"),
        (
            MINIMAL.replace("name: Wohnung", "name: W, timezone: Mars/Olympus"),
            1,
            "flat.timezone: unknown time zone 'Mars/Olympus'",
        ),
        (
            MINIMAL + "devices:\n  - {id: a, kind: motion}\n  - {id: a, kind: contact}\n",
            5,
            "devices[1].id: device id 'a' is used twice",
        ),
        (
            MINIMAL + "devices:\n  - {id: a, kind: motion, zigbee: '00:11', ble: 'AA:BB'}\n",
            4,
            "devices[0]: a device has one transport, got zigbee, ble",
        ),
        (
            MINIMAL + "contacts:\n  - {id: c, channels: [{email: a@b.c, webhook: 'http://x'}]}\n",
            4,
            "contacts[0].channels[0]: expected exactly one of: apprise, email, webhook",
        ),
        (
            MINIMAL + "escalation:\n  default:\n    steps:\n      - {notify: [nobody]}\n",
            6,
            "escalation.default.steps[0].notify: unknown contact 'nobody'",
        ),
        (MINIMAL + "escalation:\n  fal: {cancel_window: 10s}\n", 4, "escalation.fal: unknown incident kind"),
        (
            MINIMAL + "rules: {device_health: {battery_low: 150%}}\n",
            3,
            "rules.device_health.battery_low: a percentage lies between 0% and 100%",
        ),
        (MINIMAL + "web: {host: 0.0.0.0}\n", 3, "web.host: listening on 0.0.0.0 needs web.api_token"),
    ],
)
def test_errors_name_file_line_and_expectation(text: str, line: int, message: str) -> None:
    err = error_of(text)
    assert err.file == "flat.yaml"
    assert err.line == line, str(err)
    assert message in err.message, str(err)
    assert str(err).startswith(f"flat.yaml:{line}: ")


def test_times_of_day_are_not_sexagesimal_numbers() -> None:
    # YAML 1.1 reads an unquoted 07:30 as the integer 450; the flat's file means half past seven.
    config = parse_config(MINIMAL + "rules:\n  night_wandering: {from: 23:30, to: 06:15}\n")
    assert config.rules.night_wandering.from_ == TimeOfDay(23 * 60 + 30)
    assert config.rules.night_wandering.to == TimeOfDay(6 * 60 + 15)


def test_secret_from_environment(monkeypatch) -> None:
    monkeypatch.setenv("AAL_TEST_MQTT_PASSWORD", "s3cret")
    text = MINIMAL + "radios:\n  zigbee2mqtt: {password: !env AAL_TEST_MQTT_PASSWORD}\n"
    assert parse_config(text).radios.zigbee2mqtt.password == "s3cret"
    monkeypatch.delenv("AAL_TEST_MQTT_PASSWORD")
    err = error_of(text)
    assert (err.line, err.message) == (4, "environment variable AAL_TEST_MQTT_PASSWORD is not set")


def test_secret_file_must_be_private(tmp_path: Path) -> None:
    secrets = tmp_path / "secrets.yaml"
    secrets.write_text("mqtt_password: hunter2\n")
    config_file = tmp_path / "config.yaml"
    config_file.write_text(MINIMAL + "radios:\n  zigbee2mqtt: {password: !secret mqtt_password}\n")
    secrets.chmod(0o644)
    with pytest.raises(ConfigError, match=r"readable by its owner only \(chmod 600"):
        load_config(config_file)
    secrets.chmod(0o600)
    assert load_config(config_file).radios.zigbee2mqtt.password == "hunter2"
    config_file.write_text(MINIMAL + "radios:\n  zigbee2mqtt: {password: !secret other}\n")
    with pytest.raises(ConfigError, match="secret 'other' is not in the secrets file") as caught:
        load_config(config_file)
    assert caught.value.line == 4


def test_missing_and_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "nope.yaml")
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ConfigError, match="not a UTF-8 text file"):
        load_config(binary)
    if os.geteuid() != 0:  # root reads anything
        locked = tmp_path / "locked.yaml"
        locked.write_text(MINIMAL)
        locked.chmod(0)
        with pytest.raises(ConfigError, match="cannot read"):
            load_config(locked)


def test_check_config_command(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(MINIMAL)
    bad = tmp_path / "bad.yaml"
    bad.write_text(MINIMAL + "devices:\n  - {id: d1, kind: motion, room: garage}\n")
    ok = subprocess.run(
        [sys.executable, "-m", "hub.cli", "check-config", str(good)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr
    assert "ok: flat 'f1' (live), 2 rooms, 0 devices, 0 contacts" in ok.stdout
    broken = subprocess.run(
        [sys.executable, "-m", "hub.cli", "check-config", str(bad)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert broken.returncode == 1
    assert f"{bad}:4: devices[0].room: unknown room 'garage'" in broken.stderr


yaml_scalars = st.one_of(
    st.text(max_size=12), st.integers(), st.floats(allow_nan=False), st.booleans(), st.none()
)
yaml_values = st.recursive(
    yaml_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(
            ["flat", "rooms", "devices", "rules", "contacts", "escalation", "web", "retention", "radios", "x"]
        ),
        yaml_values,
        max_size=6,
    )
)
def test_any_structure_gives_a_config_or_a_config_error(data) -> None:
    import yaml

    text = yaml.safe_dump(data)
    try:
        parse_config(text, "fuzz.yaml")
    except ConfigError as err:
        assert err.file == "fuzz.yaml"
        assert err.message


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_any_text_gives_a_config_or_a_config_error(text: str) -> None:
    try:
        parse_config(text, "fuzz.yaml")
    except ConfigError as err:
        assert err.message
