"""No secret leaves the process: credentials in camera, broker and webhook addresses are hidden
wherever an address is shown (contract.secrets.hide), `{NAME}` placeholders are filled from files in
$CREDENTIALS_DIRECTORY or the environment, and a whole fleet run (cameras, a TLS broker with a
password, Home Assistant discovery, a webhook, metrics, snapshots, JSON lines, the state file) is
grepped for every secret it was given: none is found anywhere it wrote."""
import base64
import json
import os
import subprocess
import sys
import threading
import urllib.request
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from contract.secrets import fill, hide
from runtime import UserError
from runtime.live.source import parse_source
from runtime_fixtures import make_model
from mqtt_brokers import Mosquitto, Subscriber, free_port, make_pki, needs_mosquitto
from stream_servers import MjpegServer, Serve, covered

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("address, shown", [
    ("rtsp://admin:pw@10.0.0.11:554/s1", "rtsp://***@10.0.0.11:554/s1"),
    ("rtsp://first.last@example.com:S3c:r@t@cam.local/s1", "rtsp://***@cam.local/s1"),
    ("http://cam.local/video.mjpg?user=admin&password=hunter2&channel=1",
     "http://cam.local/video.mjpg?user=***&password=***&channel=1"),
    ("https://hooks.local/in?token=abc&access_token=def&api_key=ghi&X-Auth=jkl&sig=mno&page=2#top",
     "https://hooks.local/in?token=***&access_token=***&api_key=***&X-Auth=***&sig=***&page=2#top"),
    ("rtsp://admin:Pass#123@cam.local/stream?channel=1", "rtsp://***@cam.local/stream?channel=1"),   # a raw '#'
    ("rtsp://admin:pa/ss@cam.local/stream", "rtsp://***@cam.local/stream"),                          # a raw '/'
    ("mqtts://box:{MQTT_PASSWORD}@broker.local", "mqtts://***@broker.local"),
    ("rtsp://cam.local/s1?pwd=&x", "rtsp://cam.local/s1?pwd=&x"),         # nothing to hide
    ("rtsp://cam.local/s1", "rtsp://cam.local/s1"),
    ("0", "0"), ("/dev/video0", "/dev/video0"), ("clips/gate@noon.mp4", "clips/gate@noon.mp4"),
])
def test_hide_masks_user_info_and_credential_query_values(address, shown):
    assert hide(address) == shown


def test_fill_takes_secrets_from_the_credentials_directory_first_then_the_environment(tmp_path, monkeypatch):
    (tmp_path / "CAM_PASSWORD").write_text("from-file\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    monkeypatch.setenv("CAM_PASSWORD", "from-env")
    monkeypatch.setenv("CAM_USER", "admin")
    assert fill("rtsp://{CAM_USER}:{CAM_PASSWORD}@cam/s?x={{y}}", "camera 'gate'") == "rtsp://admin:from-file@cam/s?x={y}"
    monkeypatch.delenv("CREDENTIALS_DIRECTORY")
    assert fill("{CAM_PASSWORD}", "here") == "from-env"
    with pytest.raises(UserError) as raised:
        fill("rtsp://admin:{GATE_PASSWORD}@cam/s", "stream 'rtsp://***@cam/s'")
    assert str(raised.value) == ("stream 'rtsp://***@cam/s' asks for the secret {GATE_PASSWORD}, which is neither an "
                                 "environment variable nor a file GATE_PASSWORD in $CREDENTIALS_DIRECTORY (not set); "
                                 "set one of them (docs/secrets.md)")


def test_a_source_is_shown_as_written_and_opened_with_its_secrets(monkeypatch):
    monkeypatch.setenv("GATE_TOKEN", "t0ken")
    source = parse_source("rtsp://admin:pw@cam/s1?token={GATE_TOKEN}")
    assert source.text == "rtsp://***@cam/s1?token=***" and source.target == "rtsp://admin:pw@cam/s1?token=t0ken"
    path_secret = parse_source("http://cam/{GATE_TOKEN}/video.mjpg")      # a secret in the path: shown unfilled
    assert path_secret.text == "http://cam/{GATE_TOKEN}/video.mjpg" and "t0ken" not in repr(path_secret)


# -- a whole fleet run, grepped ---------------------------------------------------------------------
@contextmanager
def webhook_receiver():
    """A local endpoint keeping each POST's body and Authorization header."""
    received = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's name
            received.append((self.path, self.headers.get("Authorization"),
                             self.rfile.read(int(self.headers["Content-Length"])).decode()))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], received
    finally:
        server.shutdown()
        server.server_close()


SECRETS = {"GateSecret1", "first.last@example.com", "GateToken2", "DockSecret3", "BrokerSecret4", "broker.user@site",
           "YardAuth5", "YardSecret6", "viewer@x.y", "HookSecret7", "hook.user", "HookToken8"}


def run_process(command: list[str], env: dict, stdout_file: Path) -> tuple[int, str, str, str]:
    """Run the fleet; its exit status, stdout, stderr, and its metrics page scraped while it scores."""
    with open(stdout_file, "w") as stdout_handle:
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=stdout_handle, stderr=subprocess.PIPE,
                                   text=True)
    stderr, metrics, endpoint = [], [], []

    def read_stderr():
        for line in process.stderr:
            stderr.append(line)
            if line.startswith("metrics on http://"):
                endpoint.append(line.split()[2])
            if line.startswith("gate: covered"):           # scraped while the fleet runs, once it scores
                metrics.append(urllib.request.urlopen(endpoint[0], timeout=5).read().decode())

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    try:
        process.wait(timeout=90)
    finally:
        if process.poll() is None:
            process.kill()
    reader.join(10)
    return process.returncode, stdout_file.read_text(), "".join(stderr), "".join(metrics)


@needs_mosquitto
def test_no_secret_is_written_anywhere_by_a_fleet_run(tmp_path):
    pki = make_pki(tmp_path / "pki")
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "YARD_PASSWORD").write_text("YardSecret6\n")
    snapshots, jsonl = tmp_path / "snapshots", tmp_path / "run" / "scores.jsonl"
    snapshots.mkdir()
    jsonl.parent.mkdir()
    env = {**os.environ, "DOCK_PASSWORD": "DockSecret3", "CREDENTIALS_DIRECTORY": str(credentials)}
    with Mosquitto(tmp_path / "broker", users={"broker.user@site": "BrokerSecret4"}, pki=pki) as broker, \
            MjpegServer([Serve(400, interval=0.05, picture=covered())]) as gate, \
            MjpegServer([Serve(400, interval=0.05)]) as dock, webhook_receiver() as (hook_port, posts):
        subscriber = Subscriber(broker, "#", "broker.user@site", "BrokerSecret4")
        port = gate.url.rsplit(":", 1)[1].split("/")[0]
        dock_port = dock.url.rsplit(":", 1)[1].split("/")[0]
        command = [
            sys.executable, "-m", "gamma_edge.cli", "run", "--model", str(make_model(tmp_path / "model")),
            "--crops", "center", "--max-frames", "80", "--retries", "0", "--hold", "0.5",
            f"gate=http://first.last@example.com:GateSecret1@127.0.0.1:{port}/video.mjpg?token=GateToken2",
            f"dock=http://admin:{{DOCK_PASSWORD}}@127.0.0.1:{dock_port}/video.mjpg",
            f"yard=http://viewer@x.y:{{YARD_PASSWORD}}@127.0.0.1:{free_port()}/cam?auth=YardAuth5",
            "--mqtt", f"mqtts://broker.user@site:BrokerSecret4@127.0.0.1:{broker.port}", "--mqtt-ca", str(pki.ca),
            "--ha-discovery", "--webhook", f"http://hook.user:HookSecret7@127.0.0.1:{hook_port}/hook?token=HookToken8",
            "--metrics-port", "0", "--metrics-host", "127.0.0.1", "--snapshots", str(snapshots),
            "--jsonl", str(jsonl)]
        returncode, stdout, stderr, metrics = run_process(command, env, tmp_path / "stdout.txt")
        assert subscriber.wait_for(lambda m: any(t == "gamma-edge/gate/event" for t, _, _ in m), 10)
        subscriber.close()

    written = {"stdout": stdout, "stderr": stderr, "metrics": metrics,
               "mqtt": "\n".join(f"{t} {p.decode(errors='replace')}" for t, p, _ in subscriber.messages),
               "webhook bodies": "\n".join(body for _, _, body in posts),
               "snapshots": "\n".join(path.name for path in snapshots.iterdir())}
    for path in jsonl.parent.iterdir():             # the JSON lines, their events file, the state file
        written[path.name] = path.read_text()
    found = {(where, secret) for where, text in written.items() for secret in SECRETS if secret in text}
    assert found == set(), found

    # ... and the run really did write all of that, and still connected with its secrets
    assert returncode == 3, written["stderr"]              # yard: source lost (--retries 0)
    assert "yard: 'http://***@127.0.0.1:" in written["stderr"] and "/cam?auth=***' could not be opened" in written["stderr"]
    assert "gate: covered" in written["stderr"] and "gamma_edge_score{" in written["metrics"]
    assert any(name.startswith("gate-") for name in written["snapshots"].split())
    assert "homeassistant/sensor/gamma-edge/dock_quality/config" in written["mqtt"]
    events = [json.loads(line) for line in written["scores.jsonl"].splitlines()]
    summaries = {r["camera"]: r for r in events if r.get("event") == "summary"}
    assert summaries["gate"]["source"].startswith("http://***@127.0.0.1:") and summaries["dock"]["scored"] > 0
    assert posts and {(path, auth) for path, auth, _ in posts} == {
        ("/hook?token=HookToken8", "Basic " + base64.b64encode(b"hook.user:HookSecret7").decode())}
