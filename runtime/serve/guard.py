"""What keeps one client from costing the others: a body limit, a body read deadline, a header read
deadline, and the optional token; all pure ASGI (or uvicorn protocol) code, below the routes.

A client that sends its headers or its body too slowly is dropped (headers) or answered 408 (body)
after the deadline; while it dawdles, the event loop serves everyone else.
"""
from __future__ import annotations

import asyncio
import hmac

from runtime.serve.protocol import RequestRefused, error_body

OPEN_PATHS = ("/v2/health/",)           # probes (Kubernetes, load balancers) carry no token


class BodyGuard:
    """ASGI middleware: refuses a request whose body is over `max_body` bytes (413, before reading it
    when Content-Length says so), or that takes over `body_timeout` seconds between two chunks (408);
    checks the token; and turns RequestRefused raised anywhere below into its one-line JSON answer."""

    def __init__(self, app, max_body: int, body_timeout: float, token: str | None):
        self.app, self.max_body, self.body_timeout, self.token = app, max_body, body_timeout, token

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_tracked(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            self._check(scope)
            await self.app(scope, self._limited(receive), send_tracked)
        except RequestRefused as refused:
            if started:                      # the answer was under way: nothing sensible can follow
                raise
            await send_error(send, refused.status, str(refused))

    def _check(self, scope) -> None:
        headers = dict(scope["headers"])
        if self.token and not scope["path"].startswith(OPEN_PATHS):
            given = headers.get(b"authorization", b"").decode("latin-1")
            if not hmac.compare_digest(given.encode(), f"Bearer {self.token}".encode()):
                raise RequestRefused(401, "this server needs its token: send 'Authorization: Bearer TOKEN'")
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            raise RequestRefused(413, f"the request body is {int(length)} bytes, above this server's limit of "
                                      f"{self.max_body} (--max-body-mb)")

    def _limited(self, receive):
        received = 0

        async def limited():
            nonlocal received
            try:
                message = await asyncio.wait_for(receive(), self.body_timeout)
            except asyncio.TimeoutError:
                raise RequestRefused(408, f"the request body did not arrive within {self.body_timeout:g} s "
                                          f"(--body-timeout)") from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    raise RequestRefused(413, f"the request body is above this server's limit of {self.max_body} "
                                              f"bytes (--max-body-mb)")
            return message

        return limited


async def send_error(send, status: int, message: str) -> None:
    body = error_body(message)
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


class HeaderDeadline:
    """Mixed into uvicorn's HTTP protocol: a connection whose request headers are not complete within
    `header_timeout` seconds of its first byte (or of its opening) is closed. uvicorn's own keep-alive
    timeout covers idle connections between requests, but not a request whose headers trickle in."""

    header_timeout = 10.0

    def connection_made(self, transport):
        super().connection_made(transport)
        self._deadline = None
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self._deadline is None and not self._in_request():
            self._arm()
        super().data_received(data)
        if self._in_request():
            self._disarm()

    def connection_lost(self, exc):
        self._disarm()
        super().connection_lost(exc)

    def _in_request(self) -> bool:
        cycle = getattr(self, "cycle", None)
        return cycle is not None and not getattr(cycle, "response_complete", True)

    def _arm(self) -> None:
        self._deadline = self.loop.call_later(self.header_timeout, self._expire)

    def _disarm(self) -> None:
        if getattr(self, "_deadline", None) is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self) -> None:
        self._deadline = None
        if not self._in_request() and not self.transport.is_closing():
            self.transport.close()


def guarded_protocol(header_timeout: float):
    """uvicorn's HTTP protocol (httptools when installed, else h11) with the header deadline."""
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    return type("GuardedHTTPProtocol", (HeaderDeadline, AutoHTTPProtocol), {"header_timeout": header_timeout})
