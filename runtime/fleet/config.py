"""Which cameras a fleet watches and how: from the command line or a config file (YAML or TOML).

    cameras:
      - {name: gate, source: rtsp://10.0.0.11/stream1, fps: 2, threshold: 0.45}
      - {name: dock, source: http://10.0.0.12/video.mjpg, crops: five, hold_s: 20}
    defaults: {smooth: 5, baseline_warmup: 600}   # any camera setting, for every camera
    mqtt: {url: mqtts://broker.local, user: gamma, password: "{MQTT_PASSWORD}", ca: /etc/gamma-edge/ca.pem}
    homeassistant: {discovery: true}
    baseline: {file: /var/lib/gamma-edge/baselines.json}
    metrics: {port: 9108}
    webhook: {url: http://alerts.local/gamma}
    web: {listen: 127.0.0.1:8080}                  # the live page; token_file: FILE off this machine

Every key is checked: a misspelt one is named, never silently ignored (docs/fleet.md).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from contract.errors import UserError
from contract.manifest import CROP_PROTOCOLS
from runtime.watch.camera import MODES, WatchRules

# Camera names become MQTT topic levels and Prometheus label values: no '/', '+', '#' or spaces.
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
DEFAULT_MQTT_PREFIX = "gamma-edge"


@dataclass
class Camera(WatchRules):
    """One camera of a fleet, and (from WatchRules) the rules its quality events follow
    (docs/fleet.md, "Events")."""

    name: str
    source: str = field(repr=False)   # as written: it may hold a password or {NAME} placeholders
    fps: float | None = None          # score at most this many frames per second (None: as they come)
    crops: str | None = None          # crop protocol; None: the model's
    scene: str | None = None          # None: the model's first scene


def _text(value) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("a non-empty text")
    return value.strip()


def _positive(value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ValueError("a number above 0")
    return float(value)


def _not_negative(value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ValueError("a number, 0 or more")
    return float(value)


def _number(value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError("a number")
    return float(value)


def _count(value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError("a whole number, 1 or more")
    return value


def _flag(value) -> bool:
    if not isinstance(value, bool):
        raise ValueError("true or false")
    return value


def _crops(value) -> str:
    if value not in CROP_PROTOCOLS:
        raise ValueError(f"one of {', '.join(CROP_PROTOCOLS)}")
    return value


def _evidence(value) -> str:
    if value not in MODES:
        raise ValueError(f"one of {', '.join(MODES)}")
    return value


def _address(value) -> str:
    """HOST:PORT, or a bare port (YAML reads `listen: 8080` as a number); checked in full where it is served."""
    return _text(str(value) if isinstance(value, int) and not isinstance(value, bool) else value)


def _port(value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 65535:
        raise ValueError("a port number from 1 to 65535 (0: any free port)")
    return value


# One checker per setting: the table is the schema (adding a setting is adding a row).
CAMERA_SETTINGS: dict[str, Callable] = {
    "name": _text, "source": _text, "fps": _positive, "crops": _crops, "scene": _text, "smooth": _count,
    "threshold": _number, "margin": _not_negative, "hold_s": _not_negative, "frozen_diff": _not_negative,
    "covered_contrast": _not_negative, "baseline_warmup": _not_negative, "drop": _not_negative,
    "spreads": _not_negative, "evidence": _evidence,
}
# url, user and password may hold {NAME} placeholders (contract/secrets.py); ca, cert, key: PEM files
MQTT_SETTINGS: dict[str, Callable] = {"url": _text, "prefix": _text, "client_id": _text, "user": _text,
                                      "password": _text, "password_file": _text, "ca": _text, "cert": _text,
                                      "key": _text, "insecure": _flag}
METRICS_SETTINGS: dict[str, Callable] = {"port": _port, "host": _text}
WEBHOOK_SETTINGS: dict[str, Callable] = {"url": _text}
BASELINE_SETTINGS: dict[str, Callable] = {"file": _text}
WEB_SETTINGS: dict[str, Callable] = {"listen": _address, "token_file": _text}
HOMEASSISTANT_SETTINGS: dict[str, Callable] = {"discovery": _flag, "prefix": _text}
SECTIONS = ("cameras", "defaults", "mqtt", "metrics", "webhook", "baseline", "web", "homeassistant")


@dataclass
class FleetConfig:
    cameras: list[Camera]
    mqtt: dict = field(default_factory=dict)      # url, prefix, client_id
    metrics: dict = field(default_factory=dict)   # port, host
    webhook: dict = field(default_factory=dict)   # url
    baseline: dict = field(default_factory=dict)  # file
    web: dict = field(default_factory=dict)       # listen, token_file
    homeassistant: dict = field(default_factory=dict)  # discovery, prefix


def _checked(table: dict[str, Callable], values, where: str, path: str) -> dict:
    """Each key of `values` checked against `table`, in one sentence when wrong."""
    if not isinstance(values, dict):
        raise UserError(f"config '{path}': {where} must be a table of settings (key: value)")
    checked = {}
    for key, value in values.items():
        if key not in table:
            raise UserError(f"config '{path}': {where} has an unknown key '{key}'; "
                                   f"known keys: {', '.join(table)}")
        try:
            checked[key] = table[key](value)
        except ValueError as exc:
            raise UserError(f"config '{path}': '{key}' of {where} must be {exc}, not {value!r}") from None
    return checked


def camera_from(settings: dict, where: str, path: str) -> Camera:
    """A Camera from checked settings: a name and a source are required, the name topic-safe."""
    for key in ("name", "source"):
        if key not in settings:
            raise UserError(f"config '{path}': {where} has no '{key}'; give every camera a name and a source")
    check_name(settings["name"], f"config '{path}': ")
    return Camera(**settings)


def check_name(name: str, context: str = "") -> None:
    if not NAME_PATTERN.match(name):
        raise UserError(f"{context}the camera name '{name}' cannot be an MQTT topic level or a metric label; "
                               f"use letters, digits, '_', '-' or '.' (at most 64)")


def check_unique(cameras: list[Camera], context: str = "") -> None:
    seen: set[str] = set()
    for camera in cameras:
        if camera.name in seen:
            raise UserError(f"{context}two cameras are named '{camera.name}'; give each camera its own name")
        seen.add(camera.name)


def read_config_file(path: Path) -> dict:
    """The file's data: YAML (.yaml / .yml, needs PyYAML) or TOML (.toml, Python 3.11+)."""
    if not path.is_file():
        raise UserError(f"config '{path}' does not exist; check the path")
    suffix = path.suffix.lower()
    text = path.read_text(encoding="utf-8")
    if suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise UserError(f"config '{path}' is YAML, which needs PyYAML; "
                                   f"pip install 'gamma-edge[fleet]', or write the config in TOML") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise UserError(f"config '{path}' is not valid YAML ({_first_line(exc)}); fix the file") from None
    elif suffix == ".toml":
        try:
            import tomllib
        except ImportError:
            raise UserError(f"config '{path}' is TOML, which needs Python 3.11 or newer; "
                                   f"use YAML instead") from None
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise UserError(f"config '{path}' is not valid TOML ({exc}); fix the file") from None
    else:
        raise UserError(f"config '{path}' must end in .yaml, .yml or .toml")
    if not isinstance(data, dict):
        raise UserError(f"config '{path}' holds no settings; it needs a 'cameras' list (docs/fleet.md)")
    return data


def _first_line(exc: Exception) -> str:
    return " ".join(str(exc).split())


def load_config(path: str | Path, overrides: dict | None = None) -> FleetConfig:
    """Read and check a fleet config. `overrides` (camera settings given on the command line)
    apply on top of the file's defaults and under each camera's own settings."""
    path = Path(path).expanduser()
    data = read_config_file(path)
    unknown = [key for key in data if key not in SECTIONS]
    if unknown:
        raise UserError(f"config '{path}' has an unknown key '{unknown[0]}'; known keys: {', '.join(SECTIONS)}")
    cameras = data.get("cameras")
    if not isinstance(cameras, list) or not cameras:
        raise UserError(f"config '{path}' needs a 'cameras' list with at least one camera (docs/fleet.md)")
    defaults = {**_checked(CAMERA_SETTINGS, data.get("defaults", {}), "'defaults'", str(path)), **(overrides or {})}
    for key in ("name", "source"):
        if key in defaults:
            raise UserError(f"config '{path}': 'defaults' cannot hold '{key}'; each camera has its own")
    fleet = []
    for number, entry in enumerate(cameras, 1):
        label = f"camera {number}" + (f" ('{entry['name']}')" if isinstance(entry, dict) and "name" in entry else "")
        fleet.append(camera_from({**defaults, **_checked(CAMERA_SETTINGS, entry, label, str(path))}, label, str(path)))
    check_unique(fleet, f"config '{path}': ")
    return FleetConfig(fleet, mqtt=_checked(MQTT_SETTINGS, data.get("mqtt", {}), "'mqtt'", str(path)),
                       metrics=_checked(METRICS_SETTINGS, data.get("metrics", {}), "'metrics'", str(path)),
                       webhook=_checked(WEBHOOK_SETTINGS, data.get("webhook", {}), "'webhook'", str(path)),
                       baseline=_checked(BASELINE_SETTINGS, data.get("baseline", {}), "'baseline'", str(path)),
                       web=_checked(WEB_SETTINGS, data.get("web", {}), "'web'", str(path)),
                       homeassistant=_checked(HOMEASSISTANT_SETTINGS, data.get("homeassistant", {}),
                                              "'homeassistant'", str(path)))


def cameras_from_sources(sources: list[str], overrides: dict | None = None) -> list[Camera]:
    """Command-line sources: `NAME=SOURCE`, or a bare SOURCE named cam1, cam2, ... in order."""
    cameras = []
    for number, text in enumerate(sources, 1):
        name, source = split_name(text)
        name = name or f"cam{number}"
        check_name(name)
        cameras.append(Camera(name=name, source=source, **(overrides or {})))
    check_unique(cameras)
    return cameras


def split_name(text: str) -> tuple[str | None, str]:
    """'gate=rtsp://...' -> ('gate', 'rtsp://...'). A '=' inside a URL's query (after ':' or '/')
    is not a name."""
    head, sep, tail = text.partition("=")
    if sep and head and not any(mark in head for mark in ":/?&"):
        return head, tail
    return None, text
