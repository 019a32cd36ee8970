"""`gamma-edge run`'s options for how a fleet reaches its MQTT broker (user, password, TLS) and
Home Assistant discovery, and the broker they name together with --mqtt and the config file's
`mqtt` and `homeassistant` sections (docs/fleet.md, docs/secrets.md, docs/home-assistant.md)."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import click

from contract.errors import UserError
from runtime.commands.options import option_group


@dataclasses.dataclass(frozen=True)
class BrokerChoice:
    """Who the fleet is to the broker, how the link is protected, and whether Home Assistant is told."""

    mqtt_user: str | None = None
    mqtt_password_file: Path | None = None
    mqtt_ca: Path | None = None
    mqtt_cert: Path | None = None
    mqtt_key: Path | None = None
    mqtt_insecure: bool = False
    ha_discovery: bool = False

    def given(self) -> list[str]:
        """The options given, by their names on the command line."""
        return [f"--{name.replace('_', '-')}" for name, value in dataclasses.asdict(self).items()
                if value not in (None, False)]


broker_options = option_group(BrokerChoice, "broker", [
    click.option("--mqtt-user", default=None, metavar="USER",
                 help="Fleet: the MQTT user (may be a {NAME} placeholder: docs/secrets.md)."),
    click.option("--mqtt-password-file", type=click.Path(path_type=Path), default=None, metavar="FILE",
                 help="Fleet: read the MQTT password from FILE. Default: $GAMMA_EDGE_MQTT_PASSWORD, else the "
                      "--mqtt address's own."),
    click.option("--mqtt-ca", type=click.Path(path_type=Path), default=None, metavar="FILE",
                 help="Fleet, mqtts://: the CA certificate (PEM) the broker's certificate must chain to. "
                      "Default: the system's CAs."),
    click.option("--mqtt-cert", type=click.Path(path_type=Path), default=None, metavar="FILE",
                 help="Fleet, mqtts://: a client certificate (PEM), for brokers that ask for one."),
    click.option("--mqtt-key", type=click.Path(path_type=Path), default=None, metavar="FILE",
                 help="Fleet, mqtts://: the client certificate's key (PEM, unencrypted), if not in --mqtt-cert."),
    click.option("--mqtt-insecure", is_flag=True,
                 help="Fleet, mqtts://: do not check the broker's certificate (encrypted, but not authenticated)."),
    click.option("--ha-discovery", is_flag=True,
                 help="Fleet: announce every camera to Home Assistant over MQTT (docs/home-assistant.md)."),
])


def broker_settings(url: str | None, broker: BrokerChoice, loaded) -> tuple[object | None, dict]:
    """The broker (runtime/outputs/broker.py's Broker, every file read now) and Home Assistant's
    settings: the command line's, else the config file's (`loaded`, a FleetConfig or None)."""
    from runtime.outputs.broker import broker_from

    mqtt = loaded.mqtt if loaded else {}
    homeassistant = dict(loaded.homeassistant) if loaded else {}
    if broker.ha_discovery:
        homeassistant["discovery"] = True
    url = url or mqtt.get("url")
    if url is None:
        given = broker.given() + [f"mqtt.{key} in --config" for key in mqtt if key != "prefix"]
        if given or homeassistant.get("discovery"):
            what = ", ".join(given) or "Home Assistant discovery"
            raise UserError(f"{what} needs a broker; give it with --mqtt URL (or mqtt.url in --config)")
        return None, homeassistant

    def path(option: Path | None, key: str) -> str | None:
        return str(option) if option is not None else mqtt.get(key)

    return broker_from(url, user=broker.mqtt_user or mqtt.get("user"), password=mqtt.get("password"),
                       password_file=path(broker.mqtt_password_file, "password_file"),
                       ca=path(broker.mqtt_ca, "ca"), cert=path(broker.mqtt_cert, "cert"),
                       key=path(broker.mqtt_key, "key"),
                       insecure=broker.mqtt_insecure or mqtt.get("insecure", False)), homeassistant
