"""The systemd unit (systemd/aal-hub.service) and the sysusers.d/tmpfiles.d files beside it.

`systemd-analyze verify` and `systemd-analyze security --offline=yes` check the unit as systemd
itself reads it (systemd need not be PID 1); a small parser checks the safety settings that the
hub relies on (watchdog, restart, non-root user, serial devices).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SYSTEMD_DIR = Path(__file__).resolve().parent.parent / "systemd"
UNIT = SYSTEMD_DIR / "aal-hub.service"
SYSUSERS = SYSTEMD_DIR / "sysusers.d-aal-hub.conf"
TMPFILES = SYSTEMD_DIR / "tmpfiles.d-aal-hub.conf"

MAX_EXPOSURE = 2.0  # the issue asks for 2.5; we reached 1.5 and guard against sliding
EXPOSURE_RE = re.compile(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)")
# Pinned so that a developer's SYSTEMD_LOG_LEVEL neither hides warnings nor adds debug noise.
SYSTEMD_ENV = {"SYSTEMD_LOG_LEVEL": "info", "SYSTEMD_COLORS": "0", "SYSTEMD_PAGER": ""}


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """Parse a unit file like configparser(strict=False), but keep every value of a repeated key
    (DeviceAllow=, After=, SystemCallFilter= ...) in order, as systemd does."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    pending = ""
    for raw in text.splitlines():
        line = pending + raw.strip()
        pending = ""
        if not line or line.startswith(("#", ";")):
            continue
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"assignment outside a section: {line!r}"
        key, sep, value = line.partition("=")
        assert sep, f"not an assignment: {line!r}"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def seconds(value: str) -> float:
    """A systemd time span of the simple forms used in the unit: 30, 30s, 500ms, 2min, 1h."""
    units = {"ms": 0.001, "s": 1, "sec": 1, "min": 60, "m": 60, "h": 3600, "": 1}
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([a-z]*)", value.strip())
    assert match is not None, f"unsupported time span {value!r}"
    assert match.group(2) in units, f"unsupported time unit in {value!r}"
    return float(match.group(1)) * units[match.group(2)]


@pytest.fixture(scope="module")
def unit() -> dict[str, dict[str, list[str]]]:
    return parse_unit(UNIT.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def systemd_analyze() -> str:
    path = shutil.which("systemd-analyze")
    if path is None:
        pytest.skip("systemd-analyze is not installed (Debian package 'systemd')")
    return path


def _existing_executable() -> str:
    """The installed console script if there is one, else this Python: verify needs the
    ExecStart= binary to exist and be executable, nothing more."""
    found = shutil.which("aal-hub")
    if found is None:
        sibling = Path(sys.executable).parent / "aal-hub"
        found = str(sibling) if os.access(sibling, os.X_OK) else sys.executable
    return found


@pytest.fixture
def unit_copy(tmp_path: Path) -> Path:
    """The unit under its own name, with only ExecStart='s executable swapped for one that
    exists here (arguments kept)."""
    executable = _existing_executable()
    assert not re.search(r'[\s"\\%]', executable), f"cannot quote {executable!r} for systemd"
    lines = UNIT.read_text(encoding="utf-8").splitlines(keepends=True)
    exec_lines = [i for i, line in enumerate(lines) if line.startswith("ExecStart=")]
    assert len(exec_lines) == 1, "expected exactly one ExecStart= line"
    _, _, arguments = lines[exec_lines[0]].removeprefix("ExecStart=").partition(" ")
    lines[exec_lines[0]] = f"ExecStart={executable} {arguments}"
    copy = tmp_path / UNIT.name
    copy.write_text("".join(lines), encoding="utf-8")
    return copy


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv,
        capture_output=True,
        text=True,
        encoding="utf-8",
        errors="replace",
        env={**os.environ, **SYSTEMD_ENV},
        timeout=60,
        check=False,
    )


def test_unit_passes_systemd_analyze_verify(systemd_analyze: str, unit_copy: Path) -> None:
    # verify exits 0 on settings it merely ignores ("Unknown key", "Failed to parse ...,
    # ignoring"), so any output at all is a failure. --man=no: a Documentation=man: page
    # missing on this machine is not a fault of the unit.
    result = _run([systemd_analyze, "verify", "--man=no", "--generators=no", str(unit_copy)])
    output = (result.stdout + result.stderr).strip()
    assert not output, f"systemd-analyze verify said:\n{output}"
    assert result.returncode == 0, f"systemd-analyze verify exited {result.returncode}"


def test_unit_security_exposure(systemd_analyze: str, unit_copy: Path) -> None:
    result = _run([systemd_analyze, "security", "--offline=yes", "--no-pager", str(unit_copy)])
    report = f"{result.stdout}\n{result.stderr}"
    match = EXPOSURE_RE.search(result.stdout)
    assert match is not None, f"no overall exposure in:\n{report}"
    exposure = float(match.group(1))
    print(f"systemd-analyze security: overall exposure {exposure}")
    assert not result.stderr.strip(), f"systemd-analyze security warned:\n{report}"
    assert exposure <= MAX_EXPOSURE, f"exposure {exposure} > {MAX_EXPOSURE}:\n{report}"


def test_unit_safety_settings(unit: dict[str, dict[str, list[str]]]) -> None:
    service = unit["Service"]

    def one(key: str) -> str:
        values = service.get(key, [])
        assert len(values) == 1, f"[Service] {key}= set {len(values)} times: {values}"
        return values[0]

    assert one("Type") == "notify"
    assert one("NotifyAccess") == "main"
    # The daemon pings at WatchdogSec/2; a hung loop is killed within a minute at most.
    assert 0 < seconds(one("WatchdogSec")) <= 60
    assert one("Restart") == "on-failure"

    # Restart= alone must never exhaust the start limit: systemd would give up on the hub.
    restart_sec = seconds(one("RestartSec"))
    burst = int(unit["Unit"]["StartLimitBurst"][-1])
    interval = seconds(unit["Unit"]["StartLimitIntervalSec"][-1])
    assert (burst - 1) * restart_sec > interval, (burst, restart_sec, interval)

    user = one("User")
    assert user not in {"root", "0", ""}
    assert one("Group") not in {"root", "0", ""}
    assert "DynamicUser" not in service or one("DynamicUser") in {"no", "false"}
    assert {"dialout", "bluetooth"} <= set(" ".join(service["SupplementaryGroups"]).split())

    exec_start = one("ExecStart")
    assert exec_start.startswith("/"), exec_start
    assert exec_start.endswith(" run --config /etc/aal-hub/config.yaml"), exec_start

    # Serial radios reachable, nothing else in /dev beyond the pseudo devices.
    assert one("DevicePolicy") == "closed"
    assert service.get("PrivateDevices", ["no"])[-1] in {"no", "false"}
    device_allow = service["DeviceAllow"]
    for rule in ("char-ttyUSB rw", "char-ttyACM rw", "char-ttyAMA rw"):
        assert rule in device_allow, f"DeviceAllow={rule} missing: {device_allow}"
    # The majors of the USB serial drivers exist only once their modules are loaded.
    wants = " ".join(unit["Unit"].get("Wants", [])).split()
    after = " ".join(unit["Unit"].get("After", [])).split()
    for module_unit in ("modprobe@usbserial.service", "modprobe@cdc_acm.service"):
        assert module_unit in wants, module_unit
        assert module_unit in after, module_unit

    assert one("StateDirectory") == "aal-hub"
    assert one("ConfigurationDirectory") == "aal-hub"
    assert one("ProtectSystem") == "strict"
    assert one("NoNewPrivileges") == "yes"
    assert one("CapabilityBoundingSet") == ""
    assert one("AmbientCapabilities") == ""
    assert one("MemoryDenyWriteExecute") == "yes"
    assert one("UMask") == "0077"
    families = set(one("RestrictAddressFamilies").split())
    assert "AF_UNIX" in families, "sd_notify and D-Bus (BlueZ) need AF_UNIX"
    assert families <= {"AF_UNIX", "AF_INET", "AF_INET6", "AF_NETLINK", "AF_BLUETOOTH"}


def _config_lines(path: Path) -> list[list[str]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return [line.split() for line in lines if line.strip() and not line.startswith("#")]


def test_sysusers_and_tmpfiles_match_unit(unit: dict[str, dict[str, list[str]]]) -> None:
    service = unit["Service"]
    user, group = service["User"][-1], service["Group"][-1]
    sysusers = _config_lines(SYSUSERS)
    users = [fields for fields in sysusers if fields[0] == "u"]
    assert [fields[1] for fields in users] == [user]
    assert group == user, "sysusers.d 'u' creates a group of the user's name"
    members = {fields[2] for fields in sysusers if fields[0] == "m" and fields[1] == user}
    supplementary = set(" ".join(service["SupplementaryGroups"]).split())
    assert supplementary <= members, f"not in the group database: {supplementary - members}"

    config_dir = ["d", "/etc/aal-hub", service["ConfigurationDirectoryMode"][-1], "root", group, "-"]
    assert config_dir in _config_lines(TMPFILES)


@pytest.mark.skipif(os.geteuid() != 0, reason="systemd-tmpfiles needs root to chown")
def test_sysusers_and_tmpfiles_apply(tmp_path: Path) -> None:
    """Apply both files to an empty root with the real tools, as an install would."""
    sysusers_bin = shutil.which("systemd-sysusers")
    tmpfiles_bin = shutil.which("systemd-tmpfiles")
    if sysusers_bin is None or tmpfiles_bin is None:
        pytest.skip("systemd-sysusers/systemd-tmpfiles not installed (Debian package 'systemd')")
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n", encoding="utf-8")
    (etc / "group").write_text("root:x:0:\ndialout:x:20:\n", encoding="utf-8")

    for argv in (
        [sysusers_bin, f"--root={tmp_path}", str(SYSUSERS)],
        [tmpfiles_bin, f"--root={tmp_path}", "--create", str(TMPFILES)],
    ):
        result = _run(argv)
        assert result.returncode == 0, f"{argv}: {result.stdout}{result.stderr}"

    passwd = {
        line.split(":")[0]: line.split(":")
        for line in (etc / "passwd").read_text(encoding="utf-8").splitlines()
    }
    groups = {
        line.split(":")[0]: line.split(":")
        for line in (etc / "group").read_text(encoding="utf-8").splitlines()
    }
    entry = passwd["aal-hub"]
    assert int(entry[2]) < 1000, "a system user"
    assert entry[5:] == ["/var/lib/aal-hub", "/usr/sbin/nologin"]
    assert groups["dialout"][2] == "20"
    for name in ("dialout", "bluetooth"):
        assert "aal-hub" in groups[name][3].split(","), name

    config_dir = (tmp_path / "etc" / "aal-hub").stat()
    assert oct(config_dir.st_mode & 0o7777) == "0o750"
    assert config_dir.st_uid == 0
    assert config_dir.st_gid == int(groups["aal-hub"][2])
