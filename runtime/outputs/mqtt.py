"""Quality events and camera states to an MQTT broker (paho-mqtt; `pip install 'gamma-edge[fleet]'`).

Topics (PREFIX defaults to gamma-edge; docs/fleet.md, "MQTT"):

    PREFIX/<camera>/state   retained: the camera's current state, so a subscriber that joins late sees it
    PREFIX/<camera>/event   each event as it happens
    PREFIX/status           retained: "online", and "offline" as the last will, so a box that goes away is seen
    PREFIX/<camera>/reset   subscribed: a message here makes the camera learn its normal afresh

A broker that cannot be reached never stops the run: events are then not delivered (said once
per outage, and counted), paho reconnects in its own thread, and on every (re)connect the
states are published again, retained, so the broker holds the current ones.
"""
from __future__ import annotations

import json
import threading
from typing import Callable
from urllib.parse import urlsplit

from contract.errors import UserError
from runtime.outputs.base import OutageWarning

DEFAULT_PORT = 1883
FIRST_CONNECT_WAIT_S = 2.0      # at start, so states and early events go out rather than being missed
UNREACHABLE = "it cannot be reached"
QOS = 1                         # at least once: a state or event is worth a duplicate, not a loss


def parse_broker(url: str) -> tuple[str, int, str | None, str | None]:
    """'mqtt://user:pass@host:1883' or 'host:1883' or 'host' -> (host, port, user, password)."""
    text = url if "://" in url else f"mqtt://{url}"
    parts = urlsplit(text)
    if parts.scheme not in ("mqtt", "tcp") or not parts.hostname:
        raise UserError(f"--mqtt '{url}' is not a broker address; write it as mqtt://HOST:PORT (or HOST:PORT)")
    try:
        port = parts.port or DEFAULT_PORT
    except ValueError:
        raise UserError(f"--mqtt '{url}' has a port that is not a number from 1 to 65535") from None
    return parts.hostname, port, parts.username, parts.password


def load_paho():
    try:
        import paho.mqtt.client as paho
    except ImportError:
        raise UserError("--mqtt needs the paho-mqtt package; pip install 'gamma-edge[fleet]'") from None
    return paho


class MqttEvents:
    """Publish states and events; `states()` returns the current state record of every camera."""

    def __init__(self, url: str, states: Callable[[], list[dict]], prefix: str = "gamma-edge",
                 client_id: str | None = None, log: Callable[[str], None] = print, keepalive: int = 30,
                 on_reset: Callable[[str], None] | None = None):
        paho = load_paho()
        self.host, self.port, user, password = parse_broker(url)
        self.prefix, self.states, self.log, self.keepalive = prefix.rstrip("/"), states, log, keepalive
        self.on_reset = on_reset
        self.address = f"{self.host}:{self.port}"
        self.connected = threading.Event()
        self.delivered = self.undelivered = 0
        self.outage = OutageWarning(
            log, away=f"warning: MQTT broker {self.address}: {{why}}; events are not delivered until it is back "
                      f"(the run goes on scoring and logging, and reconnects by itself)",
            back=f"MQTT broker {self.address} reached again: events are delivered")
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id or "",
                                  protocol=paho.MQTTv311)
        if user:
            self.client.username_pw_set(user, password)
        self.client.will_set(self.status_topic, "offline", qos=QOS, retain=True)
        self.client.reconnect_delay_set(min_delay=1, max_delay=5)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_connect_fail = self._on_connect_fail
        self.client.on_message = self._on_message

    @property
    def status_topic(self) -> str:
        return f"{self.prefix}/status"

    def topic(self, camera: str, kind: str) -> str:
        return f"{self.prefix}/{camera}/{kind}"

    def start(self) -> "MqttEvents":
        """Connect in paho's own thread (it retries forever); wait a moment for the first connection."""
        self.client.connect_async(self.host, self.port, keepalive=self.keepalive)
        self.client.loop_start()
        if not self.connected.wait(FIRST_CONNECT_WAIT_S):
            self.outage.warn(UNREACHABLE)
        return self

    # -- paho's callbacks (its network thread) ----------------------------------------------
    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self.outage.warn(f"the broker refused the connection ({reason_code})")
            return
        self.connected.set()
        client.publish(self.status_topic, "online", qos=QOS, retain=True)
        for record in self.states():
            client.publish(self.topic(record["camera"], "state"), json.dumps(record), qos=QOS, retain=True)
        if self.on_reset is not None:
            client.subscribe(self.topic("+", "reset"), qos=QOS)
        self.outage.clear()

    def _on_message(self, client, userdata, message) -> None:
        """PREFIX/<camera>/reset (any payload): learn that camera's normal afresh (it was moved, or
        its lens replaced). A retained reset would reset again at every start: it is ignored."""
        parts = message.topic.split("/")
        if self.on_reset is not None and parts[-1] == "reset" and not message.retain:
            self.on_reset(parts[-2])

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self.connected.clear()
        if reason_code.is_failure:
            self.outage.warn(UNREACHABLE)

    def _on_connect_fail(self, client, userdata) -> None:
        self.connected.clear()
        self.outage.warn(UNREACHABLE)

    # -- the fleet's side ---------------------------------------------------------------------
    def publish_event(self, event: dict, image=None) -> None:
        """An event. While the broker is away it is dropped (it stays in the JSON lines)."""
        if self._deliverable():
            self.client.publish(self.topic(event["camera"], "event"), json.dumps(event), qos=QOS)
            self.delivered += 1

    def publish_state(self, state: dict) -> None:
        """A camera's new state, retained. While the broker is away it waits: every state is
        published again on reconnect."""
        if self._deliverable():
            self.client.publish(self.topic(state["camera"], "state"), json.dumps(state), qos=QOS, retain=True)

    def _deliverable(self) -> bool:
        if self.connected.is_set():
            return True
        self.undelivered += 1
        self.outage.warn(UNREACHABLE)
        return False

    def close(self, timeout: float = 2.0) -> None:
        """Say 'offline' ourselves (a clean disconnect sends no last will) and stop paho's thread."""
        if self.connected.is_set():
            info = self.client.publish(self.status_topic, "offline", qos=QOS, retain=True)
            try:
                info.wait_for_publish(timeout)
            except (RuntimeError, ValueError):
                pass                # the connection went while waiting: the last will says it instead
        self.client.disconnect()
        self.client.loop_stop()
