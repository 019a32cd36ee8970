"""What a fleet checks before its model loads (output folders, the state file, secrets, broker
settings), the metrics of a lost camera, and the one-source run keeping no password in its state
file. The model given is a path that does not exist: a check that ran after loading it would be
answered with the model's sentence instead."""
import json
from collections import Counter
from types import SimpleNamespace

import pytest
from click.testing import CliRunner
from prometheus_client.core import CollectorRegistry
from prometheus_client.exposition import generate_latest

from runtime import Scorer
from runtime.commands.run import run_command
from runtime.live.runner import RunOptions, StreamRunner
from runtime.live.source import parse_source
from runtime.outputs.prometheus import FleetCollector
from runtime_fixtures import FakeCapture, make_model, textured_image

NO_MODEL = "/nonexistent/model"


def cli(args) -> tuple[int, list[str]]:
    result = CliRunner().invoke(run_command, [*map(str, args)])
    assert "Traceback" not in result.output, result.output
    return result.exit_code, result.stderr.strip().splitlines()


@pytest.mark.parametrize("args, sentence", [
    (["a=rtsp://x/1", "--snapshots", "/nonexistent/snaps"], "Error: --snapshots '/nonexistent/snaps' is not a folder"),
    (["a=rtsp://x/1", "--baseline-file", "/nonexistent/state.json"],
     "Error: --baseline-file '/nonexistent/state.json': the folder '/nonexistent' does not exist"),
    (["rtsp://x/1", "--baseline-file", "/nonexistent/state.json"],
     "Error: --baseline-file '/nonexistent/state.json': the folder '/nonexistent' does not exist"),
    (["a=rtsp://admin:{NO_SUCH_PASSWORD}@x/1"],
     "Error: camera 'a': stream 'rtsp://***@x/1' asks for the secret {NO_SUCH_PASSWORD}, which is neither"),
    (["a=rtsp://x/1", "--webhook", "https://hooks.local/in?token={NO_SUCH_TOKEN}"],
     "Error: --webhook 'https://hooks.local/in?token=***' asks for the secret {NO_SUCH_TOKEN}"),
    (["a=rtsp://x/1", "--ha-discovery"], "Error: --ha-discovery needs a broker; give it with --mqtt URL"),
    (["rtsp://x/1", "--mqtt-user", "box"], "Error: --mqtt-user needs a broker"),
    (["a=rtsp://x/1", "--mqtt", "mqtt://u:secret@broker.local", "--mqtt-ca", "/nonexistent/ca.pem"],
     "Error: --mqtt-ca, --mqtt-cert, --mqtt-key and --mqtt-insecure are TLS settings, and --mqtt "
     "'mqtt://***@broker.local' is plain TCP"),
])
def test_mistakes_are_named_before_the_model_loads(tmp_path, monkeypatch, args, sentence):
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    status, stderr = cli([*args, "--model", NO_MODEL, "-q"])
    assert status == 1 and len(stderr) == 1 and stderr[0].startswith(sentence), stderr
    assert ":secret@" not in stderr[0]


def test_config_keys_for_tls_and_home_assistant(tmp_path, monkeypatch):
    config = tmp_path / "cameras.yaml"
    config.write_text('cameras:\n  - {name: gate, source: "rtsp://x/1"}\n'
                      'mqtt: {url: "mqtts://broker.local", user: box, password: "{MQTT_PASSWORD}", ca: /nonexistent.pem}\n'
                      'homeassistant: {discovery: true, prefix: ha}\n')
    monkeypatch.setenv("MQTT_PASSWORD", "from-env")
    status, stderr = cli(["--config", config, "--model", NO_MODEL, "-q"])
    assert (status, stderr) == (1, ["Error: --mqtt-ca '/nonexistent.pem' does not exist; check the path"])
    config.write_text(config.read_text().replace("discovery: true", "discovery: yes please"))
    status, stderr = cli(["--config", config, "--model", NO_MODEL, "-q"])
    assert status == 1 and "'discovery' of 'homeassistant' must be true or false" in stderr[0]


class LostWatch:
    smoothing = SimpleNamespace(score=0.676, smoothed=0.7)
    verdict = SimpleNamespace(changes={"sharpness": {"value": 41.0, "normal": 40.0}})

    def __init__(self, state: str):
        self.state = state


def test_a_lost_camera_has_no_score_in_the_metrics():
    feeds = [SimpleNamespace(camera=SimpleNamespace(name=name), watch=LostWatch(state),
                             seconds_since_frame=lambda now: 55.0,
                             counts=lambda: dict(read=1, scored=1, dropped=0, skipped=0, not_scored=0, reconnects=0))
             for name, state in (("gate", "lost"), ("dock", "ok"))]
    registry = CollectorRegistry()
    registry.register(FleetCollector(lambda: feeds, ("ok", "lost"), ("source_lost",), Counter()))
    page = generate_latest(registry).decode()
    assert 'gamma_edge_score{camera="dock"} 0.676' in page and 'camera="gate"} 0.676' not in page
    assert 'gamma_edge_score_smoothed{camera="gate"}' not in page
    assert 'gamma_edge_seconds_since_last_frame{camera="gate"} 55.0' in page
    assert 'gamma_edge_signal{camera="dock",of="value",signal="sharpness"} 41.0' in page
    assert 'gamma_edge_signal{camera="gate"' not in page


def test_one_source_keeps_its_normal_under_the_address_without_its_password(tmp_path):
    scorer = Scorer(make_model(tmp_path / "model"), crops="center")
    state = tmp_path / "state.json"
    source = parse_source("rtsp://admin:Pw-123@cam.local/s1")
    capture = FakeCapture([textured_image(120, 160, seed=i) for i in range(20)], delay=0.01)
    runner = StreamRunner(scorer, source, RunOptions(baseline_file=str(state), max_frames=20, settle_frames=0),
                          open_source=lambda s: capture, log=lambda line: None)
    summary = runner.run()                          # --max-frames ends it
    text = state.read_text()
    assert "Pw-123" not in text and list(json.loads(text)["cameras"]) == ["rtsp://***@cam.local/s1"]
    assert summary.source == "rtsp://***@cam.local/s1" and summary.scored > 0
