"""Home Assistant MQTT discovery against a real broker (mosquitto on 127.0.0.1): every camera's
configs retained after the start, sent again on Home Assistant's birth message, deleted for a camera
that left the config; the value templates rendered with Jinja (Home Assistant's template engine)
give the states the entities should show."""
import json
import threading

import jinja2
import pytest

from runtime import Scorer
from runtime.fleet.config import Camera
from runtime.fleet.runner import FleetOptions, FleetRunner
from runtime.outputs.homeassistant import topic_id
from runtime.watch.camera import STATES
from runtime_fixtures import FakeCapture, make_model, textured_image
from mqtt_brokers import Mosquitto, Subscriber, needs_mosquitto, wait_until

pytestmark = needs_mosquitto
ENTITIES = {"sensor": ("quality", "state", "cause"), "binary_sensor": ("degraded", "covered", "frozen", "source")}
REQUIRED = {"name", "unique_id", "state_topic", "availability", "device", "origin", "value_template"}


@pytest.fixture(scope="module")
def scorer(tmp_path_factory):
    return Scorer(make_model(tmp_path_factory.mktemp("model")), crops="center")


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    with Mosquitto(tmp_path_factory.mktemp("ha-broker")) as running:
        yield running


def config_topics(camera: str) -> set[str]:
    return {f"homeassistant/{component}/gamma-edge/{topic_id(camera)}_{key}/config"
            for component, keys in ENTITIES.items() for key in keys}


def start_fleet(scorer, broker, names: list[str]) -> tuple[FleetRunner, threading.Thread, list[str]]:
    frames = [textured_image(120, 160, seed=i) for i in range(8)]
    said: list[str] = []
    runner = FleetRunner(scorer, [Camera(name, f"rtsp://cam/{name}", hold_s=0.5) for name in names],
                         FleetOptions(mqtt=broker.url, ha_discovery=True, settle_frames=0, backoff=(0.01, 0.02)),
                         open_source=lambda source: FakeCapture(frames * 500, delay=0.02), log=said.append)
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    return runner, thread, said


def retained_configs(broker) -> dict[str, dict]:
    late = Subscriber(broker, "homeassistant/#")
    late.wait_for(lambda m: False, 1.0)          # the broker hands over every retained message at once
    late.close()
    return {t: json.loads(p) for t, p, r in late.messages if r and p}


def test_every_camera_is_discovered_again_on_birth_and_removed_when_it_leaves(scorer, broker):
    watcher = Subscriber(broker, "homeassistant/#")
    runner, thread, said = start_fleet(scorer, broker, ["gate", "dock.2"])
    try:
        wanted = config_topics("gate") | config_topics("dock.2") | {"homeassistant/binary_sensor/gamma-edge/status/config"}
        assert watcher.wait_for(lambda m: wanted <= {t for t, _, _ in m}, 15)
        configs = retained_configs(broker)
        assert set(configs) == wanted
        for topic, config in configs.items():
            assert REQUIRED - {"availability", "value_template"} <= set(config), topic
            if "/status/" in topic:
                continue
            assert REQUIRED <= set(config), topic
            assert config["device"]["via_device"] == "gamma-edge" and config["unique_id"] == "gamma-edge_" + topic.split("/")[3]
        gate = configs["homeassistant/sensor/gamma-edge/gate_quality/config"]
        assert (gate["state_class"], gate["expire_after"], gate["state_topic"]) == \
            ("measurement", 60, "gamma-edge/gate/state")
        assert len({config["unique_id"] for config in configs.values()}) == len(configs)

        sent = len(watcher.messages)
        watcher.client.publish("homeassistant/status", "online")          # Home Assistant restarted
        assert watcher.wait_for(lambda m: len(m) >= sent + len(wanted) + 1, 10)
        assert wanted <= {t for t, _, _ in watcher.messages[sent:]}
    finally:
        runner.stop.set()
        thread.join(20)
        watcher.close()

    runner, thread, said = start_fleet(scorer, broker, ["gate"])          # dock.2 left the config
    try:
        assert wait_until(lambda: any("dock.2" in line for line in said), 15), said
        assert wait_until(lambda: not set(retained_configs(broker)) & config_topics("dock.2"), 10)
    finally:
        runner.stop.set()
        thread.join(20)
    assert set(retained_configs(broker)) == config_topics("gate") | {"homeassistant/binary_sensor/gamma-edge/status/config"}
    assert "Home Assistant: camera 'dock.2' is no longer in the fleet; its entities are removed" in said



def test_the_value_templates_show_each_state(broker):
    from runtime.outputs.homeassistant import HomeAssistantDiscovery
    from runtime.outputs.mqtt import MqttEvents

    link = MqttEvents(broker.url, lambda: [])
    configs = HomeAssistantDiscovery(link, ["gate"], STATES).configs
    environment = jinja2.Environment()

    def show(component: str, key: str, record: dict, template: str = "value_template") -> str:
        config = configs[f"homeassistant/{component}/gamma-edge/gate_{key}/config"]
        return environment.from_string(config[template]).render(value_json=record).strip()

    for state in STATES:
        record = {"camera": "gate", "state": state, "score": None, "smoothed": None}
        shown = {key: show("binary_sensor", key, record) for key in ENTITIES["binary_sensor"]}
        assert shown == {"degraded": "ON" if state == "degraded" else "OFF",
                         "covered": "ON" if state == "covered" else "OFF",
                         "frozen": "ON" if state == "frozen" else "OFF",
                         "source": "OFF" if state == "lost" else "ON"}, state
        assert show("sensor", "state", record) == state
        availability = configs["homeassistant/sensor/gamma-edge/gate_quality/config"]["availability"][1]
        assert environment.from_string(availability["value_template"]).render(value_json=record) == \
            ("offline" if state == "lost" else "online")
    degraded = {"camera": "gate", "state": "degraded", "score": 0.31, "smoothed": 0.33, "reason": "blur"}
    assert show("sensor", "quality", degraded) == "0.33" and show("sensor", "cause", degraded) == "blur"
    assert show("sensor", "quality", {"state": "starting", "smoothed": None}) == "None"   # HA: unknown
    assert show("sensor", "cause", {"state": "ok", "smoothed": 0.7}) == "none"


def test_topic_ids_are_stable_and_stay_apart():
    assert topic_id("gate") == "gate" and topic_id("front-door_2") == "front-door_2"
    assert topic_id("a.b") != topic_id("a_b") and topic_id("a.b") == topic_id("a.b")
    assert topic_id("a.b").startswith("a_b_")
