"""Watch a fleet of cameras with one model: many live sources, one inference loop (docs/fleet.md).

Each camera has its own reader thread keeping only its newest frame (stream.LiveFrames, with
its reconnects, backoff and timeouts), so a dead or stalled source never holds up the others.
One loop gathers the frames that are ready across all cameras, crops them, and scores them in
one backend call per batch (images never split, at most `scorer.batch` crops), the way a
DeepStream muxer batches its sources: N cameras cost about one backend-bound stream of N frames,
not N sessions. While the backend scores one batch (in its own thread; ONNX Runtime and OpenVINO
release the GIL) the loop gathers and crops the next. Each camera's frames, scores and reader
events feed its CameraWatch (runtime/fleet/watch.py), whose quality events go to the JSON lines,
to stderr and, when asked, to MQTT and a webhook; Prometheus reads the counts at scrape time.
"""
from __future__ import annotations

import json
import sys
import threading
import time
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from contract.preprocess import Preprocess
from contract.errors import UserError
from runtime.fleet.watch import EVENTS, STATES, CameraWatch
from runtime.fleet.config import Camera
from contract.manifest import scene_index
from runtime.live.stream import (ENDINGS, END_REASONS, STOPPED, Frame, LiveFrames, RunOptions, Selector, Source, StopSignals,
                     Summary, is_blank, open_capture, parse_source)

WAKE_S = 0.1        # the loop looks at the readers' events at least this often


@dataclass
class FleetOptions:
    jsonl: object | None = None            # a text stream for the JSON lines
    open_timeout: float = 5.0
    read_timeout: float = 5.0
    retries: int | None = None             # per outage; None: forever
    backoff: tuple[float, float] = (0.5, 10.0)
    settle_frames: int = 5
    max_frames: int | None = None          # per camera: its reader ends after this many frames
    duration_s: float | None = None        # Python callers (tests, benchmarks): stop after this long
    snapshots: str | None = None           # folder for a JPEG of the frame at each event
    mqtt: str | None = None                # broker URL
    mqtt_prefix: str = "gamma-edge"
    mqtt_client_id: str | None = None
    webhook: str | None = None             # an http(s) URL each event is POSTed to
    metrics_port: int | None = None        # None: no endpoint; 0: any free port
    metrics_host: str = "0.0.0.0"

    def reader_options(self) -> RunOptions:
        return RunOptions(max_frames=self.max_frames, settle_frames=self.settle_frames, backoff=self.backoff,
                          open_timeout=self.open_timeout, read_timeout=self.read_timeout, retries=self.retries)


class FleetReader(LiveFrames):
    """A LiveFrames that also wakes the fleet's loop when a frame is ready."""

    def __init__(self, *args, bell: threading.Event, **kwargs):
        self.bell = bell                    # before LiveFrames starts its thread
        super().__init__(*args, **kwargs)

    def _keep(self, image: np.ndarray, now: float, settling: bool) -> bool:
        kept = super()._keep(image, now, settling)
        if kept and not settling:
            self.bell.set()
        return kept


class ClosedCapture:
    """Stands in for a source that did not open at the start: its reader treats the first read
    as an outage and reopens with backoff, so the camera joins when it comes up."""

    def isOpened(self):  # noqa: N802 - cv2's name
        return False

    def read(self):
        return False, None

    def get(self, prop):
        return 0.0

    def release(self):
        pass


@dataclass
class Feed:
    """One camera in the loop: its settings, reader, watch and counts."""

    camera: Camera
    source: Source
    preprocess: Preprocess
    scene_index: int
    watch: CameraWatch
    summary: Summary
    selector: Selector
    started: float
    reader: FleetReader | None = None
    last_frame_at: float | None = None
    replaced: int = 0                 # frames cropped, then replaced by a newer one before the backend took them
    blank_run: bool = False
    shared_state: str | None = None   # the state last published (MQTT's retained state topic)
    done: bool = False
    event_counts: Counter = field(default_factory=Counter)

    def counts(self) -> dict:
        reader = self.reader
        read, dropped, settling, reconnects = ((reader.read, reader.dropped, reader.settling, reader.reconnects)
                                               if reader else (0, 0, 0, 0))
        return {"read": read, "scored": self.summary.scored, "dropped": dropped + self.replaced,
                "skipped": self.summary.skipped, "not_scored": self.summary.blank + settling,
                "reconnects": reconnects}

    def seconds_since_frame(self, now: float) -> float:
        return now - (self.last_frame_at if self.last_frame_at is not None else self.started)


@dataclass
class Item:
    """A frame waiting for the backend, cropped when it arrived or (if it replaced an older one)
    when it is sent."""

    feed: Feed
    frame: Frame
    crops: np.ndarray | None


@dataclass
class FleetSummary:
    cameras: list[tuple[str, Summary]]
    engine: str = ""
    batches: int = 0
    batch_images: int = 0
    elapsed_s: float = 0.0
    ended: str = "stopped"
    detail: str = STOPPED

    @property
    def exit_status(self) -> int:
        return ENDINGS[self.ended].exit_status

    @property
    def scored(self) -> int:
        return sum(summary.scored for _, summary in self.cameras)

    def as_dict(self) -> dict:
        latencies = np.concatenate([np.asarray(s.latencies_ms, dtype=np.float64) for _, s in self.cameras] or [[]])
        return {"event": "fleet_summary", "cameras": len(self.cameras), "engine": self.engine,
                "scored": self.scored, "scored_per_s": round(self.scored / self.elapsed_s, 3) if self.elapsed_s else None,
                "batches": self.batches,
                "images_per_batch": round(self.batch_images / self.batches, 3) if self.batches else None,
                "latency_ms_p50": round(float(np.percentile(latencies, 50)), 3) if latencies.size else None,
                "latency_ms_p95": round(float(np.percentile(latencies, 95)), 3) if latencies.size else None,
                "elapsed_s": round(self.elapsed_s, 3), "ended": self.ended, "detail": self.detail,
                "exit_status": self.exit_status}

    def lines(self) -> list[str]:
        """stderr: one line per camera, then the fleet's."""
        d = self.as_dict()
        fleet = (f"fleet of {d['cameras']}: {d['scored']} frames scored in {d['batches']} backend calls "
                 f"({d['images_per_batch'] or 0:.2f} frames per call), {d['scored_per_s'] or 0:.2f} scored/s")
        return [f"{name}: {summary.text()}" for name, summary in self.cameras] + [fleet]

    def final_line(self) -> str:
        return f"Error: {self.detail}" if self.exit_status else f"{self.ended}: {self.detail}"


class FleetRunner:
    """Score every camera of a fleet with one scorer until stopped (or every camera has ended)."""

    def __init__(self, scorer, cameras: list[Camera], options: FleetOptions, open_source: Callable | None = None,
                 stop: threading.Event | None = None, log: Callable[[str], None] | None = None):
        self.scorer, self.cameras, self.options = scorer, cameras, options
        self.open_source = open_source or (
            lambda src: open_capture(src, options.open_timeout, options.read_timeout))
        self.stop = stop or threading.Event()
        self.abort = threading.Event()
        self.bell = threading.Event()
        self.log = log or (lambda line: print(line, file=sys.stderr, flush=True))
        self.sources = [self._live_source(camera) for camera in cameras]
        self.preprocesses = [self._preprocess(camera) for camera in cameras]
        self.scene_indexes = [self._scene_index(camera) for camera in cameras]
        if options.snapshots and not Path(options.snapshots).is_dir():
            raise UserError(f"--snapshots '{options.snapshots}' is not a folder; create it first")
        self.feeds: list[Feed] = []
        self.started: float | None = None
        self.mqtt = self.metrics = None
        self.webhook = self._webhook(options.webhook)     # a malformed address is named before anything starts
        self._write_lock = threading.Lock()

    # -- checks made before anything starts ---------------------------------------------------
    def _live_source(self, camera: Camera) -> Source:
        try:
            source = parse_source(camera.source)
        except UserError as exc:
            raise UserError(f"camera '{camera.name}': {exc}") from None
        if not source.live:
            raise UserError(f"camera '{camera.name}': '{camera.source}' is a video file; a fleet watches "
                                   f"cameras and streams, so score a file on its own with 'gamma-edge run FILE'")
        return source

    def _preprocess(self, camera: Camera) -> Preprocess:
        if camera.crops is None or camera.crops == self.scorer.preprocess.crops:
            return self.scorer.preprocess
        return Preprocess.from_manifest(self.scorer.manifest, camera.crops, self.scorer.preprocess.seed)

    def _scene_index(self, camera: Camera) -> int:
        scene = camera.scene or self.scorer.scene
        return scene_index(self.scorer.scenes, scene, f"camera '{camera.name}': ")

    def _webhook(self, url: str | None):
        if not url:
            return None
        from runtime.outputs.webhook import WebhookEvents

        return WebhookEvents(url, log=self.log)

    def signals(self) -> StopSignals:
        return StopSignals(self.stop, self.abort)

    # -- the run --------------------------------------------------------------------------------
    def run(self) -> FleetSummary:
        """Start the endpoint, the broker link and the readers; score until stopped; summarise."""
        started = self.started = time.monotonic()
        self.feeds = [self._feed(i, started) for i in range(len(self.cameras))]
        summary = FleetSummary([(feed.camera.name, feed.summary) for feed in self.feeds],
                               engine=self.scorer.backend.describe())
        self._start_outputs()
        inference = ThreadPoolExecutor(1, thread_name_prefix="gamma-fleet-infer")
        try:
            self._start_readers(started)
            self._loop(inference, summary, started)
        except KeyboardInterrupt:
            pass
        finally:
            self._close(inference, summary, started)
        return summary

    def _feed(self, i: int, started: float) -> Feed:
        camera = self.cameras[i]
        return Feed(camera, self.sources[i], self.preprocesses[i], self.scene_indexes[i],
                    CameraWatch(camera, started),
                    Summary(camera.source, engine=self.scorer.backend.describe(),
                            precision=self.scorer.backend.precision, ended="stopped", detail=STOPPED),
                    Selector(1, camera.fps), started)

    def _start_outputs(self) -> None:
        """The metrics endpoint first (a port in use is a mistake to name before any thread starts),
        then the broker link and the webhook (neither ever fails the run)."""
        options = self.options
        if options.metrics_port is not None:
            from runtime.outputs.prometheus import FleetMetrics

            self.metrics = FleetMetrics(lambda: self.feeds, STATES, EVENTS).serve(options.metrics_port,
                                                                                options.metrics_host)
            self.log(f"metrics on http://{options.metrics_host}:{self.metrics.port}/metrics")
        if options.mqtt:
            from runtime.outputs.mqtt import MqttEvents

            try:
                self.mqtt = MqttEvents(options.mqtt, lambda: [feed.watch.state_record() for feed in self.feeds],
                                       prefix=options.mqtt_prefix, client_id=options.mqtt_client_id,
                                       log=self.log).start()
            except UserError:
                if self.metrics is not None:
                    self.metrics.close()
                raise
        if self.webhook is not None:
            self.webhook.start()

    def _start_readers(self, started: float) -> None:
        """Open every source at once (a dead one costs its open timeout once, not once per camera),
        then start one reader each. A source that does not open is retried by its reader."""
        with ThreadPoolExecutor(len(self.feeds), thread_name_prefix="gamma-fleet-open") as pool:
            captures = list(pool.map(self._open, self.feeds))
        for feed, capture in zip(self.feeds, captures):
            if capture is None:
                self.log(f"{feed.camera.name}: '{feed.camera.source}' could not be opened; "
                         f"retrying in the background")
                capture = ClosedCapture()
            feed.reader = FleetReader(capture, feed.source, self.open_source, self.stop, started,
                                      self.options.reader_options(), bell=self.bell)

    def _open(self, feed: Feed):
        capture = self.open_source(feed.source)
        if capture is not None and capture.isOpened():
            return capture
        if capture is not None:
            capture.release()
        return None

    def _loop(self, inference: ThreadPoolExecutor, summary: FleetSummary, started: float) -> None:
        """Gather and crop what is ready while the backend scores the previous batch."""
        pending: dict[str, Item] = {}
        inflight: tuple[Future, list[Item]] | None = None
        deadline = started + self.options.duration_s if self.options.duration_s else None
        while not self.stop.is_set():
            self.bell.wait(WAKE_S)
            self.bell.clear()
            for feed in self.feeds:
                if not feed.done:
                    self._gather(feed, pending)
            if inflight is not None and inflight[0].done():
                self._finish(*inflight, summary)
                inflight = None
            if inflight is None and pending:
                inflight = self._submit(inference, pending)
            if inflight is None and not pending and all(feed.done for feed in self.feeds):
                self._end_on_its_own(summary)
                break
            if deadline is not None and time.monotonic() >= deadline:
                break
        if inflight is not None:            # the batch in hand is finished and counted
            self._finish(*inflight, summary)
        for item in pending.values():       # cropped but never scored: dropped, as a live frame not taken
            item.feed.replaced += 1

    def _gather(self, feed: Feed, pending: dict[str, Item]) -> None:
        """The reader's events and newest frame, in the order they happened (an event carries the
        count of frames read when it occurred)."""
        reader = feed.reader
        if reader.error is not None:
            raise reader.error
        alive = reader.thread.is_alive()
        frame = reader.take(timeout=0)
        events = reader.drain_events()
        limit = frame.index if frame is not None else float("inf")
        for event in [e for e in events if e["frame"] < limit]:
            self._on_reader_event(feed, event)
        if frame is not None:
            self._on_frame(feed, frame, pending)
        for event in [e for e in events if e["frame"] >= limit]:
            self._on_reader_event(feed, event)
        if not alive and frame is None and not events:
            feed.done = True

    def _on_frame(self, feed: Feed, frame: Frame, pending: dict[str, Item]) -> None:
        feed.last_frame_at = frame.captured
        if not feed.selector(frame.index, frame.t):
            feed.summary.skipped += 1
            return
        self._raise(feed, feed.watch.on_picture(frame.captured, frame.image), frame.image)
        if is_blank(frame.image):
            feed.summary.blank += 1
            if not feed.blank_run:
                self.emit({"event": "gap", "camera": feed.camera.name, "frame": frame.index,
                           "t": round(frame.t, 3), "reason": "blank frame (filler), not scored"})
            feed.blank_run = True
            return
        feed.blank_run = False
        if feed.camera.name in pending:     # the backend has not taken the older one: the newest wins,
            feed.replaced += 1              # cropped only when sent, so a slow backend wastes no crops
            pending[feed.camera.name] = Item(feed, frame, None)
        else:                               # cropped now, while the backend scores the batch before it
            pending[feed.camera.name] = Item(feed, frame, feed.preprocess(frame.image))

    def _submit(self, inference: ThreadPoolExecutor, pending: dict[str, Item]) -> tuple[Future, list[Item]]:
        """The oldest frames first, whole images only, up to the batch size in crops (an image with
        more crops than the batch goes alone)."""
        batch, crops = [], 0
        for item in sorted(pending.values(), key=lambda item: item.frame.captured):
            count = item.feed.preprocess.crops_per_image
            if batch and crops + count > self.scorer.batch:
                break
            batch.append(item)
            crops += count
        for item in batch:
            del pending[item.feed.camera.name]
        future = inference.submit(self._infer, batch)
        future.add_done_callback(lambda _: self.bell.set())
        return future, batch

    def _infer(self, batch: list[Item]) -> tuple[np.ndarray, float]:
        """In the inference thread: crop what was not cropped on arrival, then one backend call."""
        for item in batch:
            if item.crops is None:
                item.crops = item.feed.preprocess(item.frame.image)
        began = time.monotonic()
        scores = self.scorer.backend.run(np.concatenate([item.crops for item in batch]))
        return scores, time.monotonic() - began

    def _finish(self, future: Future, batch: list[Item], summary: FleetSummary) -> None:
        scores, seconds = future.result()
        summary.batches += 1
        summary.batch_images += len(batch)
        if self.metrics is not None:
            self.metrics.observe_batch(len(batch), len(scores), seconds)
        start = 0
        for item in batch:
            values = scores[start:start + len(item.crops)].mean(axis=0, dtype=np.float64)
            start += len(item.crops)
            self._on_score(item, float(values[item.feed.scene_index]))

    def _on_score(self, item: Item, score: float) -> None:
        feed, frame = item.feed, item.frame
        now = time.monotonic()
        latency_ms = (now - frame.captured) * 1000.0
        if self.metrics is not None:
            self.metrics.capture_to_score.observe(latency_ms / 1000.0)
        events = feed.watch.on_score(frame.captured, score)
        smoothing, summary = feed.watch.smoothing, feed.summary
        summary.scored += 1
        summary.low += smoothing.low
        summary.scores.append(score)
        summary.latencies_ms.append(latency_ms)
        self.emit({"camera": feed.camera.name, "frame": frame.index, "t": round(frame.t, 3),
                   "score": round(score, 6), "smoothed": round(smoothing.smoothed, 6), "state": feed.watch.state,
                   "latency_ms": round(latency_ms, 2)})
        self._raise(feed, events, frame.image)

    def _on_reader_event(self, feed: Feed, event: dict) -> None:
        name, now = feed.camera.name, time.monotonic()
        self.emit({"camera": name, **event})
        if event["event"] == "gap":
            self.log(f"{name}: gap in {feed.camera.source}: {event['reason']}; reconnecting")
            self._raise(feed, feed.watch.on_gap(now, event["reason"]), None)
        elif event["event"] == "reconnect":
            self.log(f"{name}: reconnected after {event['gap_s']} s without frames ({event['attempts']} attempt(s))")
            self._raise(feed, feed.watch.on_reconnect(now, event["gap_s"]), None)
        elif event["event"] == "end":
            feed.done = True
            feed.summary.ended = END_REASONS[event["reason"]]
            feed.summary.detail = (f"{event['frames']} frames read (--max-frames)" if event["reason"] == "max frames reached"
                                   else f"'{feed.camera.source}' delivered no frame for {event['since_s']:.1f} s and "
                                        f"{event['attempts']} reopen attempt(s) failed")

    def _raise(self, feed: Feed, events: list[dict], image: np.ndarray | None) -> None:
        """Quality events: a snapshot where asked, the JSON lines, stderr, MQTT, the webhook, the counts;
        then the camera's state, if it changed."""
        for event in events:
            feed.event_counts[event["event"]] += 1
            if self.options.snapshots and image is not None:
                event["snapshot"] = self._snapshot(feed, event, image)
            self.emit(event)
            self.log(f"{feed.camera.name}: {event['event'].replace('_', ' ')} (now {event['state']})")
            for sink in (self.mqtt, self.webhook):
                if sink is not None:
                    sink.publish_event(event)
        self._share_state(feed)

    def _share_state(self, feed: Feed) -> None:
        """The retained state follows every change, those without an event too (starting -> ok)."""
        if self.mqtt is None or feed.watch.state == feed.shared_state:
            return
        feed.shared_state = feed.watch.state
        self.mqtt.publish_state(feed.watch.state_record())

    def _snapshot(self, feed: Feed, event: dict, image: np.ndarray) -> str:
        stamp = event["time"].replace(":", "").replace("-", "")
        path = Path(self.options.snapshots) / f"{feed.camera.name}-{stamp}-{event['event']}.jpg"
        cv2.imwrite(str(path), image)
        return str(path)

    def emit(self, record: dict) -> None:
        if self.options.jsonl is not None:
            with self._write_lock:
                self.options.jsonl.write(json.dumps(record) + "\n")
                self.options.jsonl.flush()

    def _end_on_its_own(self, summary: FleetSummary) -> None:
        """Every camera has ended (--max-frames, or --retries ran out): the worst ending is the fleet's."""
        worst = max((feed.summary for feed in self.feeds), key=lambda s: ENDINGS[s.ended].exit_status)
        ended = [feed for feed in self.feeds if feed.summary.ended == worst.ended]
        summary.ended = worst.ended
        summary.detail = "; ".join(f"{feed.camera.name}: {feed.summary.detail}" for feed in ended)

    def _close(self, inference: ThreadPoolExecutor, summary: FleetSummary, started: float) -> None:
        self.stop.set()
        inference.shutdown(wait=True)
        for feed in self.feeds:
            if feed.reader is not None:
                feed.reader.close(self.abort)
        elapsed = time.monotonic() - started
        for feed in self.feeds:
            self._final_counts(feed, elapsed)
            self.emit({"camera": feed.camera.name, **feed.summary.as_dict()})
        summary.elapsed_s = elapsed
        self.emit(summary.as_dict())
        for output in (self.mqtt, self.webhook, self.metrics):
            if output is not None:
                output.close()

    @staticmethod
    def _final_counts(feed: Feed, elapsed: float) -> None:
        counts, summary = feed.counts(), feed.summary
        summary.elapsed_s = elapsed
        summary.frames_read = counts["read"]
        summary.dropped = counts["dropped"]
        summary.settling = feed.reader.settling if feed.reader else 0
        summary.reconnects = counts["reconnects"]
