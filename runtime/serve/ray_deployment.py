"""The same models and the same HTTP app as `gamma-edge serve`, as a Ray Serve deployment, for when one
box is not enough: Ray runs N replicas (one Scorer per model in each) behind its HTTP proxy, and
@serve.batch gathers the crops of concurrent requests into one backend call per model, as the local
server's DynamicBatcher does.

    from ray import serve
    from runtime.serve.ray_deployment import build_deployment
    serve.run(build_deployment({"natural": "exports/natural"}, num_replicas=4), route_prefix="/")

or from the shell: `serve run runtime.serve.ray_deployment:app_builder models=natural=exports/natural`.
Needs `pip install 'gamma-edge[serve,ray]'` and `ray[serve]` (docs/serve.md, "Ray Serve").
"""
from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from runtime.inference.scorer import Scorer, yield_to_inference
from runtime.serve.app import AppLimits, ServerState, build_app
from runtime.serve.models import ServedModel


class GammaReplica:
    """One Ray Serve replica: the models, the app, and the batch method every request's crops go through."""

    def __init__(self, models: dict[str, str], scorer_options: dict, limits: dict, batching: dict):
        self.scorers = {name: Scorer(path, **scorer_options) for name, path in models.items()}
        decoder = ThreadPoolExecutor(limits.pop("decode_workers", 2), thread_name_prefix="gamma-serve-decode",
                                     initializer=yield_to_inference)
        self.state = ServerState({name: ServedModel(name, scorer, self._engine(name), decoder)
                                  for name, scorer in self.scorers.items()}, ready=True)
        self.app = build_app(self.state, AppLimits(**limits))
        self.score_batch.set_max_batch_size(batching["max_batch_size"])
        self.score_batch.set_batch_wait_timeout_s(batching["batch_wait_timeout_s"])

    def _engine(self, name: str):
        async def engine(crops: np.ndarray) -> np.ndarray:
            return await self.score_batch((name, crops))
        return engine

    async def score_batch(self, items: list[tuple[str, np.ndarray]]) -> list[np.ndarray]:
        """Decorated with serve.batch in build_deployment: the crops of concurrent requests, one backend
        call per model (in a thread, so the replica's event loop keeps reading requests)."""
        results: list = [None] * len(items)
        for name in dict.fromkeys(name for name, _ in items):
            chosen = [i for i, (model, _) in enumerate(items) if model == name]
            crops = np.concatenate([items[i][1] for i in chosen])
            scores = await asyncio.to_thread(self.scorers[name].backend.run, crops)
            start = 0
            for i in chosen:
                count = len(items[i][1])
                results[i] = scores[start:start + count]
                start += count
        return results

    async def __call__(self, request):
        """Ray Serve hands each HTTP request over as a Starlette Request: run it through the app and
        give back what the app answered."""
        from starlette.responses import Response

        answer = {"status": 500, "headers": [], "body": []}

        async def send(message):
            if message["type"] == "http.response.start":
                answer["status"], answer["headers"] = message["status"], message.get("headers", [])
            elif message["type"] == "http.response.body":
                answer["body"].append(message.get("body", b""))

        await self.app(request.scope, request.receive, send)
        headers = {key.decode("latin-1"): value.decode("latin-1") for key, value in answer["headers"]
                   if key.lower() not in (b"content-length", b"connection")}
        return Response(b"".join(answer["body"]), answer["status"], headers)


def build_deployment(models: dict[str, str | Path], *, num_replicas: int = 1, num_cpus: float = 1,
                     max_batch_size: int = 8, batch_wait_timeout_s: float = 0.002, threads: int | None = None,
                     max_body_mb: float = 32.0, token: str | None = None, **scorer_options):
    """A Ray Serve application serving `models` (name -> exported folder); `scorer_options` go to
    every Scorer (backend, device, crops, batch, ...). `max_batch_size` counts requests (each an image's
    crops, or a chunk of a crop tensor) per backend call."""
    from ray import serve

    replica = type("GammaEdge", (GammaReplica,), {})
    replica.score_batch = serve.batch(max_batch_size=max_batch_size, batch_wait_timeout_s=batch_wait_timeout_s)(
        GammaReplica.score_batch)
    # a replica must take at least a batch's worth of requests at once, or batches never fill
    deployment = serve.deployment(replica, name="gamma-edge", num_replicas=num_replicas,
                                  max_ongoing_requests=max(16, 4 * max_batch_size),
                                  ray_actor_options={"num_cpus": num_cpus})
    limits = {"max_body": int(max_body_mb * 2 ** 20), "token": token}
    options = {"threads": threads or max(1, int(num_cpus)), **scorer_options}
    batching = {"max_batch_size": max_batch_size, "batch_wait_timeout_s": batch_wait_timeout_s}
    return deployment.bind({name: str(Path(path).resolve()) for name, path in models.items()}, options, limits,
                           batching)


def app_builder(args: dict):
    """`serve run runtime.serve.ray_deployment:app_builder models=natural=exports/natural,aigc=exports/aigc
    num_replicas=2`: the same application from Ray's command line (every value arrives as a string)."""
    from runtime.serve.models import model_name

    models = {}
    for item in str(args.get("models", "")).split(","):
        name, _, path = item.rpartition("=")
        if path:
            models[model_name(Path(path), name or None)] = path
    numbers = {key: float(args[key]) for key in ("num_cpus", "batch_wait_timeout_s", "max_body_mb") if key in args}
    counts = {key: int(args[key]) for key in ("num_replicas", "max_batch_size") if key in args}
    return build_deployment(models, **numbers, **counts)
