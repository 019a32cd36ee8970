"""`gamma-edge serve` put together: one Scorer per model, a DynamicBatcher per model, a shared pool
of decode threads, the ASGI app, and uvicorn serving it on a socket bound here (so a port in use is
one sentence, and port 0 gives a free one).

A stop (Ctrl-C, SIGTERM, or `stop()`) is graceful: the listening socket closes, requests in flight
and those already queued for the backend are answered (up to `graceful_timeout` seconds), then the
batchers and decoders end. A second Ctrl-C or SIGTERM stops at once.
"""
from __future__ import annotations

import contextlib
import errno
import ipaddress
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from contract.errors import UserError
from runtime.inference.scorer import Scorer, yield_to_inference
from runtime.serve.app import AppLimits, ServerState, build_app
from runtime.serve.batching import DynamicBatcher
from runtime.serve.libraries import require
from runtime.serve.models import ServedModel


@dataclass(frozen=True)
class ServeOptions:
    """Where the server listens and what it accepts (docs/serve.md, "Options")."""

    host: str = "127.0.0.1"
    port: int = 8000
    token: str | None = None
    max_delay_ms: float = 2.0
    max_queue: int = 2048
    max_body_mb: float = 32.0
    body_timeout: float = 30.0
    header_timeout: float = 10.0
    decode_workers: int = 2
    graceful_timeout: float = 30.0
    metrics: bool = True


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ModelServer:
    """The models behind one HTTP server. `run()` blocks (the CLI); `start()` / `stop()` serve from a
    thread (tests, benchmarks)."""

    def __init__(self, scorers: dict[str, Scorer], options: ServeOptions = ServeOptions(),
                 sock: socket.socket | None = None):
        if not scorers:
            raise UserError("no model to serve; pass --model")
        self.options = options
        self.decoder = ThreadPoolExecutor(options.decode_workers, thread_name_prefix="gamma-serve-decode",
                                          initializer=yield_to_inference)
        self.batchers = {name: DynamicBatcher(scorer.backend.run, scorer.batch, options.max_delay_ms / 1000,
                                              options.max_queue, name=name)
                         for name, scorer in scorers.items()}
        models = {name: ServedModel(name, scorer, self.batchers[name].infer, self.decoder)
                  for name, scorer in scorers.items()}
        self.state = ServerState(models)
        if options.metrics:
            from runtime.serve.metrics import ServeMetrics

            self.state.metrics = ServeMetrics(lambda: {name: b.queue_depth for name, b in self.batchers.items()})
            for name, batcher in self.batchers.items():
                batcher.on_batch = lambda stats, name=name: self.state.metrics.observe_batch(name, stats)
        self.state.on_startup.append(self._start_batchers)
        self.state.on_shutdown.append(self._close)
        limits = AppLimits(int(options.max_body_mb * 2 ** 20), options.body_timeout, options.token)
        self.app = build_app(self.state, limits)
        self.socket = sock or bind(options.host, options.port)
        self.uvicorn = self._uvicorn()
        self.thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self.socket.getsockname()[1]

    @property
    def url(self) -> str:
        host = self.options.host
        return f"http://{'[' + host + ']' if ':' in host else host}:{self.port}"

    async def _start_batchers(self) -> None:
        for batcher in self.batchers.values():
            batcher.start()

    async def _close(self) -> None:
        for batcher in self.batchers.values():
            await batcher.close()
        self.decoder.shutdown(wait=True)

    def _uvicorn(self):
        uvicorn = require("uvicorn")
        from runtime.serve.guard import guarded_protocol

        config = uvicorn.Config(self.app, lifespan="on", log_level="warning", access_log=False, ws="none",
                                http=guarded_protocol(self.options.header_timeout), server_header=False,
                                timeout_graceful_shutdown=self.options.graceful_timeout)
        return _graceful_server_class()(config)

    def run(self) -> None:
        """Serve until Ctrl-C or SIGTERM (in the main thread), then stop gracefully."""
        self.uvicorn.run(sockets=[self.socket])

    def start(self, timeout: float = 30.0) -> "ModelServer":
        self.thread = threading.Thread(target=self.uvicorn.run, kwargs={"sockets": [self.socket]},
                                       name="gamma-serve", daemon=True)
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.uvicorn.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.01)
        return self

    def stop(self, timeout: float = 60.0) -> None:
        self.uvicorn.should_exit = True
        if self.thread is not None:
            self.thread.join(timeout)

    @property
    def answered(self) -> int:
        return self.uvicorn.server_state.total_requests


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, or one sentence saying why it cannot be had."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror:
        raise UserError(f"--host {host} is not an address or a name this machine can resolve") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise UserError(f"port {port} is already in use on {host}; choose another --port or stop the "
                            f"program holding it") from None
        raise UserError(f"cannot listen on {host}:{port} ({exc.strerror}); check --host and --port") from None
    # listening from here on: a client that connects while the models load waits in the backlog
    sock.listen(2048)
    return sock


def _graceful_server_class():
    """Built on first use, so that importing this module needs no uvicorn."""
    uvicorn = require("uvicorn")

    class GracefulServer(uvicorn.Server):
        """uvicorn's server, with our signal handling: the first Ctrl-C or SIGTERM stops gracefully, a
        second stops at once, and neither is raised again afterwards (uvicorn would re-raise it, so the
        process would die by the signal after a clean stop instead of exiting 0)."""

        @contextlib.contextmanager
        def capture_signals(self):
            if threading.current_thread() is not threading.main_thread():
                yield
                return

            def handle(signum, frame):
                if self.should_exit:
                    self.force_exit = True
                self.should_exit = True

            previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

    return GracefulServer
