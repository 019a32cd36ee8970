"""The Ray Serve deployment on a local Ray: the same protocol and the same scores as `gamma-edge serve`,
with concurrent requests gathered by @serve.batch. Skipped where ray[serve] is not installed."""
from __future__ import annotations

import json
import socket
import threading
import urllib.request
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ray.serve")
pytest.importorskip("starlette")
httpclient = pytest.importorskip("tritonclient.http")

from runtime_fixtures import make_model  # noqa: E402

SAMPLES = Path(__file__).resolve().parents[1] / "runtime" / "samples"
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def ray_serve(tmp_path_factory):
    import ray
    from ray import serve

    from runtime.serve.ray_deployment import build_deployment
    from runtime.shipped import DEMO_MODEL

    fake = make_model(tmp_path_factory.mktemp("ray") / "fake", scenes=("natural", "aigc"))
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(build_deployment({"demo": DEMO_MODEL, "fake": fake}, max_batch_size=8, batch_wait_timeout_s=0.01),
              route_prefix="/")
    yield f"127.0.0.1:{port}"
    serve.shutdown()
    ray.shutdown()


def test_ray_deployment_speaks_the_protocol_with_the_local_scores(ray_serve):
    from runtime import Scorer

    client = httpclient.InferenceServerClient(ray_serve, concurrency=8)
    assert client.is_server_live() and client.is_model_ready("demo") and client.is_model_ready("fake")
    assert client.get_model_metadata("fake")["outputs"][0]["shape"] == [-1, 2]
    paths = sorted(SAMPLES.glob("*_pristine.png"))
    tensor = httpclient.InferInput("crops", [len(paths)], "BYTES")
    tensor.set_data_from_numpy(np.array([p.read_bytes() for p in paths], dtype=object))
    scores = client.infer("demo", [tensor]).as_numpy("scores")[:, 0]
    expected = [row.score for row in Scorer().score_many([str(p) for p in paths])]
    assert np.abs(scores - np.array(expected)).max() <= 1e-6

    # concurrent uploads, batched by @serve.batch: all answered, each with its own image's score
    answers, lock = {}, threading.Lock()

    def one(path):
        request = urllib.request.Request(f"http://{ray_serve}/score?model=demo", data=path.read_bytes(),
                                         headers={"Content-Type": "image/png"})
        answer = json.loads(urllib.request.urlopen(request, timeout=60).read())
        with lock:
            answers[path] = answer["results"][0]["score"]

    threads = [threading.Thread(target=one, args=(path,)) for path in paths * 3]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(answers) == len(paths)
    assert all(abs(answers[p] - e) <= 1e-6 for p, e in zip(paths, expected))
    request = urllib.request.Request(f"http://{ray_serve}/score", data=b"not an image",
                                     headers={"Content-Type": "image/png"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=60)
    assert refused.value.code == 400 and "not an image" in json.loads(refused.value.read())["error"]
