"""Check gamma-edge's Home Assistant discovery payloads against Home Assistant's own MQTT schemas.

Home Assistant is heavy (about 400 MB) and needs its own Python, so this is a script, not a test,
in two steps:

    python scripts/check_ha_discovery.py dump /tmp/ha-configs.json          # gamma-edge's venv
    python3 -m venv /tmp/ha && /tmp/ha/bin/pip install homeassistant
    /tmp/ha/bin/python scripts/check_ha_discovery.py check /tmp/ha-configs.json

`check` does what Home Assistant's MQTT discovery does with a config message (origin schema, then
the platform's discovery schema), reports keys the discovery schema would silently drop and keys
the strict platform schema refuses, and renders every template with Home Assistant's own template
engine for each camera state. It exits 1 on any finding.
"""
from __future__ import annotations

import asyncio
import json
import sys
import tempfile
from pathlib import Path

CAMERAS = ["gate", "dock.2"]


class _Link:
    """What HomeAssistantDiscovery reads of the broker link, without a broker."""

    prefix = "gamma-edge"
    status_topic = "gamma-edge/status"

    def topic(self, camera: str, kind: str) -> str:
        return f"{self.prefix}/{camera}/{kind}"

    def add_listener(self, listener) -> None:
        pass


def dump(path: str) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from runtime.outputs.homeassistant import HomeAssistantDiscovery
    from runtime.watch.camera import STATES

    configs = HomeAssistantDiscovery(_Link(), CAMERAS, STATES).configs
    Path(path).write_text(json.dumps({"states": list(STATES), "configs": configs}, indent=1))
    print(f"{len(configs)} discovery configs written to {path}")


def check(path: str) -> int:
    import voluptuous as vol
    from homeassistant.components.mqtt import binary_sensor, discovery, sensor
    from homeassistant.const import __version__

    document = json.loads(Path(path).read_text())
    platforms = {"sensor": sensor, "binary_sensor": binary_sensor}
    problems = []
    for topic, config in document["configs"].items():
        module = platforms[topic.split("/")[1]]
        try:
            discovery.MQTT_ORIGIN_INFO_SCHEMA(config["origin"])
            accepted = module.DISCOVERY_SCHEMA(dict(config))
        except vol.Invalid as exc:
            problems.append(f"{topic}: refused by the discovery schema: {exc}")
            continue
        dropped = set(config) - set(accepted)
        if dropped:
            problems.append(f"{topic}: keys the discovery schema drops: {sorted(dropped)}")
        try:
            module.PLATFORM_SCHEMA_MODERN({**config, "platform": "mqtt"} if "platform" in
                                          getattr(module.PLATFORM_SCHEMA_MODERN, "schema", {}) else dict(config))
        except vol.Invalid as exc:
            problems.append(f"{topic}: refused by the strict platform schema: {exc}")
    problems += asyncio.run(_render_templates(document))
    for line in problems:
        print(line)
    print(f"Home Assistant {__version__}: {len(document['configs'])} configs checked, {len(problems)} problem(s)")
    return 1 if problems else 0


async def _render_templates(document: dict) -> list[str]:
    """Every value and availability template, rendered by Home Assistant for each state."""
    from homeassistant.core import HomeAssistant
    from homeassistant.helpers.template import Template

    with tempfile.TemporaryDirectory() as folder:
        hass = HomeAssistant(folder)
        problems, rendered = [], 0
        for topic, config in document["configs"].items():
            templates = [config.get("value_template")] + [a.get("value_template") for a in config.get("availability", [])]
            for text in filter(None, templates):
                for state in document["states"]:
                    record = {"camera": "gate", "state": state, "time": "2026-12-05T10:00:00.000Z",
                              "score": None if state == "starting" else 0.42, "smoothed": None if state == "starting"
                              else 0.42, **({"reason": "blur"} if state == "degraded" else {})}
                    rendered += 1
                    try:
                        shown = Template(text, hass).async_render_with_possible_json_value(json.dumps(record), "")
                    except Exception as exc:  # noqa: BLE001 - any failure is a finding of this script
                        problems.append(f"{topic}: template {text!r} fails for state {state}: {exc}")
                        continue
                    if topic.split("/")[1] == "binary_sensor" and text == config.get("value_template") \
                            and shown not in (config.get("payload_on", "ON"), config.get("payload_off", "OFF")):
                        problems.append(f"{topic}: state {state} renders {shown!r}, neither on nor off")
        await hass.async_stop(force=True)
        print(f"{rendered} template renderings by Home Assistant's engine")
        return problems


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("dump", "check"):
        sys.exit(__doc__)
    if sys.argv[1] == "dump":
        dump(sys.argv[2])
    else:
        sys.exit(check(sys.argv[2]))
