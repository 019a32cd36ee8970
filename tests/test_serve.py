"""`gamma-edge serve` through clients we did not write: tritonclient.http for the Open Inference Protocol
(health, metadata, crop tensors, encoded images), plain HTTP for POST /score and /metrics. The reference
is `gamma-edge score` on the same files: the same scores within 1e-6 (FP32)."""
from __future__ import annotations

import json
import threading
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from runtime_fixtures import make_model, reference_scores, textured_image

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
httpclient = pytest.importorskip("tritonclient.http")
from tritonclient.utils import InferenceServerException  # noqa: E402

SAMPLES = Path(__file__).resolve().parents[1] / "runtime" / "samples"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Sample PNGs, a JPEG, a photo with EXIF-free odd size, and one smaller than the crop."""
    root = tmp_path_factory.mktemp("images")
    paths = [SAMPLES / name for name in ("coins_pristine.png", "rocket_jpeg_5.png", "motorcycle_gaussian_blur_2.png")]
    cv2.imwrite(str(root / "photo.jpg"), textured_image(600, 900, seed=3), [cv2.IMWRITE_JPEG_QUALITY, 90])
    cv2.imwrite(str(root / "tall.png"), textured_image(700, 300, seed=4))
    cv2.imwrite(str(root / "small.png"), textured_image(90, 120, seed=5))
    return paths + [root / "photo.jpg", root / "tall.png", root / "small.png"]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from runtime import Scorer
    from runtime.serve.server import ModelServer, ServeOptions

    fake = make_model(tmp_path_factory.mktemp("fake") / "fake", scenes=("natural", "aigc"))
    scorers = {"demo": Scorer(), "fake": Scorer(fake)}
    running = ModelServer(scorers, ServeOptions(port=0, max_body_mb=12, body_timeout=1.0, header_timeout=1.0))
    running.start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def client(server):
    return httpclient.InferenceServerClient(server.url.removeprefix("http://"), concurrency=8)


def cli_scores(paths, *options) -> dict[str, dict]:
    """`gamma-edge score --format jsonl` on the files, as a user runs it: path -> record."""
    from gamma_edge.cli import main

    result = CliRunner().invoke(main, ["score", *map(str, paths), "--format", "jsonl", "-q", *options])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    return {record["path"]: record for record in records}


def images_input(datas, name="crops") -> "httpclient.InferInput":
    tensor = httpclient.InferInput(name, [len(datas)], "BYTES")
    tensor.set_data_from_numpy(np.array(datas, dtype=object), binary_data=True)
    return tensor


def crops_input(crops: np.ndarray, binary: bool = True) -> "httpclient.InferInput":
    tensor = httpclient.InferInput("crops", list(crops.shape), "UINT8")
    tensor.set_data_from_numpy(crops, binary_data=binary)
    return tensor


def test_health_and_metadata(client):
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("demo") and client.is_model_ready("fake", "1")
    assert client.get_server_metadata()["extensions"] == ["binary_tensor_data"]
    metadata = client.get_model_metadata("fake")
    assert metadata["versions"] == ["1"] and metadata["platform"] == "onnxruntime_onnx"
    assert metadata["inputs"] == [{"name": "crops", "datatype": "UINT8", "shape": [-1, 224, 224, 3]}]
    assert metadata["outputs"] == [{"name": "scores", "datatype": "FP32", "shape": [-1, 2]}]
    assert metadata["parameters"]["scenes"] == "natural,aigc"
    with pytest.raises(InferenceServerException, match="model 'nope' is not served here; this server has demo, fake"):
        client.get_model_metadata("nope")
    with pytest.raises(InferenceServerException, match="only version 1"):
        client.get_model_metadata("demo", "2")


def test_encoded_images_score_as_gamma_edge_score(client, server, files):
    """BYTES images through tritonclient, and multipart uploads to /score: gamma-edge score's numbers."""
    expected = cli_scores(files)
    datas = [path.read_bytes() for path in files]
    result = client.infer("demo", [images_input(datas)])
    scores = result.as_numpy("scores")
    assert scores.shape == (len(files), 1) and scores.dtype == np.float32
    for path, row in zip(files, scores):
        assert abs(row[0] - expected[str(path)]["score"]) <= 1e-6, path
    assert "image 5: 120x90 pixels: enlarged" in result.get_response()["parameters"]["warnings"]

    answer = post_multipart(server.url + "/score", [(path.name, path.read_bytes()) for path in files])
    assert answer["model"] == "demo" and answer["crops"] == "five"
    for path, record in zip(files, answer["results"]):
        assert record["name"] == path.name
        assert abs(record["score"] - expected[str(path)]["score"]) <= 1e-6
        assert record["crops"]["count"] == 5 and len(record["crops"]["boxes"]) == 5
        assert (record["warning"] is None) == ("warning" not in expected[str(path)])
    assert answer["results"][0]["crops"] == {"count": 5, "resized": [406, 320], "boxes": [
        [91, 48, 224, 224], [0, 0, 224, 224], [182, 0, 224, 224], [0, 96, 224, 224], [182, 96, 224, 224]]}


def test_crop_tensors_in_binary_and_json(client, server, files):
    from runtime import Scorer

    scorer = Scorer()
    crops = scorer.crops_of(str(files[0]))
    direct = scorer.backend.run(crops)
    for binary in (True, False):
        asked = httpclient.InferRequestedOutput("scores", binary_data=binary)
        result = client.infer("demo", [crops_input(crops, binary)], outputs=[asked], request_id="r7")
        assert np.abs(result.as_numpy("scores") - direct).max() <= 1e-6
        assert result.get_response()["id"] == "r7"
    # the fake graph has a numpy twin; 40 crops go to the backend in chunks of --batch (16 crops)
    fake = server.state.models["fake"].scorer
    many = np.concatenate([fake.crops_of(str(path)) for path in files[:4] + files[:4]])
    result = client.infer("fake", [crops_input(many)], request_compression_algorithm="gzip")
    np.testing.assert_allclose(result.as_numpy("scores"), reference_scores(many, ("natural", "aigc")), atol=1e-5)


def test_concurrent_requests_and_metrics(server, files):
    """32 clients at once: every one answered with the same score; the metrics count requests, backend
    calls and their batch sizes, the queue and the process (how many calls they shared is timing-
    dependent here, the test's clients share the server's process: test_serve_bad_input.py checks it)."""
    data = files[3].read_bytes()
    before = server.batchers["demo"].calls
    answers, barrier = [], threading.Barrier(32)

    def one():
        barrier.wait()
        request = urllib.request.Request(server.url + "/score", data=data, headers={"Content-Type": "image/jpeg"})
        answers.append(json.loads(urllib.request.urlopen(request, timeout=60).read()))

    threads = [threading.Thread(target=one) for _ in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(answers) == 32 and len({answer["results"][0]["score"] for answer in answers}) == 1
    calls = server.batchers["demo"].calls - before
    metrics = urllib.request.urlopen(server.url + "/metrics").read().decode()
    assert 'gamma_edge_serve_requests_total{code="200",model="demo",route="score"}' in metrics
    assert f'gamma_edge_serve_batch_requests_count{{model="demo"}} {float(before + calls)}' in metrics
    assert 'gamma_edge_serve_queue_crops{model="demo"} 0.0' in metrics
    assert 'gamma_edge_serve_images_total{model="demo",outcome="scored"}' in metrics
    assert "process_resident_memory_bytes" in metrics


def test_fake_model_served_under_its_own_scene(server, files):
    answer = post_multipart(server.url + "/score?model=fake&scene=aigc", [("a.png", files[0].read_bytes())])
    expected = cli_scores(files[:1], "--model", str(server.state.models["fake"].scorer.manifest.folder),
                          "--scene", "aigc")
    assert answer["scene"] == "aigc"
    assert abs(answer["results"][0]["score"] - expected[str(files[0])]["score"]) <= 1e-6
    assert set(answer["results"][0]["scores"]) == {"natural", "aigc"}


def post_multipart(url: str, files: list[tuple[str, bytes]]) -> dict:
    boundary = "gamma-edge-test-boundary"
    parts = []
    for name, data in files:
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{name}"\r\n'
                     f"Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n")
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    request = urllib.request.Request(url, data=body,
                                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    return json.loads(urllib.request.urlopen(request, timeout=60).read())
