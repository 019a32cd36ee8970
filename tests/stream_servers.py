"""Real HTTP/MJPEG streams on 127.0.0.1 for the stream tests, started and stopped by the test.

OpenCV's FFmpeg backend reads `multipart/x-mixed-replace` JPEG streams over http://, the
format of most IP cameras' MJPEG endpoints. Each connection a client makes follows the next
step of a script: serve some frames (optionally after a delay) and then close or stall, or
answer 404. `refused_url()` names a port where nothing listens. The picture makers below
script what a camera shows: a live scene (a photo with fresh sensor noise in every frame), a
frozen one, a covered lens, a focus that blurs and clears.
"""
from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

import cv2
import numpy as np

from runtime_fixtures import textured_image

BOUNDARY = b"gammaframe"
LONGEST_STALL_S = 30.0          # a stalled connection is released by stop(), or after this at the latest


@dataclass(frozen=True)
class Serve:
    """Answer 200 and send `frames` JPEG frames `interval` apart, the first after `delay`;
    then close the connection (a drop) or keep it open without sending a byte (a stall).
    `picture(i)` makes frame i (BGR) of this connection; without it, 8 textured frames cycle."""

    frames: int
    delay: float = 0.0
    interval: float = 0.02
    then: str = "close"         # "close" | "stall"
    picture: Callable[[int], np.ndarray] | None = None


@dataclass(frozen=True)
class NotFound:
    """Answer 404, as a camera does for a wrong path or a stream that is gone."""


class MjpegServer:
    """A threaded MJPEG server; connection n follows script[n], later ones `after`."""

    def __init__(self, script, after=NotFound(), size=(320, 240)):
        self.script, self.after = list(script), after
        self.jpegs = [cv2.imencode(".jpg", textured_image(size[1], size[0], seed=i))[1].tobytes() for i in range(8)]
        self.connections = 0
        self.frame_times: list[list[float]] = []     # per connection: time.monotonic() of each frame sent
        self.closing = threading.Event()
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                       name="mjpeg-server", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/video.mjpg"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop()
        return False

    def stop(self) -> None:
        self.closing.set()              # releases stalled connections
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)

    def _next_step(self):
        with self.lock:
            step = self.script[self.connections] if self.connections < len(self.script) else self.after
            self.connections += 1
            self.frame_times.append([])
            return step, self.frame_times[-1]

    def _serve(self, handler, step: Serve, sent: list[float]) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY.decode()}")
        handler.send_header("Cache-Control", "no-cache")
        handler.end_headers()
        handler.wfile.flush()
        if self.closing.wait(step.delay):
            return
        for i in range(step.frames):
            jpeg = (self.jpegs[i % len(self.jpegs)] if step.picture is None
                    else cv2.imencode(".jpg", step.picture(i))[1].tobytes())
            handler.wfile.write(b"--%s\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n%s\r\n"
                                % (BOUNDARY, len(jpeg), jpeg))
            handler.wfile.flush()
            sent.append(time.monotonic())
            if self.closing.wait(step.interval):
                return
        if step.then == "stall":
            self.closing.wait(LONGEST_STALL_S)

    def _handler_class(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's name
                step, sent = server._next_step()
                try:
                    if isinstance(step, NotFound):
                        self.send_error(404, "no such stream")
                    else:
                        server._serve(self, step, sent)
                except (BrokenPipeError, ConnectionResetError):
                    pass            # the client gave up on this connection: what a reconnect does

            def log_message(self, *args):
                pass

        return Handler


@contextmanager
def refused_url():
    """An http:// URL on a port that refuses connections: the socket is bound, so no other
    program takes the port during the test, but it never listens."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/video.mjpg"
    finally:
        sock.close()


def sensor_noise(shape, noise: float, seed: int, count: int = 8) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(0, noise, shape) for _ in range(count)]


def live_scene(photo: np.ndarray, noise: float = 2.0, seed: int = 0) -> Callable[[int], np.ndarray]:
    """A static scene as a live camera shows it: the same photo, fresh sensor noise each frame."""
    variants = [np.clip(photo + field, 0, 255).astype(np.uint8) for field in sensor_noise(photo.shape, noise, seed)]
    return lambda i: variants[i % len(variants)]


def scripted(normal: Callable[[int], np.ndarray], spans) -> Callable[[int], np.ndarray]:
    """`normal` frames, except within each (first, last, picture) span, where picture(i) is shown."""
    def picture(i: int) -> np.ndarray:
        for first, last, shown in spans:
            if first <= i <= last:
                return shown(i)
        return normal(i)
    return picture


def frozen_at(normal: Callable[[int], np.ndarray], frame: int) -> Callable[[int], np.ndarray]:
    """The very same picture again and again (a stuck encoder or a frozen stream)."""
    still = normal(frame).copy()
    return lambda i: still


def covered(size=(320, 240), level: int = 60, noise: float = 3.0, seed: int = 1) -> Callable[[int], np.ndarray]:
    """A blocked or sprayed lens: nearly uniform, but still the sensor's noise (not a filler frame)."""
    rng = np.random.default_rng(seed)
    variants = [np.clip(level + rng.normal(0, noise, (size[1], size[0], 3)), 0, 255).astype(np.uint8)
                for _ in range(8)]
    return lambda i: variants[i % len(variants)]


def blur_ramp(photo: np.ndarray, start: int, frames: int, sigma: float, noise: float = 2.0,
              seed: int = 3) -> Callable[[int], np.ndarray]:
    """Focus drifting away: the optics blur grows from none at frame `start` to `sigma` over `frames`
    frames; the sensor's noise comes after the lens, so it stays sharp (the stream is not frozen)."""
    fields = sensor_noise(photo.shape, noise, seed)

    def picture(i: int) -> np.ndarray:
        strength = sigma * min(1.0, max(0.0, (i - start + 1) / frames))
        optics = cv2.GaussianBlur(photo, (0, 0), strength) if strength > 0.3 else photo
        return np.clip(optics + fields[i % len(fields)], 0, 255).astype(np.uint8)
    return picture
