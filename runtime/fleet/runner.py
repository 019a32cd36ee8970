"""Watch a fleet of cameras with one model: many live sources, one inference loop (docs/fleet.md).

Each camera has its own reader thread keeping only its newest frame (runtime/live/readers.py,
with its reconnects, backoff and timeouts), so a dead or stalled source never holds up the
others. A frame goes one way: reader -> feed -> batcher -> feed -> outputs. Each camera's feed
turns what its reader delivered into records, quality events and states; the batcher scores the
frames of all cameras in one backend call per batch, so N cameras cost about one backend-bound
stream of N frames, not N sessions; the outputs (JSON lines, stderr, MQTT, webhook, snapshots,
Prometheus, the live page) take what the feeds publish.
"""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

from contract.errors import UserError
from contract.manifest import manifest_id
from runtime.fleet.batcher import Batch, Batcher
from runtime.fleet.config import Camera
from runtime.fleet.feed import Feed, Notice, camera_preprocess, camera_scene_index, live_source
from runtime.fleet.summary import FleetSummary
from runtime.live.readers import LiveFrames, ReaderOptions
from runtime.live.session import LiveSession
from runtime.live.source import ClosedCapture, release
from runtime.outputs.base import Outputs
from runtime.outputs.log import EventLog
from runtime.watch.camera import EVENTS, STATES
from runtime.watch.state_file import StateFile

WAKE_S = 0.1        # the loop looks at the readers' signals at least this often
STATE_EVERY_S = 10.0    # every camera's state (with its latest score) is published again this often


def broker_outputs(options, cameras: list[str], states: Callable[[], list[dict]], log: Callable[[str], None],
                   on_reset: Callable[[str], None]):
    """The broker link, started, and Home Assistant discovery on it when asked for (None, None
    without a broker). Discovery listens to the link from its first connect."""
    if not options.mqtt:
        return None, None
    from runtime.outputs.mqtt import MqttEvents

    mqtt = MqttEvents(options.mqtt, states, prefix=options.mqtt_prefix, client_id=options.mqtt_client_id, log=log,
                      on_reset=on_reset)
    discovery = None
    if options.ha_discovery:
        from runtime.outputs.homeassistant import HomeAssistantDiscovery

        discovery = HomeAssistantDiscovery(mqtt, cameras, STATES, options.ha_prefix,
                                           expire_after=round(6 * STATE_EVERY_S), log=log)
    return mqtt.start(), discovery


@dataclass
class FleetOptions(ReaderOptions):
    duration_s: float | None = None        # Python callers (tests, benchmarks): stop after this long
    snapshots: str | None = None           # folder for a JPEG of the frame at each event
    mqtt: object | None = None             # the broker: a URL, or runtime/outputs/broker.py's Broker
    mqtt_prefix: str = "gamma-edge"
    mqtt_client_id: str | None = None
    ha_discovery: bool = False             # Home Assistant MQTT discovery of every camera
    ha_prefix: str = "homeassistant"       # Home Assistant's discovery prefix
    webhook: str | None = None             # an http(s) URL each event is POSTed to
    metrics_port: int | None = None        # None: no endpoint; 0: any free port
    metrics_host: str = "0.0.0.0"
    baseline_file: str | None = None       # the cameras' conditions and normals, kept across restarts
    save_every_s: float = 30.0             # ... saved this often (and at the end)
    web: str | None = None                 # HOST:PORT of the live page (runtime/outputs/web.py)
    web_token_file: str | None = None      # the page's token (else GAMMA_EDGE_WEB_TOKEN); needed off 127.0.0.1



def snapshots_output(folder: str | None):
    if not folder:
        return None
    from runtime.outputs.snapshots import Snapshots

    return Snapshots(folder)


def webhook_output(url: str | None, log: Callable[[str], None]):
    if not url:
        return None
    from runtime.outputs.webhook import WebhookEvents

    return WebhookEvents(url, log=log)


def web_output(options: FleetOptions, feeds: Callable[[], list], scorer, log: Callable[[str], None]):
    """The live page, checked now (address, token); it starts serving with the other outputs."""
    if not options.web:
        return None
    from runtime.outputs.web import WebPage, host_facts

    return WebPage(options.web, feeds, host_facts(scorer), token_file=options.web_token_file, log=log)


class FleetRunner(LiveSession):
    """Score every camera of a fleet with one scorer until stopped (or every camera has ended)."""

    def __init__(self, scorer, cameras: list[Camera], options: FleetOptions, open_source: Callable | None = None,
                 stop=None, log: Callable[[str], None] | None = None):
        super().__init__(scorer, options, open_source, stop, log)
        self.cameras = cameras
        # checks made before anything starts: every mistake is named before a thread or socket opens
        self.sources = [live_source(camera) for camera in cameras]
        self.preprocesses = [camera_preprocess(scorer, camera) for camera in cameras]
        self.scene_indexes = [camera_scene_index(scorer, camera) for camera in cameras]
        self.snapshots = snapshots_output(options.snapshots)
        self.webhook = webhook_output(options.webhook, self.log)     # a malformed address is named now
        self.web = web_output(options, lambda: self.feeds, scorer, self.log)    # address and token checked now
        if options.ha_discovery and not options.mqtt:
            raise UserError("--ha-discovery publishes over MQTT; give the broker with --mqtt (or mqtt.url in --config)")
        self.feeds: list[Feed] = []
        self.started: float | None = None
        self.mqtt = self.metrics = None
        self.outputs = Outputs([])
        self.bell = threading.Event()         # rung by a reader's new frame and by a finished batch
        self.resets: set[str] = set()         # cameras to learn afresh, asked for over MQTT
        self.state_file = (StateFile(options.baseline_file, manifest_id(scorer.manifest.raw), self.log)
                           if options.baseline_file else None)
        self.batcher = Batcher(scorer, on_done=self.bell.set)

    # -- the run --------------------------------------------------------------------------------
    def run(self) -> FleetSummary:
        """Start the endpoint, the broker link and the readers; score until stopped; summarise."""
        started = self.started = time.monotonic()
        self.feeds = [Feed(camera, self.sources[i], self.preprocesses[i], self.scene_indexes[i],
                           self.new_summary(self.sources[i].text), started) for i, camera in enumerate(self.cameras)]
        summary = FleetSummary([(feed.name, feed.summary) for feed in self.feeds],
                               engine=self.scorer.backend.describe())
        self._restore()
        self._start_outputs()
        try:
            self._start_readers(started)
            self._loop(summary, started)
        except KeyboardInterrupt:
            pass
        finally:
            self._close(summary, started)
        return summary

    def _start_outputs(self) -> None:
        """The metrics endpoint first (a port in use is a mistake to name before any thread starts),
        then the broker link and the webhook (neither ever fails the run)."""
        options = self.options
        if options.metrics_port is not None:
            from runtime.outputs.prometheus import FleetMetrics

            self.metrics = FleetMetrics(lambda: self.feeds, STATES, EVENTS).serve(options.metrics_port,
                                                                                options.metrics_host)
            self.log(f"metrics on http://{options.metrics_host}:{self.metrics.port}/metrics")
        try:
            self.mqtt, discovery = broker_outputs(options, [camera.name for camera in self.cameras],
                                                  lambda: [feed.watch.state_record() for feed in self.feeds],
                                                  self.log, self._ask_reset)
        except UserError:
            if self.metrics is not None:
                self.metrics.close()
            raise
        if self.webhook is not None:
            self.webhook.start()
        if self.web is not None:
            try:
                self.web.start(self.started)      # a port in use is one sentence, after the others close
            except UserError:
                Outputs([self.mqtt, self.webhook, self.metrics]).close()
                raise
        # snapshots first: they name their file in the event the others send on
        self.outputs = Outputs([self.snapshots, self.jsonl, EventLog(self.log), self.mqtt, discovery, self.webhook,
                                self.metrics, self.web])

    def _start_readers(self, started: float) -> None:
        """Open every source at once (a dead one costs its open timeout once, not once per camera),
        then start one reader each. A source that does not open is retried by its reader."""
        with ThreadPoolExecutor(len(self.feeds), thread_name_prefix="gamma-fleet-open") as pool:
            captures = list(pool.map(self._open, self.feeds))
        for feed, capture in zip(self.feeds, captures):
            if capture is None:
                self.log(f"{feed.name}: '{feed.source.text}' could not be opened; retrying in the background")
                capture = ClosedCapture()
            feed.reader = LiveFrames(capture, feed.source, self.open_source, self.stop, started, self.options,
                                     on_newest=self.bell.set)

    # -- kept across restarts ---------------------------------------------------------------------
    def _restore(self) -> None:
        """Each camera's conditions and normal from the baseline file: a camera still covered is
        neither published as ok nor raised again."""
        if self.state_file is None:
            return
        saved = self.state_file.load()
        for feed in self.feeds:
            if feed.name in saved:
                feed.restore(saved[feed.name])

    def _ask_reset(self, name: str) -> None:
        """From MQTT's thread: the loop resets the camera's normal at its next save."""
        self.resets.add(name)
        self.bell.set()

    def _save(self) -> None:
        names = {feed.name for feed in self.feeds}
        asked, self.resets = self.resets, set()
        if self.state_file is not None:
            asked |= self.state_file.resets()
        for feed in self.feeds:
            if feed.name in asked:
                feed.watch.reset_baseline()
                self.log(f"{feed.name}: its normal is learned afresh (reset asked for)")
        for name in asked - names:
            self.log(f"warning: a reset was asked for camera '{name}', which this run does not watch")
        if self.state_file is not None:
            self.state_file.save({feed.name: feed.watch.as_dict() for feed in self.feeds})

    def _open(self, feed: Feed):
        capture = self.open_source(feed.source)
        if capture is not None and capture.isOpened():
            return capture
        if capture is not None:
            release(capture)
        return None

    def _loop(self, summary: FleetSummary, started: float) -> None:
        """Gather and crop what is ready while the backend scores the previous batch."""
        deadline = started + self.options.duration_s if self.options.duration_s else None
        saved = shared = started
        while not self.stop.is_set():
            self.bell.wait(WAKE_S)
            self.bell.clear()
            for feed in self.feeds:
                if not feed.done:
                    self._gather(feed)
            self._publish_batch(self.batcher.step(), summary)
            if self.batcher.idle and all(feed.done for feed in self.feeds):
                summary.end_with_worst()
                break
            if deadline is not None and time.monotonic() >= deadline:
                break
            if self.resets or time.monotonic() - saved >= self.options.save_every_s:
                self._save()
                saved = time.monotonic()
            if time.monotonic() - shared >= STATE_EVERY_S:
                self._share_states()
                shared = time.monotonic()
        self._publish_batch(self.batcher.finish(), summary)

    def _share_states(self) -> None:
        """Every camera's state again, so its score stays fresh for subscribers (and Home Assistant's
        expire_after) between events; cameras not yet started have nothing to say."""
        for feed in self.feeds:
            if feed.shared_state is not None:
                self.outputs.publish_state(feed.watch.state_record())

    def _gather(self, feed: Feed) -> None:
        notices, frame = feed.gather()
        self._publish(notices)
        if frame is not None:
            self.batcher.offer(feed, frame)

    def _publish_batch(self, batch: Batch | None, summary: FleetSummary) -> None:
        if batch is None:
            return
        summary.add_batch(len(batch.scored))
        if self.metrics is not None:
            self.metrics.observe_batch(len(batch.scored), batch.crops, batch.seconds)
        for waiting, scores in batch.scored:
            if self.metrics is not None:
                self.metrics.capture_to_score.observe(time.monotonic() - waiting.frame.captured)
            self._publish(waiting.feed.on_score(waiting.frame, scores))

    def _publish(self, notices: list[Notice]) -> None:
        for notice in notices:
            if notice.kind == "record":
                self.emit(notice.payload)
            elif notice.kind == "event":
                self.outputs.publish_event(notice.payload, notice.image)
            else:
                self.outputs.publish_state(notice.payload)
            if notice.line:
                self.log(notice.line)

    def _close(self, summary: FleetSummary, started: float) -> None:
        self.stop.set()
        self.batcher.pool.shutdown(wait=True)
        for feed in self.feeds:
            if feed.reader is not None:
                feed.reader.close(self.abort)
        elapsed = time.monotonic() - started
        for feed in self.feeds:
            feed.close(elapsed)
            self.emit({"camera": feed.name, **feed.summary.as_dict()})
        summary.elapsed_s = elapsed
        self.emit(summary.as_dict())
        self._save()
        Outputs([self.mqtt, self.webhook, self.metrics, self.web]).close()
