"""A real MQTT broker for the tests: mosquitto (Debian's `mosquitto` package; .ci/run installs it),
started on 127.0.0.1 by the test, optionally with TLS (a CA and certificates made here with the
`cryptography` package), a password file, client certificates required, and persistence so a
restarted broker keeps a subscriber's session. Also a paho subscriber that records what arrives."""
from __future__ import annotations

import datetime
import getpass
import ipaddress
import shutil
import socket
import ssl
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
needs_mosquitto = pytest.mark.skipif(not Path(MOSQUITTO).exists(),
                                     reason="mosquitto is not installed (apt-get install mosquitto; .ci/run does)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.02)
    raise AssertionError(f"nothing listens on port {port} after {seconds} s")


def wait_until(predicate, seconds: float) -> bool:
    """Whether `predicate()` came true within `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


# -- certificates --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Pki:
    ca: Path                # the CA that signed the broker's and the client's certificates
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path          # a CA that signed nothing here: the broker's certificate does not chain to it


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write(path: Path, cert: x509.Certificate, key=None) -> Path:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    if key is not None:
        path.with_suffix(".key").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                               serialization.PrivateFormat.PKCS8,
                                                               serialization.NoEncryption()))
    return path


def _certificate(subject: str, key, issuer: x509.Name | None, issuer_key, *, ca: bool = False, usage=None,
                 names=()) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer or name)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=2))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        builder = builder.add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                                      key_encipherment=False, data_encipherment=False,
                                                      key_agreement=False, key_cert_sign=True, crl_sign=True,
                                                      encipher_only=False, decipher_only=False), critical=True)
    if usage:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(names)), critical=False)
    return builder.sign(issuer_key or key, hashes.SHA256())


def make_pki(folder: Path) -> Pki:
    """A CA, a broker certificate for 127.0.0.1 and localhost, a client certificate, another CA."""
    folder.mkdir(parents=True, exist_ok=True)
    ca_key, other_key, server_key, client_key = _key(), _key(), _key(), _key()
    ca = _certificate("gamma-edge test CA", ca_key, None, None, ca=True)
    other = _certificate("some other CA", other_key, None, None, ca=True)
    server = _certificate("127.0.0.1", server_key, ca.subject, ca_key, usage=ExtendedKeyUsageOID.SERVER_AUTH,
                          names=(x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))))
    client = _certificate("gamma-edge box", client_key, ca.subject, ca_key, usage=ExtendedKeyUsageOID.CLIENT_AUTH)
    return Pki(_write(folder / "ca.pem", ca), _write(folder / "server.pem", server, server_key),
               folder / "server.key", _write(folder / "client.pem", client, client_key), folder / "client.key",
               _write(folder / "other-ca.pem", other))


# -- the broker ----------------------------------------------------------------------------------
class Mosquitto:
    """mosquitto on 127.0.0.1:port with the given users ({user: password}; none: anonymous), TLS
    when `pki` is given (client certificates required with `client_certs`), and persistence (a
    restarted broker keeps sessions and queued messages). start() / stop() may be called again."""

    def __init__(self, folder: Path, port: int | None = None, users: dict | None = None, pki: Pki | None = None,
                 client_certs: bool = False):
        self.folder, self.port, self.users, self.pki = folder, port or free_port(), users or {}, pki
        folder.mkdir(parents=True, exist_ok=True)
        lines = [f"user {getpass.getuser()}",            # as root it would switch to 'mosquitto', who cannot read here
                 "per_listener_settings false", "persistence true", f"persistence_location {folder}/",
                 "autosave_interval 0", f"listener {self.port} 127.0.0.1"]
        if users:
            passwords = folder / "passwords"
            passwords.write_text("")
            for user, password in users.items():
                subprocess.run(["mosquitto_passwd", "-b", str(passwords), user, password], check=True,
                               capture_output=True)
            lines += ["allow_anonymous false", f"password_file {passwords}"]
        else:
            lines += ["allow_anonymous true"]
        if pki:
            lines += [f"cafile {pki.ca}", f"certfile {pki.server_cert}", f"keyfile {pki.server_key}",
                      f"require_certificate {'true' if client_certs else 'false'}"]
        self.config = folder / "mosquitto.conf"
        self.config.write_text("\n".join(lines) + "\n")
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.pki else 'mqtt'}://127.0.0.1:{self.port}"

    def start(self) -> "Mosquitto":
        self.process = subprocess.Popen([MOSQUITTO, "-c", str(self.config)], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE)
        try:
            wait_for_port(self.port, 10)
        except AssertionError:
            self.stop()
            raise
        return self

    def stop(self) -> str:
        """Stop it (SIGTERM: it saves its sessions); what it wrote on stderr."""
        if self.process is None:
            return ""
        self.process.terminate()
        try:
            _, err = self.process.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            _, err = self.process.communicate()
        self.process = None
        return err.decode(errors="replace")

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


class Subscriber:
    """A paho client subscribed to `topic`: (topic, payload, retained) in arrival order. With
    `session`, a persistent session (clean_session off, QoS 1): messages published while it is
    away are kept for it by the broker."""

    def __init__(self, broker: Mosquitto, topic: str = "#", user: str | None = None, password: str | None = None,
                 session: str | None = None):
        self.messages: list[tuple[str, bytes, bool]] = []
        self.subscribed = threading.Event()
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=session or "",
                                  clean_session=session is None)
        if broker.pki:
            context = ssl.create_default_context(cafile=str(broker.pki.ca))
            context.load_cert_chain(broker.pki.client_cert, broker.pki.client_key)
            self.client.tls_set_context(context)
        if user:
            self.client.username_pw_set(user, password)
        self.client.reconnect_delay_set(0.1, 0.5)
        self.client.on_connect = lambda client, *_: client.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda *_: self.subscribed.set()
        self.client.on_message = lambda _c, _u, m: self.messages.append((m.topic, m.payload, bool(m.retain)))
        self.client.connect("127.0.0.1", broker.port)
        self.client.loop_start()
        assert self.subscribed.wait(10), "the subscriber could not subscribe"

    def texts(self, topic: str) -> list[str]:
        return [payload.decode() for t, payload, _ in list(self.messages) if t == topic]

    def wait_for(self, predicate, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if predicate(list(self.messages)):
                return True
            time.sleep(0.02)
        return False

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
