"""Where the live page listens: `--web HOST:PORT` parsed, and whether an address is this machine's own
(the page needs a token anywhere else, and without one answers only requests addressed to this
machine). Apart from runtime/outputs/web.py so that its server (web_server.py) and it share this
without importing each other."""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from contract.errors import UserError

LISTEN_PATTERN = re.compile(r"^(?:(?:\[(?P<v6>[^\]]+)\]|(?P<host>[^:\[\]]*)):)?(?P<port>\d{1,5})$")


@dataclass(frozen=True)
class Listen:
    host: str
    port: int

    @property
    def local(self) -> bool:
        return is_loopback(self.host)

    def url(self, port: int | None = None) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port if port is None else port}/"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_listen(text: str) -> Listen:
    """'HOST:PORT', ':PORT' or 'PORT' (host 127.0.0.1), '[::1]:PORT'; port 0 picks a free one."""
    match = LISTEN_PATTERN.match(str(text).strip())
    port = int(match["port"]) if match else -1
    if not match or port > 65535:
        raise UserError(f"--web '{text}' is not an address to serve the page on; write HOST:PORT "
                        f"(e.g. 127.0.0.1:8080, or 0.0.0.0:8080 with a token)")
    host = match["v6"] or match["host"] or "127.0.0.1"
    return Listen("127.0.0.1" if host == "localhost" else host, port)    # one address, so port 0 is one port
