"""The fleet's Prometheus endpoint (prometheus-client; `pip install 'gamma-edge[fleet]'`).

Per-camera figures are read from the fleet when Prometheus scrapes (a collector, not a second
set of counters kept in step), so they always equal the run's own counts. Inference latency and
batch size are histograms observed by the inference loop; process CPU and memory come from
prometheus-client's process collector. Names and PromQL: docs/fleet.md, "Metrics".
"""
from __future__ import annotations

import errno
import time
from collections import Counter
from typing import Callable

from contract.errors import UserError
from runtime.outputs.base import LOST_STATE

# counter name (without _total) -> (the feed's count it reads, help text)
CAMERA_COUNTERS = {
    "gamma_edge_frames_read": ("read", "Frames read from the camera's source."),
    "gamma_edge_frames_scored": ("scored", "Frames scored."),
    "gamma_edge_frames_dropped": ("dropped", "Frames replaced by a newer one before they could be scored."),
    "gamma_edge_frames_skipped": ("skipped", "Frames not scored because of the camera's fps limit."),
    "gamma_edge_frames_not_scored": ("not_scored", "Blank filler frames and frames read while a (re)connect settles."),
    "gamma_edge_reconnects": ("reconnects", "Times the source came back after it stopped delivering frames."),
}
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)


def load_prometheus():
    try:
        import prometheus_client
    except ImportError:
        raise UserError("--metrics-port needs the prometheus-client package; "
                               "pip install 'gamma-edge[fleet]'") from None
    return prometheus_client


class FleetCollector:
    """Reads every camera's figures at scrape time from `feeds()` (runtime/fleet/feed.py's Feed)
    and the events counted so far (`event_counts`: (camera, event) -> count)."""

    def __init__(self, feeds: Callable[[], list], states: tuple[str, ...], events: tuple[str, ...],
                 event_counts: Counter):
        self.feeds, self.states, self.events, self.event_counts = feeds, states, events, event_counts

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        feeds, now = self.feeds(), time.monotonic()
        score = GaugeMetricFamily("gamma_edge_score", "Latest score of the camera.", labels=["camera"])
        smoothed = GaugeMetricFamily("gamma_edge_score_smoothed", "Smoothed score (mean of the last N).",
                                     labels=["camera"])
        state = GaugeMetricFamily("gamma_edge_camera_state", "1 for the camera's current state, 0 for the others.",
                                  labels=["camera", "state"])
        since = GaugeMetricFamily("gamma_edge_seconds_since_last_frame",
                                  "Seconds since the camera's source delivered a frame.", labels=["camera"])
        events = CounterMetricFamily("gamma_edge_events", "Quality events raised.", labels=["camera", "event"])
        counters = {name: CounterMetricFamily(name, text, labels=["camera"])
                    for name, (_, text) in CAMERA_COUNTERS.items()}
        signal = GaugeMetricFamily("gamma_edge_signal", "An image signal of the latest frames (the median of the "
                                   "smoothing window), or the score, against the camera's own normal.",
                                   labels=["camera", "signal", "of"])
        for feed in feeds:
            name, watch = feed.camera.name, feed.watch
            # a lost camera has no score nor signals: an absent sample goes stale in Prometheus and leaves
            # a gap in a panel, where its last value would draw a healthy line through the outage
            if watch.state != LOST_STATE:
                add_signals(signal, feed)
            if watch.smoothing.score is not None and watch.state != LOST_STATE:
                score.add_metric([name], watch.smoothing.score)
                smoothed.add_metric([name], watch.smoothing.smoothed)
            current = watch.state
            for value in self.states:
                state.add_metric([name, value], 1.0 if value == current else 0.0)
            since.add_metric([name], feed.seconds_since_frame(now))
            counts = feed.counts()
            for metric, (key, _) in CAMERA_COUNTERS.items():
                counters[metric].add_metric([name], counts[key])
            for event in self.events:
                events.add_metric([name, event], self.event_counts.get((name, event), 0))
        yield from (score, smoothed, state, since, events, signal, *counters.values())


def add_signals(gauge, feed) -> None:
    """The watch's latest verdict: each signal's value and the camera's normal of it (docs/fleet.md)."""
    verdict = feed.watch.verdict
    for signal, change in ((verdict.changes or {}).items() if verdict is not None else ()):
        gauge.add_metric([feed.camera.name, signal, "value"], change["value"])
        gauge.add_metric([feed.camera.name, signal, "normal"], change["normal"])


class FleetMetrics:
    """Its own registry (nothing global), served over HTTP on `port`; an output of the fleet that
    counts the quality events it is handed."""

    def __init__(self, feeds: Callable[[], list], states: tuple[str, ...], events: tuple[str, ...]):
        client = load_prometheus()
        self.event_counts: Counter = Counter()
        self.registry = client.CollectorRegistry()
        self.registry.register(FleetCollector(feeds, states, events, self.event_counts))
        client.ProcessCollector(registry=self.registry)
        self.latency = client.Histogram("gamma_edge_inference_seconds", "Seconds one backend call takes.",
                                        buckets=LATENCY_BUCKETS, registry=self.registry)
        self.batch_images = client.Histogram("gamma_edge_batch_images", "Images (frames) per backend call.",
                                             buckets=BATCH_BUCKETS, registry=self.registry)
        self.batch_crops = client.Histogram("gamma_edge_batch_crops", "Crops per backend call.",
                                            buckets=BATCH_BUCKETS, registry=self.registry)
        self.capture_to_score = client.Histogram("gamma_edge_capture_to_score_seconds",
                                                 "Seconds from reading a frame to its score.",
                                                 buckets=LATENCY_BUCKETS, registry=self.registry)
        self.server = None

    def publish_event(self, event: dict, image=None) -> None:
        self.event_counts[event["camera"], event["event"]] += 1

    def publish_state(self, state: dict) -> None:
        """The state gauge is read from the camera's watch at scrape time."""

    def observe_batch(self, images: int, crops: int, seconds: float) -> None:
        self.latency.observe(seconds)
        self.batch_images.observe(images)
        self.batch_crops.observe(crops)

    def serve(self, port: int, host: str = "0.0.0.0") -> "FleetMetrics":
        client = load_prometheus()
        try:
            self.server, _ = client.start_http_server(port, addr=host, registry=self.registry)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise UserError(f"--metrics-port {port} is already in use on {host}; "
                                       f"choose another port or stop the program holding it") from None
            raise UserError(f"--metrics-port {port} cannot be served on {host} ({exc.strerror}); "
                                   f"check --metrics-host and the port") from None
        return self

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    def close(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
