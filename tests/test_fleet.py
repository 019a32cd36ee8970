"""A fleet of cameras in one `gamma-edge run`, against real parts on 127.0.0.1, each started and
stopped here: MJPEG camera servers (tests/stream_servers.py) that stay healthy, drop, stall, blur,
freeze or get covered; an MQTT broker process (amqtt) with a paho subscriber; the Prometheus
endpoint scraped over HTTP and read with prometheus-client's own parser. The embedded demo model
rates blur, so a blurring camera really scores lower."""
import io
import json
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2
import paho.mqtt.client as paho
import pytest
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families

import runtime
from runtime import Scorer
from runtime.commands.run import run_command
from runtime.watch.camera import CameraWatch, Hold
from runtime.fleet.runner import FleetOptions, FleetRunner
from runtime.fleet.config import Camera, cameras_from_sources, load_config
from mqtt_brokers import free_port, wait_for_port, wait_until
from runtime_fixtures import CaptureSequence, FakeCapture, make_model, textured_image
from stream_servers import MjpegServer, Serve, blur_ramp, covered, frozen_at, live_scene, scripted

REPO = Path(__file__).resolve().parents[1]
PHOTO = Path(runtime.__file__).resolve().parent / "samples" / "motorcycle_pristine.png"
INTERVAL = 0.05                     # the test cameras deliver 20 frames/s
FAST = dict(backoff=(0.05, 0.2), open_timeout=3.0, read_timeout=1.0)


# -- real parts -------------------------------------------------------------------------------
@contextmanager
def mqtt_broker(folder: Path, port: int):
    """A real MQTT broker process (amqtt) on 127.0.0.1:port, anonymous, no persistence."""
    config = folder / f"broker-{port}.yaml"
    config.write_text(f"listeners:\n  default:\n    type: tcp\n    bind: 127.0.0.1:{port}\n"
                      f"plugins:\n  amqtt.plugins.authentication.AnonymousAuthPlugin:\n    allow_anonymous: true\n")
    process = subprocess.Popen([sys.executable, "-m", "amqtt.scripts.broker_script", "-c", str(config)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, 30)
        yield f"mqtt://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()


class Subscriber:
    """A paho client subscribed to everything under gamma-edge/: (topic, payload, retained) in order."""

    def __init__(self, port: int, topic: str = "gamma-edge/#"):
        self.messages: list[tuple[str, str, bool]] = []
        self.subscribed = threading.Event()
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2)
        self.client.on_connect = lambda client, *_: client.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda *_: self.subscribed.set()
        self.client.on_message = lambda _c, _u, m: self.messages.append((m.topic, m.payload.decode(), bool(m.retain)))
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert self.subscribed.wait(10), "the subscriber could not subscribe"

    def wait_for(self, predicate, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if predicate(list(self.messages)):
                return True
            time.sleep(0.05)
        return False

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def scrape(port: int) -> dict:
    """{(metric sample name, labels as a sorted tuple): value}, read with the Prometheus text parser."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def value(samples: dict, name: str, **labels) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


@pytest.fixture(scope="module")
def demo():
    return Scorer(crops="center", threads=2)


@pytest.fixture(scope="module")
def photo():
    return cv2.resize(cv2.imread(str(PHOTO)), (320, 240), interpolation=cv2.INTER_AREA)


@pytest.fixture(scope="module")
def fake_model(tmp_path_factory):
    return make_model(tmp_path_factory.mktemp("fake"))


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    port = free_port()
    with mqtt_broker(tmp_path_factory.mktemp("broker"), port) as url:
        yield port, url


def run_in_thread(runner: FleetRunner) -> tuple[threading.Thread, dict]:
    result = {}
    thread = threading.Thread(target=lambda: result.update(summary=runner.run()), daemon=True)
    thread.start()
    return thread, result


def records_of(lines: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in lines.getvalue().splitlines()]


QUALITY_EVENTS = {"degraded", "recovered", "source_lost", "source_back", "frozen", "unfrozen", "covered", "uncovered"}


def quality_events(records: list[dict], camera: str) -> list[str]:
    return [r["event"] for r in records if r.get("camera") == camera and r.get("event") in QUALITY_EVENTS]


# -- the fleet against real cameras, broker and scraper -------------------------------------------
def camera_servers(photo) -> dict[str, MjpegServer]:
    scene = live_scene(photo)
    frames = 400                          # 20 s at most; the test stops well before
    spans = {                             # frames 40-119 (2 s to 6 s into the stream)
        "blurry": [(40, 119, blur_ramp(photo, 40, 20, sigma=6.0))],
        "frozen": [(40, 119, frozen_at(scene, 40))],
        "covered": [(40, 119, covered())],
    }
    servers = {name: MjpegServer([Serve(frames, interval=INTERVAL, picture=live_scene(photo, seed=seed))])
               for name, seed in (("healthy1", 1), ("healthy2", 2))}
    servers.update({name: MjpegServer([Serve(frames, interval=INTERVAL, picture=scripted(scene, span))])
                    for name, span in spans.items()})
    servers["dropping"] = MjpegServer([Serve(40, interval=INTERVAL, picture=scene),
                                       Serve(frames, delay=1.5, interval=INTERVAL, picture=scene)])
    servers["stalling"] = MjpegServer([Serve(40, interval=INTERVAL, picture=scene, then="stall"),
                                       Serve(frames, interval=INTERVAL, picture=scene)])
    return servers


EXPECTED = {"healthy1": [], "healthy2": [], "blurry": ["degraded", "recovered"],
            "dropping": ["source_lost", "source_back"], "stalling": ["source_lost", "source_back"],
            "frozen": ["frozen", "unfrozen"], "covered": ["covered", "uncovered"]}


def test_fleet_raises_each_cameras_events_to_jsonl_and_mqtt_and_serves_metrics(demo, photo, broker):
    port, url = broker
    servers = camera_servers(photo)
    for server in servers.values():
        server.__enter__()
    subscriber = Subscriber(port)
    lines = io.StringIO()
    cameras = [Camera(name, server.url, smooth=3, threshold=0.5, margin=0.05, hold_s=1.0)
               for name, server in servers.items()]
    runner = FleetRunner(demo, cameras, FleetOptions(jsonl=lines, mqtt=url, metrics_port=0, metrics_host="127.0.0.1",
                                                     duration_s=25, **FAST), log=lambda line: None)
    try:
        thread, result = run_in_thread(runner)
        deadline = time.monotonic() + 25
        while time.monotonic() < deadline and not all(
                quality_events(records_of(lines), name) == expected for name, expected in EXPECTED.items()):
            time.sleep(0.2)
        samples = scrape(runner.metrics.port)
        runner.stop.set()
        thread.join(30)
    finally:
        for server in servers.values():
            server.stop()
    records = records_of(lines)
    assert {name: quality_events(records, name) for name in EXPECTED} == EXPECTED

    # the healthy cameras kept their frame rate while others dropped, stalled and blurred
    started = runner.started
    for lost in ("dropping", "stalling"):
        gap = next(r for r in records if r.get("camera") == lost and r.get("event") == "gap")
        back = next(r for r in records if r.get("camera") == lost and r.get("event") == "reconnect")
        for healthy in ("healthy1", "healthy2"):
            sent = sum(started + gap["last_frame_t"] <= t <= started + back["t"]
                       for t in servers[healthy].frame_times[0])
            scored = sum(1 for r in records if r.get("camera") == healthy and "latency_ms" in r
                         and gap["last_frame_t"] <= r["t"] <= back["t"])
            assert sent >= 15 and scored >= 0.7 * sent, (lost, healthy, sent, scored)

    summaries = {r["camera"]: r for r in records if r.get("event") == "summary"}
    for name, summary in summaries.items():
        assert summary["frames_read"] == (summary["scored"] + summary["skipped"] + summary["dropped"]
                                          + summary["blank"] + summary["settling"]), name
    assert summaries["dropping"]["reconnects"] == summaries["stalling"]["reconnects"] == 1
    assert min(s["scored"] for s in summaries.values()) >= 60

    # MQTT: each camera's events on its event topic, as in the JSON lines; the last state retained
    total = sum(map(len, EXPECTED.values()))
    subscriber.wait_for(lambda m: sum(t.endswith("/event") for t, _, _ in m) >= total, 10)
    subscriber.close()
    for name in EXPECTED:
        sent = [json.loads(p) for t, p, _ in subscriber.messages if t == f"gamma-edge/{name}/event"]
        logged = [r for r in records if r.get("camera") == name and r.get("event") in QUALITY_EVENTS]
        assert [e["event"] for e in sent] == EXPECTED[name] and sent == logged
        assert all({"camera", "time", "score", "smoothed", "state", "previous"} <= set(e) for e in sent)
    late = Subscriber(port)            # joins after the run: the broker hands it the retained states
    assert late.wait_for(lambda m: len({t for t, _, r in m if r and t.endswith("/state")}) == len(EXPECTED), 10)
    states = {t.split("/")[1]: json.loads(p) for t, p, r in late.messages if r and t.endswith("/state")}
    assert {name: state["state"] for name, state in states.items()} == {name: "ok" for name in EXPECTED}
    assert ("gamma-edge/status", "offline", True) in late.messages      # said on a clean stop
    late.close()

    # metrics, scraped over HTTP while the fleet ran
    for name, expected in EXPECTED.items():
        assert sum(value(samples, "gamma_edge_camera_state", camera=name, state=s)
                   for s in ("starting", "ok", "lost", "covered", "frozen", "degraded")) == 1
        for event in QUALITY_EVENTS:
            assert value(samples, "gamma_edge_events_total", camera=name, event=event) == expected.count(event)
        assert 0 < value(samples, "gamma_edge_frames_scored_total", camera=name) <= summaries[name]["scored"]
        assert value(samples, "gamma_edge_frames_read_total", camera=name) <= summaries[name]["frames_read"]
        assert 0 <= value(samples, "gamma_edge_seconds_since_last_frame", camera=name) < 5
        assert 0 < value(samples, "gamma_edge_score", camera=name) < 1
    assert value(samples, "gamma_edge_reconnects_total", camera="dropping") == 1
    calls = value(samples, "gamma_edge_batch_images_count")
    assert calls > 0 and value(samples, "gamma_edge_inference_seconds_count") == calls
    scored = sum(value(samples, "gamma_edge_frames_scored_total", camera=name) for name in EXPECTED)
    assert abs(value(samples, "gamma_edge_batch_images_sum") - scored) <= len(EXPECTED)    # read a batch apart
    assert value(samples, "process_resident_memory_bytes") > 10e6
    assert value(samples, "process_cpu_seconds_total") > 0


# -- batching ----------------------------------------------------------------------------------
class RecordingBackend:
    """The real backend, slowed down so frames of every camera pile up while it runs."""

    def __init__(self, inner, seconds: float):
        self.inner, self.seconds, self.calls = inner, seconds, []
        self.precision = inner.precision

    def describe(self):
        return self.inner.describe()

    def run(self, crops):
        self.calls.append(len(crops))
        threading.Event().wait(self.seconds)
        return self.inner.run(crops)


def test_frames_of_all_cameras_share_backend_calls_and_images_are_never_split(fake_model):
    scorer = Scorer(fake_model, crops="five", batch=16)
    backend = scorer.backend = RecordingBackend(scorer.backend, 0.05)
    frames = {name: [textured_image(240, 320, seed=100 * k + i) for i in range(40)]
              for k, name in enumerate(("a", "b", "c", "d"))}
    captures = {name: FakeCapture(images, delay=0.01) for name, images in frames.items()}
    lines = io.StringIO()
    runner = FleetRunner(scorer, cameras_from_sources([f"{name}=rtsp://cam/{name}" for name in frames]),
                         FleetOptions(jsonl=lines, retries=0, settle_frames=0, backoff=(0.01, 0.01)),
                         open_source=lambda source: captures[source.text.rsplit("/", 1)[1]], log=lambda line: None)
    summary = runner.run()
    assert summary.ended == "source lost"            # every fake camera ran out of frames and --retries 0
    assert all(calls % 5 == 0 and calls <= 16 for calls in backend.calls)      # whole images, at most 16 crops
    assert max(backend.calls) == 15                  # three cameras' frames in one call
    records = records_of(lines)
    scored = [r for r in records if "latency_ms" in r]        # the frame records
    assert summary.batches == len(backend.calls) and summary.batch_images == len(scored) > len(backend.calls)
    for record in scored:                            # each frame got its own crops' score back
        image = frames[record["camera"]][record["frame"] - 1]
        assert record["score"] == pytest.approx(float(scorer.score_crops(scorer.preprocess(image))[0]), abs=1e-6)


# -- the state machine ---------------------------------------------------------------------------
def test_hold_needs_the_evidence_for_its_whole_time_and_the_band_restarts_it():
    hold = Hold(hold_s=2.0)
    assert [hold.update(t, True) for t in (0, 1, 1.9)] == [False] * 3 and not hold.active
    assert hold.update(2.0, True) and hold.active
    assert not hold.update(3.0, None) and not hold.update(3.5, False) and not hold.update(4.0, None)
    assert not hold.update(5.0, False) and hold.active            # the band restarted the count at 4.0
    assert hold.update(7.0, False) and not hold.active


def test_a_flickering_score_raises_nothing_and_a_lasting_drop_raises_one_event_each_way():
    watch = CameraWatch(Camera("gate", "rtsp://x", smooth=1, threshold=0.5, margin=0.1, hold_s=1.0), started=0.0)
    flicker = [0.45, 0.58, 0.44, 0.62, 0.49, 0.7] * 5
    assert [e for i, s in enumerate(flicker) for e in watch.on_score(i * 0.3, s)] == []
    assert watch.state == "ok"
    events = [e["event"] for i in range(20) for e in watch.on_score(10 + i * 0.2, 0.3)]   # below for 4 s
    events += [e["event"] for i in range(20) for e in watch.on_score(20 + i * 0.2, 0.55)]  # in the band
    assert events == ["degraded"] and watch.state == "degraded"
    events = [e["event"] for i in range(20) for e in watch.on_score(30 + i * 0.2, 0.65)]
    assert events == ["recovered"] and watch.state == "ok"


def test_lost_outranks_the_rest_and_restarts_their_counts():
    watch = CameraWatch(Camera("gate", "rtsp://x", smooth=1, threshold=0.5, hold_s=1.0), started=0.0)
    watch.on_score(0.0, 0.2)
    lost = watch.on_gap(0.5, "source stopped delivering frames")
    assert [e["event"] for e in lost] == ["source_lost"] and lost[0]["state"] == "lost"
    assert watch.on_gap(0.7, "again") == []                       # one outage, one event
    assert watch.on_score(1.2, 0.2) == [] and watch.state == "lost"   # the count restarted at the gap
    back = watch.on_reconnect(2.0, 1.5)
    assert [e["event"] for e in back] == ["source_back"] and back[0]["previous"] == "lost"


# -- the MQTT link -------------------------------------------------------------------------------
def test_unreachable_broker_the_run_goes_on_says_so_once_and_reconnects_when_it_returns(fake_model, tmp_path):
    scorer = Scorer(fake_model, crops="center")
    port, said = free_port(), []
    lines = io.StringIO()
    with MjpegServer([Serve(400, interval=INTERVAL)]) as camera:
        runner = FleetRunner(scorer, [Camera("gate", camera.url, hold_s=1.0)],
                             FleetOptions(jsonl=lines, mqtt=f"mqtt://127.0.0.1:{port}", duration_s=20, **FAST),
                             log=said.append)
        thread, result = run_in_thread(runner)
        try:
            assert wait_until(lambda: sum("latency_ms" in r for r in records_of(lines)) >= 20, 15)   # scoring goes on
            with mqtt_broker(tmp_path, port):
                subscriber = Subscriber(port)
                # paho retries every 1 to 5 s; on reconnecting the run says "online" and publishes its states
                assert subscriber.wait_for(lambda m: any(p == "online" for t, p, _ in m if t == "gamma-edge/status"), 15)
                assert subscriber.wait_for(lambda m: any(t == "gamma-edge/gate/state" for t, _, _ in m), 5)
                runner.stop.set()           # while the broker is up: its going away would be a new outage
                thread.join(30)
                subscriber.close()
        finally:
            runner.stop.set()
            thread.join(30)
    warnings = [line for line in said if "events are not delivered" in line]
    assert len(warnings) == 1 and warnings[0].startswith(f"warning: MQTT broker 127.0.0.1:{port}")
    assert any(line == f"MQTT broker 127.0.0.1:{port} reached again: events are delivered" for line in said)
    assert result["summary"].scored >= 20


def test_last_will_says_offline_when_the_box_goes_away(fake_model, broker):
    port, url = broker
    subscriber = Subscriber(port, topic="gamma-edge/status")
    with MjpegServer([Serve(2000, interval=INTERVAL)]) as camera:
        process = subprocess.Popen([sys.executable, "-m", "gamma_edge.cli", "run", f"gate={camera.url}", "--model",
                                    str(fake_model), "--mqtt", url, "-q", "--crops", "center"], cwd=REPO,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            online = subscriber.wait_for(lambda m: any(p == "online" for _, p, _ in m), 60)
            assert online, process.stderr.read1().decode() if process.poll() is not None else "no 'online'"
            count = len(subscriber.messages)
            process.kill()                   # no clean goodbye: the broker sends the last will
            assert subscriber.wait_for(lambda m: any(p == "offline" for _, p, _ in m[count:]), 15)
        finally:
            if process.poll() is None:
                process.kill()
            process.wait(10)
            subscriber.close()


# -- the webhook ---------------------------------------------------------------------------------
@contextmanager
def webhook_receiver():
    """A local HTTP endpoint keeping the JSON bodies POSTed to it."""
    bodies = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's name
            bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook", bodies
    finally:
        server.shutdown()
        server.server_close()


def test_webhook_receives_each_event_as_its_json_line(fake_model):
    scorer = Scorer(fake_model, crops="center")
    stop = threading.Event()
    frames = [textured_image(240, 320, seed=i) for i in range(20)]
    flaky = CaptureSequence([FakeCapture(frames, delay=0.01), None, FakeCapture(frames, delay=0.01)],
                            when_exhausted=stop.set)
    lines = io.StringIO()
    with webhook_receiver() as (url, bodies):
        FleetRunner(scorer, [Camera("gate", "rtsp://cam/gate")],
                    FleetOptions(jsonl=lines, webhook=url, backoff=(0.01, 0.02), settle_frames=0),
                    open_source=flaky, stop=stop, log=lambda line: None).run()
    records = records_of(lines)
    assert quality_events(records, "gate") == ["source_lost", "source_back", "source_lost"]
    assert bodies == [r for r in records if r.get("event") in QUALITY_EVENTS]


def test_cli_fleet_from_a_toml_config_ends_when_every_camera_has_its_frames(fake_model, tmp_path):
    with MjpegServer([Serve(100, interval=0.02)]) as gate, MjpegServer([Serve(100, interval=0.02)]) as dock:
        config = tmp_path / "cameras.toml"
        config.write_text(f'[defaults]\nhold_s = 1\n[[cameras]]\nname = "gate"\nsource = "{gate.url}"\n'
                          f'[[cameras]]\nname = "dock"\nsource = "{dock.url}"\ncrops = "five"\n'
                          f'[metrics]\nport = 0\nhost = "127.0.0.1"\n')
        result = CliRunner().invoke(run_command, ["--config", str(config), "--model", str(fake_model), "-q",
                                                  "--crops", "center", "--max-frames", "30", "--jsonl", "-"])
    assert "Traceback" not in result.output, result.output
    stderr = result.stderr.strip().splitlines()
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert result.exit_code == 0 and stderr[-1].startswith("finished: gate: 30 frames read (--max-frames)")
    assert stderr[0].startswith("metrics on http://127.0.0.1:")
    assert stderr[-4].startswith("gate: ") and stderr[-3].startswith("dock: ") and stderr[-2].startswith("fleet of 2:")
    assert records[-1]["event"] == "fleet_summary" and records[-1]["exit_status"] == 0
    summaries = {r["camera"]: r for r in records if r.get("event") == "summary"}
    assert {name: s["frames_read"] for name, s in summaries.items()} == {"gate": 30, "dock": 30}
    assert {r["camera"] for r in records if "latency_ms" in r} == {"gate", "dock"}


# -- a user's mistakes, one sentence each ---------------------------------------------------------
def cli(args) -> tuple[int, list[str]]:
    result = CliRunner().invoke(run_command, [*map(str, args)])
    assert "Traceback" not in result.output, result.output
    return result.exit_code, result.stderr.strip().splitlines()


YAML_CONFIG = """\
defaults: {smooth: 3, hold_s: 2}
cameras:
  - {name: gate, source: "rtsp://10.0.0.11/s1", threshold: 0.45, fps: 2}
  - {name: dock, source: "http://10.0.0.12/video.mjpg", crops: five}
mqtt: {url: "mqtt://127.0.0.1:1883"}
metrics: {port: 9108}
"""
TOML_CONFIG = """\
[defaults]
smooth = 3
hold_s = 2
[[cameras]]
name = "gate"
source = "rtsp://10.0.0.11/s1"
threshold = 0.45
fps = 2
[[cameras]]
name = "dock"
source = "http://10.0.0.12/video.mjpg"
crops = "five"
[mqtt]
url = "mqtt://127.0.0.1:1883"
[metrics]
port = 9108
"""


def test_yaml_and_toml_configs_say_the_same(tmp_path):
    (tmp_path / "a.yaml").write_text(YAML_CONFIG)
    (tmp_path / "a.toml").write_text(TOML_CONFIG)
    yaml_config, toml_config = load_config(tmp_path / "a.yaml"), load_config(tmp_path / "a.toml")
    assert yaml_config == toml_config
    gate, dock = yaml_config.cameras
    assert (gate.threshold, gate.fps, gate.smooth, gate.hold_s, dock.crops, dock.threshold) == (0.45, 2, 3, 2, "five", None)
    overridden = load_config(tmp_path / "a.yaml", overrides={"hold_s": 5.0, "crops": "center"}).cameras
    assert overridden[0].hold_s == 5.0 and [c.crops for c in overridden] == ["center", "five"]   # a camera's own wins
    assert yaml_config.metrics == {"port": 9108}


@pytest.mark.parametrize("text, sentence", [
    (YAML_CONFIG.replace("threshold:", "treshold:"),
     "camera 1 ('gate') has an unknown key 'treshold'; known keys: name, source, fps"),
    (YAML_CONFIG.replace("name: dock", "name: gate"), "two cameras are named 'gate'; give each camera its own name"),
    (YAML_CONFIG.replace("metrics:", "metrix:"), "has an unknown key 'metrix'; known keys: cameras, defaults, mqtt"),
    (YAML_CONFIG.replace("fps: 2", "fps: fast"), "'fps' of camera 1 ('gate') must be a number above 0, not 'fast'"),
    (YAML_CONFIG.replace("name: dock", "name: dock/2"), "the camera name 'dock/2' cannot be an MQTT topic level"),
])
def test_config_mistakes_are_one_sentence(fake_model, tmp_path, text, sentence):
    config = tmp_path / "cameras.yaml"
    config.write_text(text)
    status, stderr = cli(["--config", config, "--model", fake_model, "-q"])
    assert status == 1 and len(stderr) == 1 and stderr[0].startswith(f"Error: config '{config}'")
    assert sentence in stderr[0]


def test_duplicate_names_on_the_command_line_and_a_file_in_a_fleet(fake_model, tmp_path):
    status, stderr = cli(["a=rtsp://x/1", "a=rtsp://x/2", "--model", fake_model, "-q"])
    assert (status, stderr) == (1, ["Error: two cameras are named 'a'; give each camera its own name"])
    video = tmp_path / "clip.avi"
    video.write_bytes(b"")
    status, stderr = cli(["rtsp://x/1", video, "--model", fake_model, "-q"])
    assert status == 1 and stderr[0].startswith(f"Error: camera 'cam2': '{video}' is a video file; a fleet")


def test_metrics_port_in_use_is_one_sentence(fake_model):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        status, stderr = cli(["rtsp://127.0.0.1:9/x", "--model", fake_model, "-q", "--metrics-port", port,
                              "--metrics-host", "127.0.0.1"])
    assert (status, stderr) == (1, [f"Error: --metrics-port {port} is already in use on 127.0.0.1; "
                                    f"choose another port or stop the program holding it"])


def test_bad_broker_address_and_single_source_options_in_a_fleet(fake_model):
    status, stderr = cli(["a=rtsp://x/1", "--model", fake_model, "-q", "--mqtt", "ftp://host"])
    assert status == 1 and stderr == ["Error: --mqtt 'ftp://host' is not a broker address; write it as "
                                      "mqtt://HOST:PORT, mqtts://HOST:PORT for TLS (or HOST:PORT)"]
    status, stderr = cli(["a=rtsp://x/1", "--model", fake_model, "-q", "--webhook", "alerts.local/hook"])
    assert status == 1 and stderr == ["Error: --webhook 'alerts.local/hook' is not an http:// or https:// address"]
    status, stderr = cli(["a=rtsp://x/1", "b=rtsp://x/2", "--model", fake_model, "-q", "--save", "out.mp4"])
    assert status == 1 and stderr[0].startswith("Error: --save and --show take one source")
    assert CliRunner().invoke(run_command, []).exit_code == 2


def test_a_source_down_at_the_start_joins_when_it_comes_up(fake_model):
    scorer = Scorer(fake_model, crops="center")
    stop = threading.Event()
    late = CaptureSequence([None, None, FakeCapture([textured_image(240, 320, seed=i) for i in range(30)], delay=0.01)],
                           when_exhausted=stop.set)
    lines, said = io.StringIO(), []
    summary = FleetRunner(scorer, [Camera("late", "rtsp://cam/late")],
                          FleetOptions(jsonl=lines, backoff=(0.01, 0.02), settle_frames=0), open_source=late, stop=stop,
                          log=said.append).run()
    assert said[0] == "late: 'rtsp://cam/late' could not be opened; retrying in the background"
    assert quality_events(records_of(lines), "late")[:2] == ["source_lost", "source_back"]
    assert summary.cameras[0][1].scored >= 1
