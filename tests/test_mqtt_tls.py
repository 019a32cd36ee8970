"""The fleet's MQTT link against a real broker that requires TLS, a client certificate and a password
(mosquitto, started here on 127.0.0.1 with a CA and certificates made here): events and retained
states arrive; a wrong password, an unknown CA and a broker that is down are one sentence each and
never stop the caller; events raised while the broker is away arrive in order when it is back."""
import json
import time

import pytest

from runtime import UserError
from runtime.outputs.broker import broker_from
from runtime.outputs.mqtt import MqttEvents
from mqtt_brokers import Mosquitto, Subscriber, free_port, make_pki, needs_mosquitto, wait_until

pytestmark = needs_mosquitto
USER, PASSWORD = "box.7@site-a", "Tls-Secret#1"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def broker(tmp_path_factory, pki):
    with Mosquitto(tmp_path_factory.mktemp("tls-broker"), users={USER: PASSWORD}, pki=pki,
                   client_certs=True) as running:
        yield running


def state(camera: str, value: str = "ok") -> dict:
    return {"camera": camera, "state": value, "time": "2026-12-05T10:00:00.000Z", "score": 0.7, "smoothed": 0.7}


def event(camera: str, number: int) -> dict:
    return {"event": "degraded", "camera": camera, "n": number}


def link(url: str, pki, said: list, password: str = PASSWORD, ca=None, cert: bool = True, **settings) -> MqttEvents:
    target = broker_from(url, user=USER, password=password, ca=str(ca or pki.ca),
                         cert=str(pki.client_cert) if cert else None, key=str(pki.client_key) if cert else None)
    return MqttEvents(target, lambda: [state("gate")], log=said.append, **settings)


def test_events_and_retained_states_arrive_over_tls_with_a_password(broker, pki, tmp_path, monkeypatch):
    secret = tmp_path / "mqtt-password"
    secret.write_text(PASSWORD + "\n")                 # as `echo` writes it
    target = broker_from(f"mqtts://{USER}@127.0.0.1:{broker.port}", password_file=str(secret), ca=str(pki.ca),
                         cert=str(pki.client_cert), key=str(pki.client_key))
    assert (target.user, target.password, target.tls) == (USER, PASSWORD, True)
    subscriber = Subscriber(broker, "gamma-edge/#", USER, PASSWORD)
    said = []
    mqtt = MqttEvents(target, lambda: [state("gate")], log=said.append).start()
    try:
        assert mqtt.connected.is_set()
        for number in range(3):
            mqtt.publish_event(event("gate", number))
        mqtt.publish_state(state("gate", "degraded"))
        assert subscriber.wait_for(lambda m: len([t for t, _, _ in m if t.endswith("/event")]) == 3, 10)
    finally:
        mqtt.close()
        subscriber.close()
    assert [json.loads(p)["n"] for p in subscriber.texts("gamma-edge/gate/event")] == [0, 1, 2]
    assert said == [] and mqtt.delivered == 3
    late = Subscriber(broker, "gamma-edge/#", USER, PASSWORD)
    assert late.wait_for(lambda m: len(m) >= 2, 10)
    retained = {t: p.decode() for t, p, r in late.messages if r}
    late.close()
    assert json.loads(retained["gamma-edge/gate/state"])["state"] == "degraded"
    assert retained["gamma-edge/status"] == "offline"               # said on the clean stop


@pytest.mark.parametrize("case, sentence", [
    ("wrong password", "the broker refused the user name or password (Not authorized); check --mqtt-user"),
    ("unknown CA", "its certificate was refused ("),
    ("broker down", "it cannot be reached (Connection refused)"),
    ("no client certificate", "the TLS handshake failed ("),
])
def test_a_wrong_password_an_unknown_ca_and_a_broker_down_are_one_sentence_each(broker, pki, case, sentence):
    url = f"mqtts://127.0.0.1:{free_port() if case == 'broker down' else broker.port}"
    said = []
    mqtt = link(url, pki, said, password="wrong" if case == "wrong password" else PASSWORD,
                ca=pki.other_ca if case == "unknown CA" else None, cert=case != "no client certificate").start()
    try:
        for number in range(5):                     # the caller goes on: nothing raises, nothing blocks
            mqtt.publish_event(event("gate", number))
        time.sleep(1.5)                             # paho retries meanwhile (every 1 to 5 s): no second line
    finally:
        mqtt.close(timeout=0.5)
    address = url.split("://")[1]
    assert len(said) == 1 and said[0].startswith(f"warning: MQTT broker {address}: {sentence}"), said
    assert "events are not delivered until it is back" in said[0]
    if case == "unknown CA":
        assert "); give the CA that signed it with --mqtt-ca" in said[0]
    assert mqtt.delivered == 0 and mqtt.undelivered == 5


def test_events_raised_while_the_broker_is_away_arrive_in_order_when_it_is_back(tmp_path, pki):
    broker = Mosquitto(tmp_path / "broker", users={USER: PASSWORD}, pki=pki).start()
    said = []
    subscriber = Subscriber(broker, "gamma-edge/#", USER, PASSWORD, session="watcher")   # kept across the restart
    mqtt = link(broker.url, pki, said, queue_size=4).start()
    try:
        mqtt.publish_event(event("gate", 0))
        assert subscriber.wait_for(lambda m: any(t.endswith("/event") for t, _, _ in m), 10)
        broker.stop()
        assert wait_until(lambda: not mqtt.connected.is_set(), 10)
        for number in range(1, 7):                  # 6 events while it is away; the queue keeps the newest 4
            mqtt.publish_event(event("gate", number))
        broker.start()
        assert subscriber.wait_for(lambda m: len(numbers(m)) == 5, 20), subscriber.messages
        assert subscriber.wait_for(lambda m: sum(t == "gamma-edge/gate/state" for t, _, _ in m) >= 2, 10)
    finally:
        mqtt.close()
        subscriber.close()
        broker.stop()
    assert numbers(subscriber.messages) == [0, 3, 4, 5, 6]
    address = f"127.0.0.1:{broker.port}"
    assert said[0].startswith(f"warning: MQTT broker {address}: ")
    assert said[1:] == [f"MQTT broker {address} reached again: events are delivered",
                        f"warning: MQTT broker {address}: 2 older event(s) raised while it was away were dropped "
                        f"(the queue keeps the newest 4); they are in the JSON lines"]
    assert (mqtt.delivered, mqtt.undelivered) == (5, 2)


def numbers(messages) -> list[int]:
    """The events' numbers in the order they first arrived: QoS 1 is at least once, so the broker
    may hand a subscriber an event again after its own restart."""
    seen = [json.loads(p)["n"] for t, p, _ in messages if t == "gamma-edge/gate/event"]
    return list(dict.fromkeys(seen))


@pytest.mark.parametrize("url, settings, sentence", [
    ("mqtt://127.0.0.1", {"ca": "ca.pem"}, "are TLS settings, and --mqtt 'mqtt://127.0.0.1' is plain TCP"),
    ("mqtts://127.0.0.1", {"ca": "missing.pem"}, "--mqtt-ca 'missing.pem' does not exist"),
    ("mqtts://127.0.0.1", {"ca": "garbage.pem"}, "the MQTT CA file"),
    ("mqtts://127.0.0.1", {"key": "ca.pem"}, "--mqtt-key needs the certificate it belongs to"),
    ("mqtts://127.0.0.1", {"password": "x"}, "an MQTT password is given without a user"),
    ("mqtts://u@127.0.0.1", {"password_file": "missing"}, "--mqtt-password-file 'missing' cannot be read"),
    ("mqtts://u:{NO_SUCH_SECRET}@127.0.0.1", {}, "asks for the secret {NO_SUCH_SECRET}, which is neither"),
])
def test_broker_settings_mistakes_are_one_sentence(pki, tmp_path, monkeypatch, url, settings, sentence):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ca.pem").write_bytes(pki.ca.read_bytes())
    (tmp_path / "garbage.pem").write_text("not a certificate")
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    with pytest.raises(UserError, match=None) as raised:
        broker_from(url, **settings)
    assert sentence in str(raised.value) and "\n" not in str(raised.value)


def test_the_password_comes_from_the_environment_and_tls_has_its_own_port(monkeypatch):
    monkeypatch.setenv("GAMMA_EDGE_MQTT_PASSWORD", "from-env")
    target = broker_from("mqtts://box@broker.local")
    assert (target.host, target.port, target.tls, target.user, target.password) == \
        ("broker.local", 8883, True, "box", "from-env")
    assert "from-env" not in repr(target)
    monkeypatch.delenv("GAMMA_EDGE_MQTT_PASSWORD")
    assert broker_from("box:p%40ss@broker.local").password == "p@ss" and broker_from("broker.local").port == 1883
