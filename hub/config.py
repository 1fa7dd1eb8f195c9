"""The one YAML file an installer writes for a flat, validated into typed, frozen objects.

A broken file is refused whole, with the file, the line and what was expected: the hub never
starts half-configured. Secrets come from `!secret NAME` (a secrets file readable only by the hub)
or `!env NAME` (the environment, e.g. systemd's `LoadCredential`/`Environment`).
"""

from __future__ import annotations

import datetime as dt
import enum
import os
import re
import stat
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal, cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec
import yaml

from hub.events import IncidentKind

# ---------------------------------------------------------------------------------------------
# Value types with their own spelling in the file


class Duration:
    """`90s`, `5m`, `3h`, `30d`, `2y` (365 d) or a bare number of seconds."""

    __slots__ = ("seconds",)
    _UNITS: ClassVar[Mapping[str, float]] = {
        "s": 1,
        "m": 60,
        "h": 3600,
        "d": 86400,
        "w": 7 * 86400,
        "y": 365 * 86400,
    }
    _PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdwy]?)\s*$")

    def __init__(self, seconds: float) -> None:
        self.seconds = float(seconds)

    @classmethod
    def parse(cls, raw: object) -> Duration:
        if isinstance(raw, bool):
            raise TypeError("expected a duration such as 90s, 5m, 3h or 30d")
        if isinstance(raw, int | float):
            if raw < 0:
                raise ValueError("a duration cannot be negative")
            return cls(raw)
        if isinstance(raw, str) and (match := cls._PATTERN.match(raw)):
            return cls(float(match[1]) * cls._UNITS[match[2] or "s"])
        raise ValueError(f"expected a duration such as 90s, 5m, 3h or 30d, got {raw!r}")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Duration) and other.seconds == self.seconds

    def __hash__(self) -> int:
        return hash(self.seconds)

    def __repr__(self) -> str:
        return f"Duration({self.seconds:g}s)"


class TimeOfDay:
    """A local wall-clock time of the flat, written "HH:MM"."""

    __slots__ = ("minute",)
    _PATTERN = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")

    def __init__(self, minute: int) -> None:
        self.minute = minute

    @classmethod
    def parse(cls, raw: object) -> TimeOfDay:
        if isinstance(raw, str) and (match := cls._PATTERN.match(raw.strip())):
            return cls(int(match[1]) * 60 + int(match[2]))
        raise ValueError(f'expected a time of day like "07:30", got {raw!r}')

    @property
    def time(self) -> dt.time:
        return dt.time(self.minute // 60, self.minute % 60)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TimeOfDay) and other.minute == self.minute

    def __hash__(self) -> int:
        return hash(self.minute)

    def __repr__(self) -> str:
        return f"TimeOfDay({self.minute // 60:02d}:{self.minute % 60:02d})"


class Percent:
    """`15%` or a bare number 0..100."""

    __slots__ = ("value",)

    def __init__(self, value: float) -> None:
        self.value = value

    @classmethod
    def parse(cls, raw: object) -> Percent:
        text = raw.strip().removesuffix("%") if isinstance(raw, str) else raw
        try:
            value = float(cast("Any", text))
        except (TypeError, ValueError):
            raise ValueError(f"expected a percentage such as 15%, got {raw!r}") from None
        if not 0 <= value <= 100:
            raise ValueError(f"a percentage lies between 0% and 100%, got {raw!r}")
        return cls(value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Percent) and other.value == self.value

    def __hash__(self) -> int:
        return hash(self.value)

    def __repr__(self) -> str:
        return f"Percent({self.value:g})"


_PARSERS: dict[type, Any] = {
    Duration: Duration.parse,
    TimeOfDay: TimeOfDay.parse,
    Percent: Percent.parse,
}


def _dec_hook(kind: type, raw: object) -> object:
    parse = _PARSERS.get(kind)
    if parse is None:
        raise NotImplementedError(kind)
    return parse(raw)


class _Section(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Every section refuses keys it does not know: a typo must not silently disable a rule."""


# ---------------------------------------------------------------------------------------------
# The schema


class Mode(enum.StrEnum):
    LIVE = "live"
    DEMO = "demo"  # every channel goes to the demo receiver, by construction


class FlatConfig(_Section, frozen=True, kw_only=True):
    id: str
    name: str
    timezone: str = "Europe/Berlin"
    language: Literal["de", "en"] = "de"
    mode: Mode = Mode.LIVE


class ZigbeeRadio(_Section, frozen=True, kw_only=True):
    type: Literal["znp", "ezsp", "deconz"]
    port: str
    baudrate: int = 115200
    channel: int | None = None


class Zigbee2MqttRadio(_Section, frozen=True, kw_only=True):
    broker: str = "mqtt://127.0.0.1:1883"
    base_topic: str = "zigbee2mqtt"
    username: str | None = None
    password: str | None = None


class BleRadio(_Section, frozen=True, kw_only=True):
    adapter: str = "hci0"


class Radios(_Section, frozen=True, kw_only=True):
    zigbee: ZigbeeRadio | None = None
    zigbee2mqtt: Zigbee2MqttRadio | None = None
    ble: BleRadio | None = None


class DeviceKind(enum.StrEnum):
    MOTION = "motion"
    PRESENCE = "presence"
    CONTACT = "contact"
    PRESSURE_MAT = "pressure_mat"
    PLUG = "plug"
    APPLIANCE = "appliance"
    FLUSH = "flush"
    BUTTON = "button"
    PENDANT = "pendant"
    WATER_LEAK = "water_leak"
    SMOKE = "smoke"
    CLIMATE = "climate"
    RADAR = "radar"


class DeviceRole(enum.StrEnum):
    FRONT_DOOR = "front_door"
    BED = "bed"
    SEAT = "seat"
    TOILET = "toilet"
    HELP_BUTTON = "help_button"
    CHECKIN_BUTTON = "checkin_button"
    OK_BUTTON = "ok_button"


class DeviceConfig(_Section, frozen=True, kw_only=True):
    id: str
    kind: DeviceKind
    room: str | None = None
    name: str | None = None
    role: DeviceRole | None = None
    zigbee: str | None = None
    zigbee2mqtt: str | None = None
    ble: str | None = None
    bindkey: str | None = None
    bindkey_file: str | None = None
    simulated: bool = False
    sample_rate_hz: float | None = None

    @property
    def transport(self) -> str:
        for name in ("zigbee", "zigbee2mqtt", "ble"):
            if getattr(self, name) is not None:
                return name
        return "simulated" if self.simulated else "none"


class FallRule(_Section, frozen=True, kw_only=True):
    enabled: bool = True


class FixedLimit(_Section, frozen=True, kw_only=True):
    from_: TimeOfDay = msgspec.field(name="from")
    to: TimeOfDay
    limit: Duration


class LearnedInactivity(_Section, frozen=True, kw_only=True):
    enabled: bool = True
    min_days: int = 7


class InactivityRule(_Section, frozen=True, kw_only=True):
    enabled: bool = True
    fixed: tuple[FixedLimit, ...] = ()
    learned: LearnedInactivity = msgspec.field(default_factory=LearnedInactivity)


class CheckinRule(_Section, frozen=True, kw_only=True):
    enabled: bool = True
    window: tuple[TimeOfDay, TimeOfDay] | None = None
    holidays: tuple[dt.date, ...] = ()


class NightWindowRule(_Section, frozen=True, kw_only=True):
    enabled: bool = True
    from_: TimeOfDay = msgspec.field(name="from", default_factory=lambda: TimeOfDay(23 * 60))
    to: TimeOfDay = msgspec.field(default_factory=lambda: TimeOfDay(6 * 60))


class OutOfBedRule(NightWindowRule, frozen=True, kw_only=True):
    limit: Duration = msgspec.field(default_factory=lambda: Duration(30 * 60))


class LimitRule(_Section, frozen=True, kw_only=True):
    enabled: bool = True
    limit: Duration = msgspec.field(default_factory=lambda: Duration(60 * 60))


class ClimateRule(_Section, frozen=True, kw_only=True):
    enabled: bool = True
    too_hot: float = 30.0
    too_cold: float = 16.0
    for_: Duration = msgspec.field(name="for", default_factory=lambda: Duration(30 * 60))


class DeviceHealthRule(_Section, frozen=True, kw_only=True):
    enabled: bool = True
    battery_low: Percent = msgspec.field(default_factory=lambda: Percent(15))
    offline_after: Duration | None = None  # None: learned per device from its reporting interval


class RulesConfig(_Section, frozen=True, kw_only=True):
    fall: FallRule = msgspec.field(default_factory=FallRule)
    inactivity: InactivityRule = msgspec.field(default_factory=InactivityRule)
    checkin: CheckinRule = msgspec.field(default_factory=CheckinRule)
    night_wandering: NightWindowRule = msgspec.field(default_factory=NightWindowRule)
    out_of_bed: OutOfBedRule = msgspec.field(default_factory=OutOfBedRule)
    bathroom_stay: LimitRule = msgspec.field(default_factory=LimitRule)
    appliance_on: LimitRule = msgspec.field(default_factory=LimitRule)
    climate: ClimateRule = msgspec.field(default_factory=ClimateRule)
    device_health: DeviceHealthRule = msgspec.field(default_factory=DeviceHealthRule)


class SiaDc09Channel(_Section, frozen=True, kw_only=True):
    host: str
    port: int
    account: str
    receiver: str = "0"
    prefix: str = "0"
    key: str | None = None
    key_file: str | None = None
    protocol: Literal["tcp", "udp"] = "tcp"


class WebhookChannel(_Section, frozen=True, kw_only=True):
    url: str
    secret: str | None = None


class ChannelConfig(_Section, frozen=True, kw_only=True):
    """Exactly one of the fields is set: `{email: a@b.org}`, `{apprise: "ntfy://..."}`, ..."""

    apprise: str | None = None
    email: str | None = None
    webhook: str | WebhookChannel | None = None
    mqtt: str | None = None
    sia_dc09: SiaDc09Channel | None = None

    @property
    def kind(self) -> str:
        return next(name for name in self.__struct_fields__ if getattr(self, name) is not None)


class ContactConfig(_Section, frozen=True, kw_only=True):
    id: str
    name: str | None = None
    language: Literal["de", "en"] | None = None
    channels: tuple[ChannelConfig, ...]
    available: tuple[TimeOfDay, TimeOfDay] | None = None


class EscalationStep(_Section, frozen=True, kw_only=True):
    notify: tuple[str, ...]
    ack_timeout: Duration | None = None
    repeat_every: Duration | None = None


class EscalationPolicy(_Section, frozen=True, kw_only=True):
    cancel_window: Duration | None = None
    steps: tuple[EscalationStep, ...] | None = None


class VideoConfig(_Section, frozen=True, kw_only=True):
    """`jitsi`: a Jitsi Meet base URL; each incident gets its own room there, named with a key
    only the hub holds (guessing it is as hard as forging an acknowledge link). `url`: one
    fixed link instead (a telemedicine provider's own room)."""

    jitsi: str | None = None
    url: str | None = None


class TelemedicineConfig(_Section, frozen=True, kw_only=True):
    video: VideoConfig | None = None


class RetentionConfig(_Section, frozen=True, kw_only=True):
    raw_events: Duration = msgspec.field(default_factory=lambda: Duration(30 * 86400))
    incidents: Duration = msgspec.field(default_factory=lambda: Duration(2 * 365 * 86400))
    activity: Duration = msgspec.field(default_factory=lambda: Duration(2 * 365 * 86400))


class SmtpConfig(_Section, frozen=True, kw_only=True):
    host: str
    port: int = 587
    username: str | None = None
    password: str | None = None
    sender: str = "aal-hub@localhost"
    starttls: bool = True


class AlertsConfig(_Section, frozen=True, kw_only=True):
    """How alerts leave the flat, beyond who is told (contacts) and when (escalation)."""

    public_url: str | None = None  # base of one-tap acknowledge links; default: the web UI's address
    ack_secret: str | None = None  # signs the links; default: made once and kept in the database
    ack_link_ttl: Duration = msgspec.field(default_factory=lambda: Duration(7 * 86400))
    heartbeat_every: Duration = msgspec.field(default_factory=lambda: Duration(300))  # 0: none
    merge_same_kind: bool = True  # a second help call elsewhere joins the open one: no page storm
    webhook_secret: str | None = None  # for webhooks configured as a bare URL
    smtp: SmtpConfig | None = None


LOOPBACK_HOSTS: frozenset[str] = frozenset({"127.0.0.1", "::1", "localhost"})


class WebConfig(_Section, frozen=True, kw_only=True):
    host: str = "127.0.0.1"
    port: int = 8080
    # Required once the web UI listens beyond this machine: the API that acknowledges alarms,
    # presses the resident's buttons and opens pairing must not be open to the whole LAN.
    api_token: str | None = None


class StoreConfig(_Section, frozen=True, kw_only=True):
    path: str | None = None  # default: $STATE_DIRECTORY/hub.db under systemd, else ./var/hub.db


class HubConfig(_Section, frozen=True, kw_only=True):
    flat: FlatConfig
    rooms: tuple[str, ...]
    radios: Radios = msgspec.field(default_factory=Radios)
    devices: tuple[DeviceConfig, ...] = ()
    rules: RulesConfig = msgspec.field(default_factory=RulesConfig)
    contacts: tuple[ContactConfig, ...] = ()
    escalation: dict[str, EscalationPolicy] = msgspec.field(default_factory=dict)
    alerts: AlertsConfig = msgspec.field(default_factory=AlertsConfig)
    telemedicine: TelemedicineConfig = msgspec.field(default_factory=TelemedicineConfig)
    retention: RetentionConfig = msgspec.field(default_factory=RetentionConfig)
    web: WebConfig = msgspec.field(default_factory=WebConfig)
    store: StoreConfig = msgspec.field(default_factory=StoreConfig)
    secrets_file: str | None = None

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.flat.timezone)

    def device(self, device_id: str) -> DeviceConfig | None:
        return next((d for d in self.devices if d.id == device_id), None)


# ---------------------------------------------------------------------------------------------
# Errors that name file, line and what was expected


class ConfigError(Exception):
    def __init__(self, file: Path | str, line: int | None, message: str) -> None:
        self.file = str(file)
        self.line = line
        self.message = message
        where = f"{self.file}:{line}" if line is not None else self.file
        super().__init__(f"{where}: {message}")


# ---------------------------------------------------------------------------------------------
# YAML with line numbers, secrets, and without YAML 1.1's surprises


class _Secret:
    __slots__ = ("line", "name", "source")

    def __init__(self, source: str, name: str, line: int) -> None:
        self.source, self.name, self.line = source, name, line


# libyaml's parser where the system has it (Debian's python3-yaml and PyPI wheels do): a flat with
# thousands of devices then loads in a fraction of the time; resolvers and constructors stay ours.
_Base: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_Base):  # type: ignore[misc]
    """SafeLoader minus sexagesimal numbers: `07:30` must stay a time, not the integer 450."""


_Loader.yaml_implicit_resolvers = {
    first: [
        (tag, rx) for tag, rx in resolvers if tag not in {"tag:yaml.org,2002:int", "tag:yaml.org,2002:float"}
    ]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:int",
    re.compile(r"^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+)$"),
    list("-+0123456789"),
)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?|\.[0-9_]+(?:[eE][-+][0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
    list("-+0123456789."),
)


def _secret_constructor(source: str) -> Any:
    def construct(loader: yaml.SafeLoader, node: yaml.Node) -> _Secret:
        name = loader.construct_scalar(cast("yaml.ScalarNode", node))
        return _Secret(source, str(name), node.start_mark.line + 1)

    return construct


_Loader.add_constructor("!secret", _secret_constructor("secret"))
_Loader.add_constructor("!env", _secret_constructor("env"))


def _compose(text: str, file: Path) -> tuple[Any, yaml.Node | None]:
    try:
        node = yaml.compose(text, Loader=_Loader)
        data = yaml.load(text, Loader=_Loader)  # noqa: S506
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        line = mark.line + 1 if mark else None
        raise ConfigError(file, line, f"not valid YAML: {err.problem or err.context}") from err
    except yaml.YAMLError as err:
        raise ConfigError(file, None, f"not valid YAML: {err}") from err
    return data, node


_PATH_TOKEN = re.compile(r"\.([^.\[]+)|\[(\d+)\]")


def _line_of(root: yaml.Node | None, path: Sequence[str | int], key: str | None = None) -> int | None:
    """The line of the node at `path` (or of `key` inside it), for error messages."""
    node = root
    line = root.start_mark.line + 1 if root else None
    for step in [*path, *([key] if key is not None else [])]:
        if isinstance(node, yaml.MappingNode) and isinstance(step, str):
            for key_node, value_node in node.value:
                if key_node.value == step:
                    line = key_node.start_mark.line + 1
                    node = value_node if step != key else key_node
                    break
            else:
                return line
        elif isinstance(node, yaml.SequenceNode) and isinstance(step, int) and step < len(node.value):
            node = node.value[step]
            line = node.start_mark.line + 1
        else:
            return line
    return line


def _parse_error_path(text: str) -> tuple[list[str | int], str]:
    message, _, where = text.rpartition(" - at `")
    if not message:
        return [], text
    tokens = _PATH_TOKEN.finditer(where.rstrip("`").removeprefix("$"))
    path: list[str | int] = [m[1] if m[1] is not None else int(m[2]) for m in tokens]
    return path, message


def _dotted(path: Sequence[str | int]) -> str:
    out = ""
    for step in path:
        out += f"[{step}]" if isinstance(step, int) else (f".{step}" if out else step)
    return out


# ---------------------------------------------------------------------------------------------
# Loading


def _resolve_secrets(data: Any, file: Path, secrets_file: str | None) -> Any:
    secrets: dict[str, Any] | None = None

    def load_secrets(line: int) -> dict[str, Any]:
        nonlocal secrets
        if secrets is None:
            path = Path(secrets_file) if secrets_file else file.parent / "secrets.yaml"
            if not path.is_absolute():
                path = file.parent / path
            try:
                mode = path.stat().st_mode
                text = path.read_text(encoding="utf-8")
            except OSError as err:
                raise ConfigError(file, line, f"cannot read the secrets file {path}: {err.strerror}") from err
            if mode & (stat.S_IRWXG | stat.S_IRWXO):
                raise ConfigError(
                    path,
                    None,
                    f"the secrets file must be readable by its owner only (chmod 600 {path})",
                )
            loaded = yaml.load(text, Loader=_Loader)  # noqa: S506
            if not isinstance(loaded, dict):
                raise ConfigError(path, 1, "expected a mapping of secret names to values")
            secrets = loaded
        return secrets

    def walk(value: Any) -> Any:
        if isinstance(value, _Secret):
            if value.source == "env":
                if value.name not in os.environ:
                    raise ConfigError(file, value.line, f"environment variable {value.name} is not set")
                return os.environ[value.name]
            table = load_secrets(value.line)
            if value.name not in table:
                raise ConfigError(file, value.line, f"secret {value.name!r} is not in the secrets file")
            return table[value.name]
        if isinstance(value, dict):
            return {k: walk(v) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v) for v in value]
        return value

    return walk(data)


def parse_config(text: str, file: Path | str = "<config>") -> HubConfig:
    """Validate a config text. Raises ConfigError naming file, line and what was expected."""
    file = Path(file)
    data, root = _compose(text, file)
    if not isinstance(data, dict):
        raise ConfigError(file, 1, "expected a mapping with at least `flat:` and `rooms:`")
    secrets_file = data.get("secrets_file")
    data = _resolve_secrets(data, file, secrets_file if isinstance(secrets_file, str) else None)
    try:
        config = msgspec.convert(data, HubConfig, dec_hook=_dec_hook)
    except msgspec.ValidationError as err:
        path, message = _parse_error_path(str(err))
        unknown = re.match(r"Object contains unknown field `(.+)`", message)
        if unknown:
            line = _line_of(root, path, key=unknown[1])
            known = _known_fields(path)
            hint = f"; expected one of: {', '.join(known)}" if known else ""
            raise ConfigError(file, line, f"{_dotted([*path, unknown[1]])}: unknown key{hint}") from err
        line = _line_of(root, path)
        where = _dotted(path) or "top level"
        choices = _choices(path) if message.startswith("Invalid enum value") else []
        hint = f"; expected one of: {', '.join(choices)}" if choices else ""
        raise ConfigError(file, line, f"{where}: {message[0].lower()}{message[1:]}{hint}") from err
    _check_references(config, file, root)
    return config


def _type_at(path: Sequence[str | int]) -> msgspec.inspect.Type | None:
    """The declared type of the value at `path`, for hints in error messages."""
    info: msgspec.inspect.Type = msgspec.inspect.type_info(HubConfig)
    for step in path:
        if isinstance(step, int):
            continue
        struct = _struct_of(info)
        if struct is None:
            return None
        fields = cast("msgspec.inspect.StructType", msgspec.inspect.type_info(struct)).fields
        field = next((f for f in fields if f.encode_name == step), None)
        if field is None:
            return None
        info = field.type
    return info


def _known_fields(path: Sequence[str | int]) -> list[str]:
    """The keys a section accepts, for the 'unknown key' hint."""
    struct = _struct_of(_type_at(path)) if path else HubConfig
    if struct is None:
        return []
    info = msgspec.inspect.type_info(struct)
    return [f.encode_name for f in info.fields] if isinstance(info, msgspec.inspect.StructType) else []


def _choices(path: Sequence[str | int]) -> list[str]:
    """The allowed words of an enum or literal field, for the 'invalid value' hint."""
    info = _type_at(path)
    members = info.types if isinstance(info, msgspec.inspect.UnionType) else (info,)
    for member in members:
        if isinstance(member, msgspec.inspect.EnumType):
            return [str(m.value) for m in member.cls]
        if isinstance(member, msgspec.inspect.LiteralType):
            return [str(v) for v in member.values]
    return []


def _struct_of(info: msgspec.inspect.Type | None) -> Any:
    if isinstance(info, msgspec.inspect.StructType):
        return info.cls
    if isinstance(info, msgspec.inspect.UnionType):
        for member in info.types:
            if (found := _struct_of(member)) is not None:
                return found
    if isinstance(info, msgspec.inspect.ListType | msgspec.inspect.VarTupleType):
        return _struct_of(info.item_type)
    if isinstance(info, msgspec.inspect.DictType):
        return _struct_of(info.value_type)
    return None


def _check_references(config: HubConfig, file: Path, root: yaml.Node | None) -> None:
    """What types alone cannot say: rooms, contacts and ids must refer to things that exist."""

    def fail(path: Sequence[str | int], message: str) -> None:
        raise ConfigError(file, _line_of(root, path), f"{_dotted(path)}: {message}")

    try:
        ZoneInfo(config.flat.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        fail(
            ["flat", "timezone"],
            f"unknown time zone {config.flat.timezone!r}; expected e.g. Europe/Berlin",
        )
    if not re.fullmatch(r"[a-z0-9][a-z0-9_-]*", config.flat.id):
        fail(
            ["flat", "id"],
            "expected lower-case letters, digits, - and _ (it is an MQTT topic segment)",
        )
    if len(set(config.rooms)) != len(config.rooms):
        fail(["rooms"], "a room is listed twice")
    seen: set[str] = set()
    rooms = set(config.rooms)
    for i, device in enumerate(config.devices):
        if device.id in seen:
            fail(["devices", i, "id"], f"device id {device.id!r} is used twice")
        seen.add(device.id)
        if device.room is not None and device.room not in rooms:
            fail(
                ["devices", i, "room"],
                f"unknown room {device.room!r}; expected one of: {', '.join(config.rooms)}",
            )
        transports = [t for t in ("zigbee", "zigbee2mqtt", "ble") if getattr(device, t) is not None]
        if len(transports) > 1:
            fail(["devices", i], f"a device has one transport, got {', '.join(transports)}")
        if device.bindkey is not None and not re.fullmatch(r"[0-9a-fA-F]{32}", device.bindkey):
            fail(["devices", i, "bindkey"], "expected 32 hexadecimal digits (a 128-bit BTHome key)")
    if config.web.host not in LOOPBACK_HOSTS and not config.web.api_token:
        fail(
            ["web", "host"],
            f"listening on {config.web.host} needs web.api_token (e.g. !secret web_token): "
            "without it anyone on the network could acknowledge alarms",
        )
    contact_ids = {c.id for c in config.contacts}
    if len(contact_ids) != len(config.contacts):
        fail(["contacts"], "a contact id is used twice")
    for i, contact in enumerate(config.contacts):
        if not contact.channels:
            fail(["contacts", i, "channels"], "a contact needs at least one channel")
        for j, channel in enumerate(contact.channels):
            set_fields = [n for n in channel.__struct_fields__ if getattr(channel, n) is not None]
            if len(set_fields) != 1:
                fail(
                    ["contacts", i, "channels", j],
                    "expected exactly one of: " + ", ".join(channel.__struct_fields__),
                )
    policy_names = {"default", *IncidentKind, *POLICY_ALIASES}
    for name, policy in config.escalation.items():
        if name not in policy_names:
            fail(
                ["escalation", name],
                f"unknown incident kind; expected one of: {', '.join(sorted(policy_names))}",
            )
        for s, step in enumerate(policy.steps or ()):
            for target in step.notify:
                if target not in contact_ids:
                    known = ", ".join(sorted(contact_ids)) or "(no contacts)"
                    fail(
                        ["escalation", name, "steps", s, "notify"],
                        f"unknown contact {target!r}; expected one of: {known}",
                    )


def load_config(path: Path | str) -> HubConfig:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as err:
        raise ConfigError(path, None, "no such file") from err
    except UnicodeDecodeError as err:
        raise ConfigError(path, None, "not a UTF-8 text file") from err
    except OSError as err:
        raise ConfigError(path, None, f"cannot read: {err.strerror}") from err
    return parse_config(text, path)


def demo_config_path() -> Path:
    return Path(__file__).with_name("demo") / "flat.yaml"


# Names installers know from other systems, for the same incident kind.
POLICY_ALIASES: Mapping[str, IncidentKind] = {"help_button": IncidentKind.HELP}


def policy_for(config: HubConfig, kind: IncidentKind) -> EscalationPolicy:
    """The policy for an incident kind: its own entry over `default`, field by field."""
    default = config.escalation.get("default", EscalationPolicy())
    own = config.escalation.get(str(kind)) or next(
        (p for alias, p in config.escalation.items() if POLICY_ALIASES.get(alias) == kind), None
    )
    if own is None:
        return default
    return EscalationPolicy(
        cancel_window=own.cancel_window if own.cancel_window is not None else default.cancel_window,
        steps=own.steps if own.steps is not None else default.steps,
    )


def as_plain(config: HubConfig) -> Mapping[str, Any]:
    """The validated config as plain data (for the privacy page and `check-config --json`)."""
    return cast("Mapping[str, Any]", msgspec.to_builtins(config, enc_hook=_enc_hook))


def _enc_hook(value: object) -> object:
    if isinstance(value, Duration):
        return value.seconds
    if isinstance(value, TimeOfDay):
        return f"{value.minute // 60:02d}:{value.minute % 60:02d}"
    if isinstance(value, Percent):
        return value.value
    raise NotImplementedError(type(value))
