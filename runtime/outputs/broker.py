"""Which MQTT broker a fleet talks to, and how: its address, the user and password, TLS (docs/fleet.md,
"MQTT over TLS"; docs/secrets.md).

Every setting is checked and every file read before the model loads, so a typo in a path is one
sentence at the start, not an outage an hour later. Secrets come from where operators keep them
(contract/secrets.py): `{NAME}` placeholders in the address, user and password, a password file,
or the environment variable GAMMA_EDGE_MQTT_PASSWORD; the address is only ever shown as host:port.
"""
from __future__ import annotations

import os
import socket
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

from contract.errors import UserError
from contract.secrets import fill, hide, read_secret_file

PLAIN_PORT, TLS_PORT = 1883, 8883
SCHEMES = {"mqtt": False, "tcp": False, "mqtts": True, "ssl": True}     # scheme -> TLS
PASSWORD_VARIABLE = "GAMMA_EDGE_MQTT_PASSWORD"
PROBE_TIMEOUT_S = 3.0


@dataclass(frozen=True)
class Broker:
    host: str
    port: int
    tls: bool = False
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    ca: str | None = None               # PEM file of the CA(s) the broker's certificate must chain to
    cert: str | None = None             # client certificate (PEM), for brokers that ask for one
    key: str | None = None              # its private key, when not in the certificate file
    insecure: bool = False              # TLS without checking the broker's certificate at all

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def tls_context(self) -> ssl.SSLContext | None:
        """The TLS settings as one context (paho takes it as is), or one sentence on a bad file."""
        if not self.tls:
            return None
        try:
            context = ssl.create_default_context(cafile=self.ca)
        except (ssl.SSLError, ValueError) as exc:
            raise UserError(f"the MQTT CA file '{self.ca}' (--mqtt-ca) holds no certificate OpenSSL can read "
                            f"({_ssl_reason(exc)}); give the CA certificate in PEM") from None
        if self.insecure:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if self.cert:
            try:        # an encrypted key would make OpenSSL ask on the terminal: no passphrase, one sentence
                context.load_cert_chain(self.cert, self.key, password=lambda: b"")
            except (ssl.SSLError, ValueError) as exc:
                raise UserError(f"the MQTT client certificate '{self.cert}' (--mqtt-cert) and its key cannot be "
                                f"used ({_ssl_reason(exc)}); give a PEM certificate and its unencrypted key") from None
        return context


def broker_from(url: str, *, user: str | None = None, password: str | None = None, password_file: str | None = None,
                ca: str | None = None, cert: str | None = None, key: str | None = None,
                insecure: bool = False) -> Broker:
    """The broker the settings name. The password, first found: a password file, the `password`
    setting, $GAMMA_EDGE_MQTT_PASSWORD, the address's own. The user: the `user` setting, else the
    address's own. Placeholders are filled in the address, the user and the password."""
    text = url if "://" in url else f"mqtt://{url}"
    shown = hide(text)
    parts = urlsplit(fill(text, f"--mqtt '{shown}'"))
    if parts.scheme not in SCHEMES or not parts.hostname:
        raise UserError(f"--mqtt '{shown}' is not a broker address; write it as mqtt://HOST:PORT, "
                        f"mqtts://HOST:PORT for TLS (or HOST:PORT)")
    try:
        port = parts.port
    except ValueError:
        raise UserError(f"--mqtt '{shown}' has a port that is not a number from 1 to 65535") from None
    tls = SCHEMES[parts.scheme]
    if not tls and (ca or cert or key or insecure):
        raise UserError(f"--mqtt-ca, --mqtt-cert, --mqtt-key and --mqtt-insecure are TLS settings, and --mqtt "
                        f"'{shown}' is plain TCP; write the address as mqtts://HOST (port {TLS_PORT} by default)")
    user = fill(user, "--mqtt-user") if user else (unquote(parts.username) if parts.username else None)
    if password_file:
        password = read_secret_file(password_file, "--mqtt-password-file")
    elif password:
        password = fill(password, "the MQTT password setting")
    else:
        password = os.environ.get(PASSWORD_VARIABLE) or (unquote(parts.password) if parts.password else None)
    if password and not user:
        raise UserError("an MQTT password is given without a user; give the user with --mqtt-user (or mqtt.user)")
    for option, path in (("--mqtt-ca", ca), ("--mqtt-cert", cert), ("--mqtt-key", key)):
        if path and not Path(path).expanduser().is_file():
            raise UserError(f"{option} '{path}' does not exist; check the path")
    if key and not cert:
        raise UserError("--mqtt-key needs the certificate it belongs to: give --mqtt-cert too")
    broker = Broker(parts.hostname, port or (TLS_PORT if tls else PLAIN_PORT), tls, user, password,
                    *(str(Path(p).expanduser()) if p else None for p in (ca, cert, key)), insecure)
    broker.tls_context()            # every file read once now: a bad one is named before the model loads
    return broker


def diagnose(broker: Broker, context: ssl.SSLContext | None) -> str:
    """Why a connection failed, in words for the outage line: try the TCP connection and the TLS
    handshake ourselves (paho only says that it failed). Called once per outage."""
    try:
        sock = socket.create_connection((broker.host, broker.port), timeout=PROBE_TIMEOUT_S)
    except socket.timeout:
        return f"it does not answer (nothing within {PROBE_TIMEOUT_S:g} s)"
    except OSError as exc:
        return f"it cannot be reached ({exc.strerror or exc})"
    with sock:
        if context is None:
            return ("it closed the connection before answering (if it speaks TLS on this port, write the "
                    "address as mqtts://)")
        try:
            with context.wrap_socket(sock, server_hostname=broker.host) as tls:
                tls.settimeout(0.5)         # TLS 1.3: a refused client certificate comes as the first record
                tls.recv(1)
        except ssl.SSLCertVerificationError as exc:
            return (f"its certificate was refused ({exc.verify_message}); give the CA that signed it with "
                    f"--mqtt-ca, or --mqtt-insecure to skip the check")
        except ssl.SSLError as exc:
            return (f"the TLS handshake failed ({_ssl_reason(exc)}); check that the port speaks TLS and the "
                    f"client certificate (--mqtt-cert) if it asks for one")
        except (socket.timeout, OSError):
            pass                            # the handshake went through: the refusal came later
    return "it closed the connection (check the user, password and client certificate it expects)"


def _ssl_reason(exc: Exception) -> str:
    return str(getattr(exc, "reason", None) or getattr(exc, "strerror", None) or exc).replace("_", " ").lower()
