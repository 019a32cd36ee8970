"""The HTTP routes (Starlette, an ASGI app): the Open Inference Protocol's REST subset for every
served model, a plain POST /score for images, and /metrics. The same app runs under uvicorn
(`gamma-edge serve`) and inside a Ray Serve deployment (runtime/serve/ray_deployment.py).

Every refusal is a status code and a one-line JSON body {"error": "..."}; a request the server
cannot answer never stops it from answering the next.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

from contract.errors import UserError
from runtime.serve.guard import BodyGuard
from runtime.serve.libraries import require
from runtime.serve.models import VERSION, ServedModel
from runtime.serve.protocol import HEADER_LENGTH, RequestRefused, decompress, infer_response, parse_infer_request

IMAGE_TYPES = ("image/", "application/octet-stream")
MAX_FILES = 256


@dataclass
class AppLimits:
    max_body: int = 32 * 2 ** 20        # bytes of one request body
    body_timeout: float = 30.0          # seconds between two chunks of a body
    token: str | None = None


@dataclass
class ServerState:
    """What the routes read: the models by name, whether the server is ready, and its metrics."""

    models: dict[str, ServedModel]
    ready: bool = False
    metrics: object | None = None
    on_startup: list[Callable] = field(default_factory=list)
    on_shutdown: list[Callable] = field(default_factory=list)


def build_app(state: ServerState, limits: AppLimits):
    """The ASGI app: routes, JSON errors, and the guard (token, body limit and deadline) around them."""
    require("starlette")
    from contextlib import asynccontextmanager

    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.routing import Route

    @asynccontextmanager
    async def lifespan(app):
        for start in state.on_startup:
            await start()
        state.ready = True
        yield
        state.ready = False
        for stop in state.on_shutdown:
            await stop()

    routes = Routes(state, limits)
    table = [Route("/v2/health/live", routes.live), Route("/v2/health/ready", routes.ready),
             Route("/v2", routes.server_metadata), Route("/score", routes.score, methods=["POST"]),
             Route("/metrics", routes.metrics)]
    for prefix in ("/v2/models/{model}", "/v2/models/{model}/versions/{version}"):
        table += [Route(prefix, routes.model_metadata), Route(prefix + "/ready", routes.model_ready),
                  Route(prefix + "/infer", routes.infer, methods=["POST"])]

    async def http_error(request, exc: HTTPException):
        return json_response({"error": str(exc.detail)}, exc.status_code)

    async def refused(request, exc: RequestRefused):
        # a refused body may still be arriving: close the connection rather than read it to its end
        close = {"connection": "close"} if exc.status in (408, 413) else None
        return json_response({"error": str(exc)}, exc.status, close)

    async def server_side(request, exc: UserError):
        return json_response({"error": str(exc)}, 500)

    async def bug(request, exc: Exception):
        # uvicorn logs the traceback (ServerErrorMiddleware raises it again); the client gets one line
        return json_response({"error": f"internal error ({type(exc).__name__}); see the server's log"}, 500)

    handlers = {HTTPException: http_error, RequestRefused: refused, UserError: server_side, Exception: bug}
    app = Starlette(routes=table, lifespan=lifespan, exception_handlers=handlers)
    return Timed(BodyGuard(app, limits.max_body, limits.body_timeout, limits.token), state)


def json_response(document: dict, status: int = 200, headers: dict | None = None):
    from starlette.responses import JSONResponse

    return JSONResponse(document, status, headers)


class Routes:
    def __init__(self, state: ServerState, limits: AppLimits):
        self.state, self.limits = state, limits

    async def live(self, request):
        return json_response({"live": True})

    async def ready(self, request):
        ready = self.state.ready
        return json_response({"ready": ready}, 200 if ready else 503)

    async def server_metadata(self, request):
        from importlib import metadata

        try:
            version = metadata.version("gamma-edge")
        except metadata.PackageNotFoundError:
            version = "unknown"
        return json_response({"name": "gamma-edge", "version": version, "extensions": ["binary_tensor_data"]})

    def model(self, request) -> ServedModel:
        name = request.path_params["model"]
        if name not in self.state.models:
            raise RequestRefused(404, f"model '{name}' is not served here; this server has "
                                      f"{', '.join(self.state.models)}")
        version = request.path_params.get("version")
        if version not in (None, "", VERSION):
            raise RequestRefused(404, f"model '{name}' has only version {VERSION}, not {version!r}")
        return self.state.models[name]

    async def model_metadata(self, request):
        return json_response(self.model(request).metadata())

    async def model_ready(self, request):
        self.model(request)
        return json_response({"ready": self.state.ready}, 200 if self.state.ready else 503)

    async def infer(self, request):
        from starlette.responses import Response

        model = self.model(request)
        body = decompress(await request.body(), request.headers.get("content-encoding"), self.limits.max_body)
        parsed = parse_infer_request(body, request.headers.get(HEADER_LENGTH))
        outputs, parameters = await model.infer(parsed)
        content, headers = infer_response(model.name, VERSION, parsed, outputs, parameters)
        return Response(content, headers=headers)

    async def score(self, request):
        """POST /score[?model=NAME][&scene=SCENE]: an image as the body, or multipart files."""
        name = request.query_params.get("model") or next(iter(self.state.models))
        if name not in self.state.models:
            raise RequestRefused(404, f"model '{name}' is not served here; this server has "
                                      f"{', '.join(self.state.models)}")
        model = self.state.models[name]
        scene = request.query_params.get("scene") or model.scorer.scene
        if scene not in model.scorer.scenes:
            raise RequestRefused(400, f"scene '{scene}' is not in model '{name}'; it scores "
                                      f"{', '.join(model.scorer.scenes)}")
        images = await read_images(request)
        results = await model.score_images(images)
        if self.state.metrics is not None:
            for result in results:
                self.state.metrics.images.labels(name, "refused" if result.error else "scored").inc()
        if all(result.error for result in results):
            raise RequestRefused(400, results[0].error if len(results) == 1
                                 else f"none of the {len(results)} images could be scored; {results[0].name}: "
                                      f"{results[0].error}")
        return json_response({"model": name, "scene": scene, "crops": model.preprocess.crops,
                              "results": [result.as_json(scene) for result in results]})

    async def metrics(self, request):
        from starlette.responses import Response

        if self.state.metrics is None:
            raise RequestRefused(404, "this server keeps no metrics")
        content, media_type = self.state.metrics.exposition()
        return Response(content, media_type=media_type)


async def read_images(request) -> list[tuple[str, bytes]]:
    """The images of a /score request: the body itself (an image/* or octet-stream Content-Type), or
    every file of a multipart/form-data body; anything else is refused with what to send instead."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind.startswith(IMAGE_TYPES):
        body = await request.body()
        if not body:
            raise RequestRefused(400, "the request body is empty; send the image's bytes")
        return [("image", body)]
    if kind == "multipart/form-data":
        require("python_multipart")
        form = await request.form(max_files=MAX_FILES, max_fields=MAX_FILES)
        try:
            files = [(item.filename or key, await item.read()) for key, item in form.multi_items()
                     if hasattr(item, "filename")]
        finally:
            await form.close()
        if not files:
            raise RequestRefused(400, "the multipart body holds no file; send each image as a file field "
                                      "(curl -F image=@photo.jpg)")
        return files
    raise RequestRefused(415, f"Content-Type '{kind or 'none'}' is not an image; send the image as the body with "
                              f"Content-Type image/jpeg, image/png or application/octet-stream, or as "
                              f"multipart/form-data files (curl -F image=@photo.jpg)")


ROUTE_NAMES = (("/v2/health/", "health"), ("/metrics", "metrics"), ("/score", "score"))


def route_of(scope, models) -> tuple[str, str]:
    """(route, model) labels for the metrics: a fixed set of names, never the raw path."""
    from urllib.parse import parse_qs

    path = scope["path"]
    for prefix, route in ROUTE_NAMES:
        if path.startswith(prefix):
            if route != "score":
                return route, ""
            asked = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("model", [None])[0]
            model = asked or next(iter(models), "")
            return route, model if model in models else ""
    parts = path.strip("/").split("/")
    if len(parts) >= 3 and parts[:2] == ["v2", "models"]:
        model = parts[2] if parts[2] in models else ""
        return ("infer" if parts[-1] == "infer" else "ready" if parts[-1] == "ready" else "metadata"), model
    return ("metadata" if path.rstrip("/") == "/v2" else "other"), ""


class Timed:
    """Outermost ASGI layer: requests in flight, and each answer counted with its status and seconds."""

    def __init__(self, app, state: ServerState):
        self.app, self.state = app, state

    async def __call__(self, scope, receive, send):
        metrics = self.state.metrics
        if scope["type"] != "http" or metrics is None:
            await self.app(scope, receive, send)
            return
        route, model = route_of(scope, self.state.models)
        status = 500
        began = time.perf_counter()

        async def send_status(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        metrics.in_flight.inc()
        try:
            await self.app(scope, receive, send_status)
        finally:
            metrics.in_flight.dec()
            metrics.observe_request(route, model, status, time.perf_counter() - began)
