"""The page's HTTP server: aiohttp on an event loop in a thread of its own (runtime/outputs/web.py).

Routes: `/` and its static files (shipped in runtime/outputs/page/, nothing from elsewhere),
`/api/fleet` (the page's data as JSON, for scripts too), `/api/history` (the sparklines),
`/api/stream` (server-sent events: the data again each second, and at once after an event, to
every page connected) and `/api/snapshot/NAME.jpg` (the camera's latest picture).

A picture is encoded only when a page asks for it, at most once per camera per `snapshot_every_s`
whoever asks, scaled down to a tile's size, in one encoding thread: nothing is encoded while no
one looks, and the inference loop never waits for it. The data sent each second is built once
for every page connected, and only while one is.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import errno
import hmac
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
from aiohttp import web
from aiohttp_sse import sse_response

from contract.errors import UserError
from runtime.outputs.listen import is_loopback

PAGE = Path(__file__).resolve().parent / "page"
STATIC = {"/": ("index.html", "text/html"), "/page.js": ("page.js", "text/javascript"),
          "/page.css": ("page.css", "text/css")}
TICK_S = 1.0                      # the pages connected get the data this often (and at once after an event)
SAMPLE_S = 5.0                    # the sparklines' scores are sampled this often (4 per point at least)
TILE_WIDTH = 480                  # a picture wider than this is scaled down before encoding
JPEG_QUALITY = 75
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob:; style-src 'self'; script-src 'self'; "
                               "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer", "Cache-Control": "no-store",
}


class Snapshots:
    """Each camera's latest picture as a JPEG, made on request, at most once per `every_s`."""

    def __init__(self, every_s: float):
        self.every_s = every_s
        self.made: dict[str, tuple[bytes, float, float]] = {}    # camera -> (jpeg, when, the frame's capture time)
        self.locks: dict[str, asyncio.Lock] = {}
        self.encoder = ThreadPoolExecutor(1, thread_name_prefix="gamma-web-jpeg")
        self.encoded = 0

    async def get(self, feed) -> bytes | None:
        name = feed.camera.name
        async with self.locks.setdefault(name, asyncio.Lock()):     # many pages, one encoding
            jpeg, made_at, frame_at = self.made.get(name, (None, -1e9, None))
            image, captured = feed.last_image, feed.last_frame_at     # a new frame: a new capture time
            if image is None or time.monotonic() - made_at < self.every_s or captured == frame_at:
                return jpeg
            encoded = await asyncio.get_running_loop().run_in_executor(self.encoder, encode, image)
            self.encoded += 1
            self.made[name] = (encoded, time.monotonic(), captured)
            return encoded

    def close(self) -> None:
        self.encoder.shutdown(wait=False, cancel_futures=True)


def encode(image) -> bytes:
    height, width = image.shape[:2]
    if width > TILE_WIDTH:
        image = cv2.resize(image, (TILE_WIDTH, round(height * TILE_WIDTH / width)), interpolation=cv2.INTER_AREA)
    return cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])[1].tobytes()


def authorised(header: str | None, token: str) -> bool:
    """`Authorization: Bearer TOKEN` (scripts), or Basic with the token as the password (browsers)."""
    if not header:
        return False
    kind, _, value = header.partition(" ")
    if kind.lower() == "bearer":
        given = value.strip()
    elif kind.lower() == "basic":
        try:
            given = base64.b64decode(value.strip(), validate=True).decode("utf-8").partition(":")[2]
        except (binascii.Error, UnicodeDecodeError):
            return False
    else:
        return False
    return hmac.compare_digest(given.encode(), token.encode())


def loopback_host(header: str | None) -> bool:
    """A Host header naming this machine: a page without a token answers no other name, so a web
    site that points its own name at 127.0.0.1 (DNS rebinding) cannot read it."""
    host = (header or "").rsplit(":", 1)[0] if not (header or "").endswith("]") else header
    return is_loopback(host.strip("[]"))


class PageServer:
    def __init__(self, view, listen, token: str | None, snapshot_every_s: float):
        self.view, self.listen, self.token = view, listen, token
        self.snapshots = Snapshots(snapshot_every_s)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="gamma-web", daemon=True)
        self.runner: web.AppRunner | None = None
        self.port = 0
        self.viewers = 0
        self.payload, self.version = "", 0
        self.closing = False

    # -- life ---------------------------------------------------------------------------------
    def start(self) -> "PageServer":
        self.thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(30)
        except OSError as exc:
            self._stop_loop()
            where = f"{self.listen.host}:{self.listen.port}"
            if exc.errno == errno.EADDRINUSE:
                raise UserError(f"--web {where} is already in use; choose another port or stop the program "
                                f"holding it") from None
            raise UserError(f"--web {where} cannot be served ({exc.strerror or exc}); check the address") from None
        return self

    async def _start(self) -> None:
        app = web.Application(middlewares=[self._guard])
        app.on_response_prepare.append(_secure)
        app.router.add_get("/api/fleet", self._fleet)
        app.router.add_get("/api/history", self._history)
        app.router.add_get("/api/stream", self._stream)
        app.router.add_get("/api/snapshot/{name}.jpg", self._snapshot)
        for path in STATIC:
            app.router.add_get(path, self._static)
        self.changed = asyncio.Condition()
        self.woken = asyncio.Event()
        self.runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await self.runner.setup()
        site = web.TCPSite(self.runner, self.listen.host, self.listen.port)
        try:
            await site.start()
        except OSError:
            await self.runner.cleanup()
            raise
        self.port = self.runner.addresses[0][1]
        self.ticker = asyncio.create_task(self._tick())

    def wake(self) -> None:
        """From the inference loop: an event or a state to show at once (only while a page looks)."""
        if self.viewers:
            self.loop.call_soon_threadsafe(self.woken.set)

    def close(self) -> None:
        if self.thread.is_alive():
            try:
                asyncio.run_coroutine_threadsafe(self._close(), self.loop).result(10)
            finally:
                self._stop_loop()
        self.snapshots.close()

    async def _close(self) -> None:
        self.closing = True
        self.ticker.cancel()
        await asyncio.gather(self.ticker, return_exceptions=True)     # ended before its loop closes
        async with self.changed:
            self.changed.notify_all()
        await self.runner.cleanup()

    def _stop_loop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    # -- the clock: sparkline samples, and the data for the pages connected ---------------------
    async def _tick(self) -> None:
        every = min(SAMPLE_S, self.view.history_step_s / 4)
        sampled = sent = -1e9
        while True:
            now = time.monotonic()
            if now - sampled >= every:
                self.view.sample(now)
                sampled = now
            if self.viewers and (self.woken.is_set() or now - sent >= TICK_S):
                self.woken.clear()
                self.payload = json.dumps(self.view.data(with_history=False), separators=(",", ":"))
                self.version += 1
                sent = now
                async with self.changed:
                    self.changed.notify_all()
            try:
                await asyncio.wait_for(self.woken.wait(), min(TICK_S, every))
            except asyncio.TimeoutError:
                pass

    # -- requests -------------------------------------------------------------------------------
    @web.middleware
    async def _guard(self, request: web.Request, handler):
        if self.token is not None and not authorised(request.headers.get("Authorization"), self.token):
            response = web.Response(status=401, text="401: the page asks for its token\n",
                                    headers={"WWW-Authenticate": 'Basic realm="gamma-edge", charset="UTF-8"'})
        elif self.token is None and not loopback_host(request.headers.get("Host")):
            response = web.Response(status=403, text="403: this page answers only to this machine's own name\n")
        else:
            try:
                response = await handler(request)
            except web.HTTPException as exc:        # an unknown path: its status, in plain words
                response = web.Response(status=exc.status, text=f"{exc.status}: {exc.reason}\n")
        return response

    async def _static(self, request: web.Request) -> web.Response:
        name, kind = STATIC[request.path]
        return web.Response(body=(PAGE / name).read_bytes(), content_type=kind, charset="utf-8")

    async def _fleet(self, request: web.Request) -> web.Response:
        return web.json_response(self.view.data())

    async def _history(self, request: web.Request) -> web.Response:
        return web.json_response(self.view.history())

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        self.viewers += 1
        self.woken.set()                           # the first data at once
        response = web.StreamResponse()
        try:
            async with sse_response(request) as response:
                seen = 0
                while response.is_connected() and not self.closing:
                    async with self.changed:
                        await self.changed.wait_for(lambda: self.version > seen or self.closing)
                    if self.closing:
                        break
                    seen = self.version
                    await response.send(self.payload, event="fleet")
        except ConnectionResetError:                 # the page went away
            pass
        finally:
            self.viewers -= 1
        return response

    async def _snapshot(self, request: web.Request) -> web.Response:
        feed = next((feed for feed in self.view.feeds() if feed.camera.name == request.match_info["name"]), None)
        jpeg = await self.snapshots.get(feed) if feed is not None else None
        if jpeg is None:
            return web.Response(status=404, text="404: no picture of this camera yet\n")
        return web.Response(body=jpeg, content_type="image/jpeg")


async def _secure(request: web.Request, response: web.StreamResponse) -> None:
    """Every answer, the streamed one too: no script, style or picture from elsewhere, no framing."""
    response.headers.update(SECURITY_HEADERS)
