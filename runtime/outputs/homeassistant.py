"""Home Assistant MQTT discovery: every camera of the fleet appears in Home Assistant by itself
(--ha-discovery; docs/home-assistant.md).

Each camera is one device (reached via the box's own device) with a quality sensor, a state
sensor, one binary sensor per condition (degraded, covered, frozen; source as connectivity) and
the likely cause of a degradation as a diagnostic sensor. They all read the camera's retained
state topic, so nothing is published twice. Configs are retained, sent at every connect and again
when Home Assistant says `online` on its status topic (it lost them in a restart).

Cameras that left the config lose their entities, and no file is kept for that: the broker is the
record. The box subscribes to its own config topics (DISCOVERY/<component>/<node>/+/config; the
node id comes from the MQTT prefix, which each box sharing a broker has its own of), the broker
hands back the retained ones, and any that is not a current camera's is deleted with an empty
retained payload.
"""
from __future__ import annotations

import hashlib
import json
import re
from importlib import metadata

from runtime.outputs.base import LOST_STATE

ON, OFF = "ON", "OFF"
# a condition's binary sensor: its Home Assistant device class (https://www.home-assistant.io/integrations/binary_sensor/)
DEVICE_CLASSES = {"covered": "tamper", "frozen": "problem", "degraded": "problem"}
NOT_CONDITIONS = ("starting", "ok")
TOPIC_ID = re.compile(r"[^A-Za-z0-9_-]")


def topic_id(name: str) -> str:
    """A name as a discovery topic level and id ([A-Za-z0-9_-]): unchanged when it already is one,
    else its other characters as '_' and a short hash of the name, so 'a.b' and 'a_b' stay apart."""
    cleaned = TOPIC_ID.sub("_", name)
    if cleaned == name:
        return name
    return f"{cleaned}_{hashlib.sha256(name.encode()).hexdigest()[:6]}"


def _version() -> str:
    try:
        return metadata.version("gamma-edge")
    except metadata.PackageNotFoundError:
        return "unknown"


class HomeAssistantDiscovery:
    """An output of the fleet (publish_event / publish_state / close: the state topics carry what
    the entities show) and a listener of its broker link (runtime/outputs/mqtt.py)."""

    def __init__(self, link, cameras: list[str], states: tuple[str, ...], discovery_prefix: str = "homeassistant",
                 expire_after: int = 60, log=print):
        self.link, self.cameras, self.log = link, list(cameras), log
        self.discovery_prefix = discovery_prefix.rstrip("/")
        self.conditions = [state for state in states if state not in NOT_CONDITIONS]
        self.expire_after = expire_after
        self.node = topic_id(link.prefix)
        self.version = _version()
        self.configs = self._configs()
        self.subscriptions = (self.status_topic, f"{self.discovery_prefix}/+/{self.node}/+/config")
        self.removed: set[str] = set()
        link.add_listener(self)

    @property
    def status_topic(self) -> str:
        return f"{self.discovery_prefix}/status"

    # -- the configs ---------------------------------------------------------------------------
    def _configs(self) -> dict[str, dict]:
        """Every entity's config, by its discovery topic."""
        configs = {self._topic("binary_sensor", "status"): self._host_status()}
        for camera in self.cameras:
            for component, key, config in self._camera_entities(camera):
                configs[self._topic(component, f"{topic_id(camera)}_{key}")] = config
        return configs

    def _topic(self, component: str, object_id: str) -> str:
        return f"{self.discovery_prefix}/{component}/{self.node}/{object_id}/config"

    def _host_device(self) -> dict:
        return {"identifiers": [self.node], "name": self.link.prefix, "manufacturer": "gamma-edge",
                "model": "camera quality watch", "sw_version": self.version}

    def _origin(self) -> dict:
        return {"name": "gamma-edge", "sw_version": self.version}

    def _host_status(self) -> dict:
        return {"name": "Status", "unique_id": f"{self.node}_status", "device_class": "connectivity",
                "state_topic": self.link.status_topic, "payload_on": "online", "payload_off": "offline",
                "entity_category": "diagnostic", "device": self._host_device(), "origin": self._origin()}

    def _camera_entities(self, camera: str) -> list[tuple[str, str, dict]]:
        state_topic = self.link.topic(camera, "state")
        host = {"topic": self.link.status_topic, "payload_available": "online", "payload_not_available": "offline"}
        source = {"topic": state_topic, "payload_available": "online", "payload_not_available": "offline",
                  "value_template": f"{{{{ 'offline' if value_json.state == '{LOST_STATE}' else 'online' }}}}"}
        device = {"identifiers": [f"{self.node}_{topic_id(camera)}"], "name": camera, "via_device": self.node,
                  "manufacturer": "gamma-edge", "model": "camera quality watch"}

        def entity(key: str, name: str, available=(host, source), **config) -> dict:
            return {"name": name, "unique_id": f"{self.node}_{topic_id(camera)}_{key}", "state_topic": state_topic,
                    "availability": list(available), "availability_mode": "all", "device": device,
                    "origin": self._origin(), **config}

        entities = [
            ("sensor", "quality", entity(
                "quality", "Quality", state_class="measurement", suggested_display_precision=3,
                value_template="{{ value_json.smoothed }}", expire_after=self.expire_after,
                json_attributes_topic=state_topic, icon="mdi:camera-iris")),
            # plain text, not device_class enum: Home Assistant's MQTT sensor took no `options` before 2024.4
            ("sensor", "state", entity("state", "State", value_template="{{ value_json.state }}", icon="mdi:cctv")),
            ("sensor", "cause", entity(
                "cause", "Cause", entity_category="diagnostic",
                value_template="{{ value_json.reason | default('none') }}")),
        ]
        for condition in self.conditions:
            if condition == LOST_STATE:
                entities.append(("binary_sensor", "source", entity(
                    "source", "Source", available=(host,), device_class="connectivity",
                    value_template=f"{{{{ '{OFF}' if value_json.state == '{LOST_STATE}' else '{ON}' }}}}")))
            else:
                entities.append(("binary_sensor", condition, entity(
                    condition, condition.capitalize(), device_class=DEVICE_CLASSES.get(condition, "problem"),
                    value_template=f"{{{{ '{ON}' if value_json.state == '{condition}' else '{OFF}' }}}}")))
        return entities

    # -- the link's side (paho's thread) ------------------------------------------------------------
    def on_connected(self, link) -> None:
        self._send_configs()

    def on_message(self, topic: str, payload: bytes, retained: bool) -> None:
        if topic == self.status_topic:
            if payload.decode(errors="replace").strip() == "online" and not retained:
                self._send_configs()            # Home Assistant restarted: it has forgotten them
            return
        if payload and topic not in self.configs and topic.endswith("/config"):
            self.link.publish(topic, b"", retain=True)
            self._said_removed(payload)

    def _send_configs(self) -> None:
        for topic, config in self.configs.items():
            self.link.publish(topic, json.dumps(config), retain=True)

    def _said_removed(self, payload: bytes) -> None:
        try:
            name = json.loads(payload)["device"]["name"]
        except (ValueError, KeyError, TypeError):
            return
        if name not in self.removed:
            self.removed.add(name)
            self.log(f"Home Assistant: camera '{name}' is no longer in the fleet; its entities are removed")

    # -- the fleet's side --------------------------------------------------------------------------
    def publish_event(self, event: dict, image=None) -> None:
        """The entities read the state topics."""

    def publish_state(self, state: dict) -> None:
        """The MQTT output publishes it; the entities read it there."""

    def close(self) -> None:
        """The configs stay: the cameras are still configured, and shown unavailable while the box is away."""
