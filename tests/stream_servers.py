"""Real HTTP/MJPEG streams on 127.0.0.1 for the stream tests, started and stopped by the test.

OpenCV's FFmpeg backend reads `multipart/x-mixed-replace` JPEG streams over http://, the
format of most IP cameras' MJPEG endpoints. Each connection a client makes follows the next
step of a script: serve some frames (optionally after a delay) and then close or stall, or
answer 404. `refused_url()` names a port where nothing listens.
"""
from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import cv2

from runtime_fixtures import textured_image

BOUNDARY = b"gammaframe"
LONGEST_STALL_S = 30.0          # a stalled connection is released by stop(), or after this at the latest


@dataclass(frozen=True)
class Serve:
    """Answer 200 and send `frames` JPEG frames `interval` apart, the first after `delay`;
    then close the connection (a drop) or keep it open without sending a byte (a stall)."""

    frames: int
    delay: float = 0.0
    interval: float = 0.02
    then: str = "close"         # "close" | "stall"


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
            jpeg = self.jpegs[i % len(self.jpegs)]
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
