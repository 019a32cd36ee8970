"""The fleet's live page (`gamma-edge run ... --web HOST:PORT`, runtime/outputs/web.py), against
real parts on 127.0.0.1, each started and stopped here: MJPEG camera servers (tests/stream_servers.py),
the page's own server, and Debian's chromium in headless mode driven over the DevTools protocol
(tests/browser.py). The embedded demo model rates blur, so a blurring camera really degrades."""
import base64
import http.client
import io
import json
import os
import shutil
import socket
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

import runtime
from runtime import Scorer
from runtime.commands.run import run_command
from runtime.fleet.config import Camera
from runtime.fleet.runner import FleetOptions, FleetRunner
from runtime.outputs.web import TOKEN_ENV, History, parse_listen
from browser import Browser, chromium_path
from runtime_fixtures import FakeCapture, make_model, textured_image
from stream_servers import MjpegServer, Serve, blur_ramp, live_scene, scripted

PHOTO = Path(runtime.__file__).resolve().parent / "samples" / "motorcycle_pristine.png"
SECRET = "hunter2-camera-password"
TOKEN = "correct-horse-battery-staple"


@pytest.fixture(autouse=True)
def no_token_in_the_environment(monkeypatch):
    monkeypatch.delenv(TOKEN_ENV, raising=False)


@pytest.fixture(scope="module")
def fake_model(tmp_path_factory):
    return make_model(tmp_path_factory.mktemp("fake"))


def run_in_thread(runner: FleetRunner) -> threading.Thread:
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while (runner.web.server is None or not runner.web.server.port) and time.monotonic() < deadline:
        time.sleep(0.02)
    return thread


def get(port: int, path: str, headers: dict | None = None) -> tuple[int, dict, bytes]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def first_stream_message(port: int, headers: dict) -> dict:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/api/stream", headers=headers)
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/event-stream")
        for line in response:
            if line.startswith(b"data: "):
                return json.loads(line[6:])
    raise AssertionError("the stream closed without data")


# -- in a real browser --------------------------------------------------------------------------
def keep_artefact(path: Path) -> None:
    """CI keeps the screenshot (.ci/run sets the folder); locally it stays in pytest's tmp_path."""
    folder = os.environ.get("GAMMA_EDGE_TEST_ARTEFACTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(folder) / path.name)


TILES = "[...document.querySelectorAll('.tile')].map(t => [t.dataset.camera, t.dataset.state])"


def test_the_page_in_chromium_shows_every_camera_and_a_degrading_one_live(tmp_path):
    if chromium_path() is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing: .ci/run installs it (apt-get install chromium)")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    photo = cv2.resize(cv2.imread(str(PHOTO)), (320, 240), interpolation=cv2.INTER_AREA)
    blurring = scripted(live_scene(photo), [(80, 999, blur_ramp(photo, 80, 20, sigma=6.0))])   # from 4 s on
    servers = {"gate": MjpegServer([Serve(1000, interval=0.05, picture=live_scene(photo, seed=1))]),
               "dock": MjpegServer([Serve(1000, interval=0.05, picture=live_scene(photo, seed=2))]),
               "yard": MjpegServer([Serve(1000, interval=0.05, picture=blurring)])}
    for server in servers.values():
        server.__enter__()
    # a password in a source never reaches the page (the MJPEG servers ignore it)
    cameras = [Camera(name, server.url.replace("http://", f"http://viewer:{SECRET}@"), smooth=3, threshold=0.5,
                      hold_s=1.0) for name, server in servers.items()]
    runner = FleetRunner(Scorer(crops="center", threads=2), cameras,
                         FleetOptions(jsonl=io.StringIO(), web="127.0.0.1:0", duration_s=40, backoff=(0.05, 0.2)),
                         log=lambda line: None)
    runner.web.view.history_step_s = 1.0        # a sparkline within seconds (a point a minute in a real run)
    thread = None
    try:
        with Browser(height=720) as browser:        # started first: its start-up time varies most
            thread = run_in_thread(runner)
            page = browser.open(f"http://127.0.0.1:{runner.web.port}/")
            seen = page.wait_for(f"(t => t.length === 3 && t.every(([, s]) => s === 'ok') && t)({TILES})", 15)
            assert seen == [["gate", "ok"], ["dock", "ok"], ["yard", "ok"]], page.evaluate(TILES)
            page.evaluate("window.sameDocument = true")          # gone if the page reloads
            began = time.monotonic()
            assert page.wait_for(f"Object.fromEntries({TILES}).yard === 'degraded'", 15), page.evaluate(TILES)
            assert time.monotonic() - began < 12
            assert page.evaluate("window.sameDocument === true && performance.getEntriesByType('navigation').length")
            assert dict(page.evaluate(TILES)) == {"gate": "ok", "dock": "ok", "yard": "degraded"}
            assert page.wait_for("[...document.querySelectorAll('.tile img')].every(i => i.naturalWidth > 0)", 10)
            assert "degraded at" in page.evaluate("document.querySelector('[data-camera=yard] .why').textContent")
            assert page.evaluate("document.querySelector('#events').textContent").count("degraded") == 1
            page.wait_for("document.querySelectorAll('[data-camera=yard] .spark polyline').length", 5)
            for _ in range(2):      # the second new picture was encoded after the event (one per 2 s at most)
                shown_then = page.evaluate("document.querySelector('[data-camera=yard] img').src")
                page.wait_for(f"document.querySelector('[data-camera=yard] img').src !== {json.dumps(shown_then)}", 5)
            time.sleep(0.3)
            screenshot = page.screenshot(tmp_path / "fleet-page.png")
            shown = page.evaluate("document.documentElement.outerHTML")
        keep_artefact(screenshot)
        assert screenshot.stat().st_size > 20_000
        assert SECRET not in shown and "video.mjpg" not in shown
        status, _, body = get(runner.web.port, "/api/fleet")
        assert status == 200 and SECRET.encode() not in body
        # without a token, a page answers to this machine's own name only (no DNS rebinding)
        connection = http.client.HTTPConnection("127.0.0.1", runner.web.port, timeout=10)
        connection.request("GET", "/api/fleet", headers={"Host": f"cameras.example.com:{runner.web.port}"})
        refused = connection.getresponse()
        assert refused.status == 403 and b"yard" not in refused.read()
        connection.close()
    finally:
        runner.stop.set()
        if thread is not None:
            thread.join(30)
        for server in servers.values():
            server.stop()


# -- the JSON endpoint, the stream, the pictures and the token ---------------------------------------
def test_json_stream_and_pictures_behind_a_token_and_nothing_leaked(fake_model, tmp_path):
    frames = [textured_image(480, 960, seed=i) for i in range(8)]
    sources = {"gate": FakeCapture(frames * 100, delay=0.02), "dock": FakeCapture(frames * 100, delay=0.02)}
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    cameras = [Camera(name, f"rtsp://admin:{SECRET}@10.0.0.11/{name}") for name in sources]
    said = []
    runner = FleetRunner(Scorer(fake_model, crops="center"), cameras,
                         FleetOptions(jsonl=io.StringIO(), web="127.0.0.1:0", web_token_file=str(token_file),
                                      duration_s=30, settle_frames=0),
                         open_source=lambda source: sources[source.text.rsplit("/", 1)[1]], log=said.append)
    thread = run_in_thread(runner)
    try:
        port = runner.web.port
        assert f"page on http://127.0.0.1:{port}/; it asks for the token" in said and not any(TOKEN in s for s in said)
        time.sleep(0.5)
        assert runner.web.server.snapshots.encoded == 0              # no one has looked yet: nothing encoded
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        basic = {"Authorization": "Basic " + base64.b64encode(f"anyone:{TOKEN}".encode()).decode()}
        for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic " + base64.b64encode(
                b"anyone:" + TOKEN[:-1].encode()).decode()}, {"Authorization": "Digest x"}):
            for path in ("/", "/api/fleet", "/api/snapshot/gate.jpg", "/api/stream"):
                status, response_headers, body = get(port, path, headers)
                assert status == 401 and response_headers["WWW-Authenticate"].startswith("Basic ")
                assert b"gate" not in body and SECRET.encode() not in body and TOKEN.encode() not in body
        status, _, body = get(port, "/api/fleet", basic)
        assert status == 200
        data = json.loads(body)
        assert [c["name"] for c in data["cameras"]] == ["gate", "dock"]
        assert all(c["state"] in ("starting", "ok") and c["counts"]["read"] > 0 for c in data["cameras"])
        assert data["host"]["precision"] == "fp32" and "ONNX Runtime" in data["host"]["engine"]
        assert set(data["cameras"][0]["history"]) == {"step_s", "first_t", "values"}
        shown = [get(port, path, bearer)[2] for path in ("/", "/page.js", "/page.css", "/api/history")]
        shown += [body, json.dumps(first_stream_message(port, bearer)).encode()]
        assert not any(SECRET.encode() in text or b"10.0.0.11" in text for text in shown)
        # a picture: JPEG, scaled to a tile; asked for again at once, it is the same one, not encoded again
        status, headers, jpeg = get(port, "/api/snapshot/gate.jpg", bearer)
        assert status == 200 and headers["Content-Type"] == "image/jpeg"
        assert cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR).shape == (240, 480, 3)
        assert get(port, "/api/snapshot/gate.jpg", bearer)[2] == jpeg and runner.web.server.snapshots.encoded == 1
        assert get(port, "/api/snapshot/nobody.jpg", bearer)[0] == 404
        assert get(port, "/etc/passwd", bearer)[0] == 404
    finally:
        runner.stop.set()
        thread.join(30)
    assert not thread.is_alive()


# -- a user's mistakes, one sentence each -------------------------------------------------------------
def cli(args, env: dict | None = None) -> tuple[int, list[str]]:
    result = CliRunner().invoke(run_command, [*map(str, args)], env=env)
    assert "Traceback" not in result.output, result.output
    return result.exit_code, result.stderr.strip().splitlines()


def test_a_port_in_use_is_one_sentence(fake_model):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        status, stderr = cli(["rtsp://127.0.0.1:9/x", "--model", fake_model, "-q", "--web", f"127.0.0.1:{port}"])
    assert (status, stderr) == (1, [f"Error: --web 127.0.0.1:{port} is already in use; choose another port or "
                                    f"stop the program holding it"])


def test_another_address_without_a_token_is_refused_before_anything_starts(fake_model, tmp_path):
    status, stderr = cli(["gate=rtsp://127.0.0.1:9/x", "--model", fake_model, "-q", "--web", "0.0.0.0:0"])
    assert status == 1 and stderr == [f"Error: --web 0.0.0.0:0 lets other machines see the cameras, so it needs a "
                                      f"token: write one to a file and give --web-token-file FILE (or set "
                                      f"{TOKEN_ENV}), or serve on 127.0.0.1"]
    config = tmp_path / "cameras.yaml"
    config.write_text("cameras:\n  - {name: gate, source: 'rtsp://127.0.0.1:9/x'}\nweb: {listen: '0.0.0.0:0'}\n")
    status, stderr = cli(["--config", config, "--model", fake_model, "-q"])
    assert status == 1 and stderr[0].startswith("Error: --web 0.0.0.0:0 lets other machines see the cameras")
    config.write_text("cameras:\n  - {name: gate, source: 'rtsp://127.0.0.1:9/x'}\nweb: {listen: ':0', tokn: x}\n")
    status, stderr = cli(["--config", config, "--model", fake_model, "-q"])
    assert status == 1 and "'web' has an unknown key 'tokn'; known keys: listen, token_file" in stderr[0]


@pytest.mark.parametrize("args, sentence", [
    (["--web", "camera-page"], "Error: --web 'camera-page' is not an address to serve the page on; write HOST:PORT"),
    (["--web", "0.0.0.0:8080", "--web-token-file", "/nonexistent/token"],
     "Error: the page's token file '/nonexistent/token' cannot be read (No such file or directory)"),
    (["--web", "127.0.0.1:0"], f"Error: {TOKEN_ENV} holds a token shorter than 12 characters"),
])
def test_bad_addresses_and_tokens_are_one_sentence(fake_model, args, sentence):
    status, stderr = cli(["gate=rtsp://127.0.0.1:9/x", "--model", fake_model, "-q", *args],
                         env={TOKEN_ENV: "short"} if TOKEN_ENV in sentence else None)
    assert status == 1 and len(stderr) == 1 and stderr[0].startswith(sentence), stderr


# -- the parts ------------------------------------------------------------------------------------
def test_addresses_default_to_this_machine():
    assert parse_listen("8080") == parse_listen(":8080") == parse_listen("localhost:8080")
    assert parse_listen("8080").host == "127.0.0.1" and parse_listen("8080").local
    assert (parse_listen("[::1]:9").host, parse_listen("[::1]:9").local) == ("::1", True)
    assert not parse_listen("0.0.0.0:80").local and not parse_listen("10.0.0.5:80").local


def test_history_keeps_one_mean_a_step_with_gaps_and_forgets_the_oldest():
    history = History(step_s=60, span_s=180)
    for t, value in ((0, 0.8), (30, 0.6), (61, 0.5), (200, 0.4)):
        history.add(t, value)
    assert history.as_dict() == {"step_s": 60, "first_t": 60, "values": [0.5, None, 0.4]}
    assert History().as_dict()["values"] == []


def test_the_configs_web_table(tmp_path):
    from runtime.fleet.config import load_config

    config = tmp_path / "cameras.yaml"
    config.write_text("cameras:\n  - {name: gate, source: 'rtsp://x/1'}\nweb: {listen: 8080, token_file: /etc/t}\n")
    assert load_config(config).web == {"listen": "8080", "token_file": "/etc/t"}
