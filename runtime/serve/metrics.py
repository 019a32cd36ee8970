"""The server's Prometheus metrics, on its own registry, served at GET /metrics of the same server.

Requests are counted by route (a fixed set of names, never the raw path, so a client asking for
random URLs cannot grow the series) and by known model; queue depth is read from each model's
batcher when Prometheus scrapes. Names and PromQL: docs/serve.md, "Metrics".
"""
from __future__ import annotations

from typing import Callable

from runtime.outputs.prometheus import LATENCY_BUCKETS
from runtime.serve.libraries import require

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class QueueCollector:
    """Requests and crops waiting for each model's backend, read at scrape time."""

    def __init__(self, depths: Callable[[], dict[str, tuple[int, int]]]):
        self.depths = depths

    def collect(self):
        from prometheus_client.core import GaugeMetricFamily

        requests = GaugeMetricFamily("gamma_edge_serve_queue_requests", "Requests waiting for the backend.",
                                     labels=["model"])
        crops = GaugeMetricFamily("gamma_edge_serve_queue_crops", "Crops waiting for the backend.", labels=["model"])
        for model, (waiting, waiting_crops) in self.depths().items():
            requests.add_metric([model], waiting)
            crops.add_metric([model], waiting_crops)
        yield requests
        yield crops


class ServeMetrics:
    def __init__(self, depths: Callable[[], dict[str, tuple[int, int]]]):
        client = require("prometheus_client")
        self.client = client
        self.registry = client.CollectorRegistry()
        client.ProcessCollector(registry=self.registry)
        self.registry.register(QueueCollector(depths))
        self.requests = client.Counter("gamma_edge_serve_requests", "HTTP requests answered, by route and status.",
                                       ["route", "model", "code"], registry=self.registry)
        self.latency = client.Histogram("gamma_edge_serve_request_seconds", "Seconds from request to answer.",
                                        ["route", "model"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.in_flight = client.Gauge("gamma_edge_serve_requests_in_flight", "Requests being answered now.",
                                      registry=self.registry)
        self.images = client.Counter("gamma_edge_serve_images", "Encoded images decoded and scored, or refused.",
                                     ["model", "outcome"], registry=self.registry)
        self.batch_requests = client.Histogram("gamma_edge_serve_batch_requests", "Requests per backend call.",
                                               ["model"], buckets=BATCH_BUCKETS, registry=self.registry)
        self.batch_crops = client.Histogram("gamma_edge_serve_batch_crops", "Crops per backend call.",
                                            ["model"], buckets=BATCH_BUCKETS, registry=self.registry)
        self.inference = client.Histogram("gamma_edge_serve_inference_seconds", "Seconds one backend call takes.",
                                          ["model"], buckets=LATENCY_BUCKETS, registry=self.registry)

    def observe_batch(self, model: str, stats) -> None:
        self.batch_requests.labels(model).observe(stats.requests)
        self.batch_crops.labels(model).observe(stats.crops)
        self.inference.labels(model).observe(stats.seconds)

    def observe_request(self, route: str, model: str, code: int, seconds: float) -> None:
        self.requests.labels(route, model, str(code)).inc()
        self.latency.labels(route, model).observe(seconds)

    def exposition(self) -> tuple[bytes, str]:
        return self.client.generate_latest(self.registry), self.client.CONTENT_TYPE_LATEST
