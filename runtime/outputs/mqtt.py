"""Quality events and camera states to an MQTT broker (paho-mqtt; `pip install 'gamma-edge[fleet]'`).

Topics (PREFIX defaults to gamma-edge; docs/fleet.md, "MQTT"):

    PREFIX/<camera>/state   retained: the camera's current state, so a subscriber that joins late sees it
    PREFIX/<camera>/event   each event as it happens (QoS 1)
    PREFIX/status           retained: "online", and "offline" as the last will, so a box that goes away is seen
    PREFIX/<camera>/reset   subscribed: a message here makes the camera learn its normal afresh

A broker that cannot be reached never stops the run: paho reconnects in its own thread, the outage
is said once (why, in words: runtime/outputs/broker.py), and on every (re)connect the states are
published again, retained. Events raised meanwhile wait in a bounded queue (the oldest dropped, and
counted, past QUEUE_SIZE) and go out in order when the broker is back: one sender thread hands
paho one event at a time and waits for the broker's acknowledgement before the next, so an event
paho resends after a reconnect is never overtaken by a newer one.
"""
from __future__ import annotations

import json
import queue
import threading
from collections import deque
from typing import Callable, Protocol

from contract.errors import UserError
from runtime.outputs.base import OutageWarning
from runtime.outputs.broker import Broker, broker_from, diagnose

FIRST_CONNECT_WAIT_S = 2.0      # at start, so states and early events go out rather than being missed
UNREACHABLE = "it cannot be reached"
QOS = 1                         # at least once: a state or event is worth a duplicate, not a loss
QUEUE_SIZE = 1000               # events kept while the broker is away


def load_paho():
    try:
        import paho.mqtt.client as paho
    except ImportError:
        raise UserError("--mqtt needs the paho-mqtt package; pip install 'gamma-edge[fleet]'") from None
    return paho


class LinkListener(Protocol):
    """Another user of the fleet's broker link (Home Assistant discovery): told of each connect,
    handed the messages of the topics it subscribes to."""

    subscriptions: tuple[str, ...]

    def on_connected(self, link: "MqttEvents") -> None: ...

    def on_message(self, topic: str, payload: bytes, retained: bool) -> None: ...


class MqttEvents:
    """Publish states and events; `states()` returns the current state record of every camera."""

    def __init__(self, broker: Broker | str, states: Callable[[], list[dict]], prefix: str = "gamma-edge",
                 client_id: str | None = None, log: Callable[[str], None] = print, keepalive: int = 30,
                 on_reset: Callable[[str], None] | None = None, queue_size: int = QUEUE_SIZE):
        paho = load_paho()
        self.broker = broker_from(broker) if isinstance(broker, str) else broker
        self.prefix, self.states, self.log, self.keepalive = prefix.rstrip("/"), states, log, keepalive
        self.on_reset, self.queue_size = on_reset, queue_size
        self.address = self.broker.address
        self.listeners: list[LinkListener] = []
        self.connected = threading.Event()
        self.settled = threading.Event()            # the first connect succeeded or failed with a reason
        self.delivered = self.undelivered = self.dropped = 0
        self.waiting: deque[dict] = deque()         # events not yet handed to paho, oldest first
        self.wake = threading.Condition()
        self.acks: queue.Queue = queue.Queue()      # message ids the broker acknowledged
        self.closing = False
        self.outage = OutageWarning(
            log, away=f"warning: MQTT broker {self.address}: {{why}}; events are not delivered until it is back "
                      f"(the newest {queue_size} are kept for then; the run goes on scoring and logging, and "
                      f"reconnects by itself)",
            back=f"MQTT broker {self.address} reached again: events are delivered")
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id or "",
                                  protocol=paho.MQTTv311)
        self.context = self.broker.tls_context()
        if self.context is not None:
            self.client.tls_set_context(self.context)
            if self.broker.insecure:
                self.client.tls_insecure_set(True)
        if self.broker.user:
            self.client.username_pw_set(self.broker.user, self.broker.password)
        self.client.will_set(self.status_topic, "offline", qos=QOS, retain=True)
        self.client.reconnect_delay_set(min_delay=1, max_delay=5)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_connect_fail = self._on_connect_fail
        self.client.on_message = self._on_message
        self.client.on_publish = lambda client, userdata, mid, reason_code, properties: self.acks.put(mid)
        self.sender = threading.Thread(target=self._send_events, name="gamma-mqtt-events", daemon=True)

    @property
    def status_topic(self) -> str:
        return f"{self.prefix}/status"

    def topic(self, camera: str, kind: str) -> str:
        return f"{self.prefix}/{camera}/{kind}"

    def add_listener(self, listener: LinkListener) -> None:
        """Before start(): it hears of every connect from the first on."""
        self.listeners.append(listener)

    def publish(self, topic: str, payload: str | bytes, retain: bool = False):
        return self.client.publish(topic, payload, qos=QOS, retain=retain)

    def start(self) -> "MqttEvents":
        """Connect in paho's own thread (it retries forever); wait a moment for the first connection."""
        if self.broker.insecure:
            self.log(f"warning: MQTT broker {self.address}: --mqtt-insecure, so its certificate is not checked; "
                     f"anyone between this box and the broker can read and change what is sent")
        self.client.connect_async(self.broker.host, self.broker.port, keepalive=self.keepalive)
        self.client.loop_start()
        self.sender.start()
        if not self.settled.wait(FIRST_CONNECT_WAIT_S):
            self.outage.warn(UNREACHABLE)
        return self

    # -- paho's callbacks (its network thread) ----------------------------------------------
    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self.outage.warn(_refusal(reason_code))
            self.settled.set()
            return
        client.publish(self.status_topic, "online", qos=QOS, retain=True)
        for record in self.states():
            client.publish(self.topic(record["camera"], "state"), json.dumps(record), qos=QOS, retain=True)
        topics = [self.topic("+", "reset")] if self.on_reset is not None else []
        topics += [topic for listener in self.listeners for topic in listener.subscriptions]
        for topic in topics:
            client.subscribe(topic, qos=QOS)
        for listener in self.listeners:
            listener.on_connected(self)
        dropped, self.dropped = self.dropped, 0
        with self.wake:
            self.connected.set()
            self.wake.notify_all()
        self.settled.set()
        self.outage.clear()
        if dropped:
            self.log(f"warning: MQTT broker {self.address}: {dropped} older event(s) raised while it was away "
                     f"were dropped (the queue keeps the newest {self.queue_size}); they are in the JSON lines")

    def _on_message(self, client, userdata, message) -> None:
        """PREFIX/<camera>/reset (any payload): learn that camera's normal afresh (it was moved, or
        its lens replaced). A retained reset would reset again at every start: it is ignored."""
        parts = message.topic.split("/")
        if (self.on_reset is not None and message.topic.startswith(self.prefix + "/") and parts[-1] == "reset"
                and not message.retain):
            self.on_reset(parts[-2])
            return
        for listener in self.listeners:
            listener.on_message(message.topic, message.payload, bool(message.retain))

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self.connected.clear()
        if reason_code.is_failure:
            self._warn()

    def _on_connect_fail(self, client, userdata) -> None:
        self.connected.clear()
        self._warn()

    def _warn(self) -> None:
        """Once per outage, with the reason found by trying the connection ourselves."""
        if not self.outage.warned and not self.closing:
            self.outage.warn(diagnose(self.broker, self.context))
        self.settled.set()

    # -- the fleet's side ---------------------------------------------------------------------
    def publish_event(self, event: dict, image=None) -> None:
        """An event, queued for the sender; past QUEUE_SIZE waiting, the oldest is dropped."""
        with self.wake:
            if len(self.waiting) >= self.queue_size:
                self.waiting.popleft()
                self.dropped += 1
                self.undelivered += 1
            self.waiting.append(event)
            self.wake.notify_all()
        if not self.connected.is_set():
            self.outage.warn(UNREACHABLE)

    def publish_state(self, state: dict) -> None:
        """A camera's new state, retained. While the broker is away it waits: every state is
        published again on reconnect."""
        if self.connected.is_set():
            self.client.publish(self.topic(state["camera"], "state"), json.dumps(state), qos=QOS, retain=True)

    def _send_events(self) -> None:
        """One event at a time, in order: handed to paho while connected, then waited for until the
        broker acknowledges it (paho resends it after a reconnect by itself)."""
        while True:
            with self.wake:
                while not self.closing and not (self.waiting and self.connected.is_set()):
                    self.wake.wait()
                if not (self.waiting and self.connected.is_set()):
                    return
                event = self.waiting.popleft()
            info = self.client.publish(self.topic(event["camera"], "event"), json.dumps(event), qos=QOS)
            if not self._acknowledged(info.mid):
                return

    def _acknowledged(self, mid: int) -> bool:
        while True:
            try:
                if self.acks.get(timeout=0.2) == mid:
                    self.delivered += 1
                    return True
            except queue.Empty:
                if self.closing and not self.connected.is_set():
                    self.undelivered += 1
                    return False

    def close(self, timeout: float = 2.0) -> None:
        """Deliver what is queued (within `timeout`), say 'offline' ourselves (a clean disconnect
        sends no last will) and stop paho's thread."""
        with self.wake:
            self.closing = True
            self.wake.notify_all()
        if self.sender.is_alive():
            self.sender.join(timeout)
        with self.wake:
            self.undelivered += len(self.waiting)
            self.waiting.clear()
        if self.connected.is_set():
            info = self.client.publish(self.status_topic, "offline", qos=QOS, retain=True)
            try:
                info.wait_for_publish(timeout)
            except (RuntimeError, ValueError):
                pass                # the connection went while waiting: the last will says it instead
        self.connected.clear()
        self.client.disconnect()
        self.client.loop_stop()


def _refusal(reason_code) -> str:
    """The broker answered, and said no: a wrong user or password is the usual cause."""
    words = str(reason_code)
    if words.lower() in ("not authorized", "bad user name or password"):
        return f"the broker refused the user name or password ({words}); check --mqtt-user and the password"
    return f"the broker refused the connection ({words})"
