"""`gamma-edge serve` against bad input and bad clients: each one is answered with a 4xx and a one-line
JSON error (or dropped, for a client too slow to send its request), and the others are served meanwhile.
Also: the token, overload (503 at once, never a lost or doubled answer), a graceful stop, the batcher
on its own, and the command line."""
from __future__ import annotations

import asyncio
import http.client
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from runtime_fixtures import make_model, textured_image

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

REPO = Path(__file__).resolve().parents[1]
MB = 2 ** 20


def bomb_png(width: int, height: int) -> bytes:
    """A valid gray PNG of zeros: a few hundred kB declaring width x height pixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    compressor, row = zlib.compressobj(9), b"\x00" * (width + 1)
    idat = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def infer_body(inputs: list[dict], binary: bytes = b"") -> tuple[bytes, dict]:
    header = json.dumps({"inputs": inputs}).encode()
    headers = {"Inference-Header-Content-Length": str(len(header))} if binary else {}
    return header + binary, headers


def bytes_elements(*items: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(item)) + item for item in items)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return make_model(tmp_path_factory.mktemp("m") / "fake")


@pytest.fixture(scope="module")
def server(model):
    from runtime import Scorer
    from runtime.serve.server import ModelServer, ServeOptions

    running = ModelServer({"fake": Scorer(model)}, ServeOptions(port=0, max_body_mb=12, body_timeout=1.0,
                                                                 header_timeout=1.0)).start()
    yield running
    running.stop()


def request(server, method: str, path: str, body=None, headers=None, timeout: float = 30):
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=timeout)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        answer = connection.getresponse()
        return answer.status, answer.read(), dict(answer.getheaders())
    finally:
        connection.close()


@pytest.fixture(scope="module")
def jpeg():
    return cv2.imencode(".jpg", textured_image(300, 400))[1].tobytes()


def bad_requests(jpeg: bytes):
    """(what, method, path, body, headers, status, words of the error)."""
    crop = bytes(224 * 224 * 3)
    return [
        ("truncated JPEG", "POST", "/score", jpeg[: len(jpeg) // 3], {"Content-Type": "image/jpeg"}, 400,
         "not an image OpenCV can decode"),
        ("PNG bomb", "POST", "/score", bomb_png(16000, 12000), {"Content-Type": "image/png"}, 400,
         "above the limit of 150 million"),
        ("10 MB of zeros", "POST", "/score", bytes(10 * MB), {"Content-Type": "application/octet-stream"}, 400,
         "not an image"),
        ("wrong Content-Type", "POST", "/score", jpeg, {"Content-Type": "text/plain"}, 415, "is not an image"),
        ("empty body", "POST", "/score", b"", {"Content-Type": "image/jpeg"}, 400, "empty"),
        ("multipart without a file", "POST", "/score",
         b"--b\r\nContent-Disposition: form-data; name=x\r\n\r\n1\r\n--b--\r\n",
         {"Content-Type": "multipart/form-data; boundary=b"}, 400, "holds no file"),
        ("JSON tensor of the wrong shape", "POST", "/v2/models/fake/infer", *infer_body([{
            "name": "crops", "datatype": "UINT8", "shape": [1, 4, 4, 3], "data": [0] * 48}]), 400,
         "takes UINT8 crops [N, 224, 224, 3]"),
        ("JSON tensor with too few values", "POST", "/v2/models/fake/infer", *infer_body([{
            "name": "crops", "datatype": "UINT8", "shape": [1, 224, 224, 3], "data": [1, 2, 3]}]), 400,
         "holds 3 values, but its shape says 150528"),
        ("JSON values out of range", "POST", "/v2/models/fake/infer", *infer_body([{
            "name": "crops", "datatype": "UINT8", "shape": [1, 1, 1, 3], "data": [1, 2, 300]}]), 400,
         "outside the UINT8 range"),
        ("wrong datatype", "POST", "/v2/models/fake/infer", *infer_body([{
            "name": "crops", "datatype": "FP32", "shape": [1, 224, 224, 3],
            "parameters": {"binary_data_size": 4 * len(crop)}}], bytes(4 * len(crop))), 400, "not FP32"),
        ("wrong input name", "POST", "/v2/models/fake/infer", *infer_body([{
            "name": "pixels", "datatype": "UINT8", "shape": [1, 224, 224, 3],
            "parameters": {"binary_data_size": len(crop)}}], crop), 400, "takes one input, 'crops'"),
        ("one bad image among good ones", "POST", "/v2/models/fake/infer", *infer_body([{
            "name": "crops", "datatype": "BYTES", "shape": [2],
            "parameters": {"binary_data_size": len(bytes_elements(jpeg, b"nope"))}}],
            bytes_elements(jpeg, b"nope")), 400, "image 1 of 2"),
        ("binary size beyond the body", "POST", "/v2/models/fake/infer", *infer_body([{
            "name": "crops", "datatype": "UINT8", "shape": [1, 224, 224, 3],
            "parameters": {"binary_data_size": len(crop) + 1}}], crop), 400, "does not hold"),
        ("not JSON", "POST", "/v2/models/fake/infer", b"\x89PNG...", {}, 400, "not valid JSON"),
        *malformed_binary(crop),
        ("corrupt gzip", "POST", "/v2/models/fake/infer", b"not gzip", {"Content-Encoding": "gzip"}, 400, "corrupt"),
        ("unknown model", "POST", "/v2/models/nope/infer", b"{}", {}, 404, "not served here"),
        ("unknown route", "GET", "/v1/models", None, {}, 404, "Not Found"),
        ("wrong method", "GET", "/score", None, {}, 405, "Method Not Allowed"),
    ]


def malformed_binary(crop: bytes):
    """Binary-extension requests whose header length or sizes do not fit the body (see bad_requests)."""
    header, _ = infer_body([{"name": "crops", "datatype": "UINT8", "shape": [1, 224, 224, 3],
                             "parameters": {"binary_data_size": len(crop)}}], crop)
    header = header[:-len(crop)]
    path, length = "/v2/models/fake/infer", "Inference-Header-Content-Length"

    def wrong(what, body, given, words):
        return (what, "POST", path, body, {length: given}, 400, words)

    short = json.dumps({"inputs": [{"name": "crops", "datatype": "UINT8", "shape": [2, 224, 224, 3],
                                    "parameters": {"binary_data_size": len(crop)}}]}).encode()
    negative = json.dumps({"inputs": [{"name": "crops", "datatype": "UINT8", "shape": [1, 224, 224, 3],
                                       "parameters": {"binary_data_size": -1}}]}).encode()
    return [
        wrong("header length not a number", header + crop, "12abc", "must be a number of bytes"),
        wrong("header length zero", header + crop, "0", "does not fit"),
        wrong("header length past the body", header + crop, str(len(header) + len(crop) + 1), "does not fit"),
        wrong("header length cutting the JSON", header + crop, str(len(header) - 5), "not valid JSON"),
        wrong("header length into the tensor", header + crop, str(len(header) + 5), "not valid JSON"),
        wrong("bytes no input claims", header + crop + b"xx", str(len(header)), "2 bytes that no input"),
        wrong("binary size short of the shape", short + crop, str(len(short)), "need 301056"),
        wrong("negative binary size", negative + crop, str(len(negative)), "claims -1 binary bytes"),
    ]


def test_bad_requests_get_one_line_and_the_server_keeps_serving(server, jpeg):
    for what, method, path, body, headers, status, words in bad_requests(jpeg):
        got, content, _ = request(server, method, path, body, headers)
        assert got == status, (what, got, content[:300])
        document = json.loads(content)
        assert list(document) == ["error"] and words in document["error"], (what, document)
        assert "\n" not in document["error"] and "Traceback" not in document["error"], what
    status, content, _ = request(server, "POST", "/score", jpeg, {"Content-Type": "image/jpeg"})
    assert status == 200 and json.loads(content)["results"][0]["score"] > 0


def test_bodies_over_the_limit_are_refused(server):
    """A declared length over the limit is refused before a byte of the body is read (a client that
    sends 'Expect: 100-continue', as curl does for large bodies, never sends it); a chunked body is
    refused once it passes the limit. Both connections are then closed."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(f"POST /score HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nContent-Length: {13 * MB}\r\n"
                     f"Expect: 100-continue\r\n\r\n".encode())
        answer = read_answer(sock)
    assert answer.startswith(b"HTTP/1.1 413") and b"is 13631488 bytes, above this server's limit" in answer
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n")
        sender = threading.Thread(target=send_chunks, args=(sock, 13), daemon=True)
        sender.start()
        answer = read_answer(sock)
    assert answer.startswith(b"HTTP/1.1 413") and b"above this server's limit" in answer
    assert request(server, "GET", "/v2/health/ready")[0] == 200


def send_chunks(sock, megabytes: int) -> None:
    try:
        for _ in range(megabytes):
            sock.sendall(b"%x\r\n" % MB + bytes(MB) + b"\r\n")
        sock.sendall(b"0\r\n\r\n")
    except OSError:
        pass                                   # the server stopped reading: expected


def read_answer(sock) -> bytes:
    """The server's answer, up to its JSON body's end."""
    data = b""
    while not data.rstrip().endswith(b"}"):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def test_slow_clients_are_dropped_and_the_others_served(server, jpeg):
    headers_only = socket.create_connection(("127.0.0.1", server.port))
    headers_only.sendall(b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n")   # never finishes
    slow_body = socket.create_connection(("127.0.0.1", server.port))
    slow_body.sendall(b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nContent-Length: 1000\r\n\r\n"
                      + jpeg[:10])
    idle = socket.create_connection(("127.0.0.1", server.port))
    began = time.monotonic()
    status, _, _ = request(server, "POST", "/score", jpeg, {"Content-Type": "image/jpeg"})
    assert status == 200 and time.monotonic() - began < 0.9      # served while the slow ones hold on
    for sock in (headers_only, slow_body, idle):
        sock.settimeout(5)
    answer = slow_body.recv(4096)
    assert answer.startswith(b"HTTP/1.1 408") and b'"error"' in answer and b"within 1 s" in answer
    assert headers_only.recv(4096) == b"" and idle.recv(4096) == b""      # closed by the header deadline
    assert time.monotonic() - began < 4
    for sock in (headers_only, slow_body, idle):
        sock.close()


def test_token_guards_everything_but_the_probes(model):
    from runtime import Scorer
    from runtime.serve.server import ModelServer, ServeOptions

    running = ModelServer({"fake": Scorer(model)}, ServeOptions(port=0, token="s3cret", metrics=False)).start()
    try:
        assert request(running, "GET", "/v2/health/ready")[0] == 200
        status, content, _ = request(running, "GET", "/v2/models/fake")
        assert status == 401 and "Authorization: Bearer" in json.loads(content)["error"]
        assert request(running, "GET", "/v2/models/fake", headers={"Authorization": "Bearer wrong"})[0] == 401
        assert request(running, "GET", "/v2/models/fake", headers={"Authorization": "Bearer s3cret"})[0] == 200
        assert request(running, "GET", "/metrics", headers={"Authorization": "Bearer s3cret"})[0] == 404
    finally:
        running.stop()


def slow_server(model, delay: float, **options):
    """A server whose backend takes `delay` seconds a call, so requests pile up."""
    from runtime import Scorer
    from runtime.serve.server import ModelServer, ServeOptions

    scorer = Scorer(model)
    run = scorer.backend.run

    def slow(crops):
        time.sleep(delay)
        return run(crops)

    scorer.backend.run = slow
    return ModelServer({"fake": scorer}, ServeOptions(port=0, **options)).start()


def test_requests_arriving_together_share_backend_calls(model, jpeg):
    running = slow_server(model, 0.2)                          # --batch 16 crops: 3 images of 5 crops a call
    try:
        answers = concurrently(lambda: request(running, "POST", "/score", jpeg, {"Content-Type": "image/jpeg"}), 15)
        calls = running.batchers["fake"].calls
    finally:
        running.stop()
    assert [status for status, _, _ in answers] == [200] * 15
    assert calls <= 7, f"15 requests took {calls} backend calls"          # 5 when all arrive within 0.2 s


def concurrently(call, count: int) -> list:
    answers, lock = [], threading.Lock()

    def one():
        answer = call()
        with lock:
            answers.append(answer)

    threads = [threading.Thread(target=one) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return answers


def test_overload_is_refused_at_once_and_every_request_answered_once(model, jpeg):
    running = slow_server(model, 0.3, max_queue=10, max_delay_ms=0)
    try:
        answers = concurrently(lambda: request(running, "POST", "/score", jpeg, {"Content-Type": "image/jpeg"}), 12)
    finally:
        running.stop()
    codes = sorted(status for status, _, _ in answers)
    assert len(codes) == 12 and set(codes) == {200, 503}, codes
    assert all("overloaded" in json.loads(content)["error"] for status, content, _ in answers if status == 503)


def test_graceful_stop_answers_requests_in_flight(model, jpeg):
    running = slow_server(model, 0.6)
    answers = []
    thread = threading.Thread(target=lambda: answers.append(
        request(running, "POST", "/score", jpeg, {"Content-Type": "image/jpeg"})))
    thread.start()
    time.sleep(0.3)                         # the request is with the backend now
    running.stop()
    thread.join(10)
    assert answers and answers[0][0] == 200 and json.loads(answers[0][1])["results"][0]["score"] > 0
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", running.port), timeout=1)


def test_batcher_takes_whole_requests_and_survives_a_failed_call():
    from runtime.serve.batching import DynamicBatcher
    from runtime.serve.protocol import RequestRefused

    calls = []

    def run(crops):
        calls.append(len(crops))
        if crops[0, 0, 0, 0] == 255:
            raise RuntimeError("backend failed")
        return crops[:, 0, 0, :1].astype(np.float32)

    async def scenario():
        batcher = DynamicBatcher(run, max_batch=8, max_delay=0.05, max_queue=20)
        batcher.start()
        sizes = [3, 3, 3, 5, 1]
        crops = [np.full((n, 2, 2, 3), i, np.uint8) for i, n in enumerate(sizes)]
        results = await asyncio.gather(*(batcher.infer(c) for c in crops))
        for i, result in enumerate(results):
            assert result.shape == (sizes[i], 1) and (result == i).all()
        with pytest.raises(RuntimeError, match="backend failed"):
            await batcher.infer(np.full((2, 2, 2, 3), 255, np.uint8))
        assert (await batcher.infer(np.ones((1, 2, 2, 3), np.uint8)) == 1).all()
        await batcher.close()
        with pytest.raises(RequestRefused, match="stopping"):
            await batcher.infer(np.ones((1, 2, 2, 3), np.uint8))

    asyncio.run(scenario())
    assert calls[:3] == [6, 8, 1]             # 3+3, then 3+5 (a whole request never split), then 1


def test_batcher_hands_a_full_batch_over_while_the_backend_runs():
    """The backend's thread starts the next full batch when its call ends, even while the event loop is
    busy (here: blocked), instead of waiting for the loop to hand it over."""
    from runtime.serve.batching import DynamicBatcher

    spans = []

    def run(crops):
        began = time.monotonic()
        time.sleep(0.2)
        spans.append((began, time.monotonic()))
        return crops[:, 0, 0, :1].astype(np.float32)

    async def scenario():
        batcher = DynamicBatcher(run, max_batch=4, max_delay=0.0, max_queue=100)
        batcher.start()
        tasks = [asyncio.ensure_future(batcher.infer(np.full((4, 2, 2, 3), i, np.uint8))) for i in range(3)]
        await asyncio.sleep(0.05)             # the first call runs; the second, full, is handed over
        time.sleep(0.5)                       # the event loop is busy meanwhile
        results = await asyncio.gather(*tasks)
        await batcher.close()
        return results

    results = asyncio.run(scenario())
    assert [float(result[0, 0]) for result in results] == [0.0, 1.0, 2.0]
    assert len(spans) == 3 and spans[1][0] - spans[0][1] < 0.1, spans


def test_binary_tensors_are_read_in_place():
    """The binary extension's crop bytes become the tensor without a copy; JSON gives the same values."""
    from runtime.serve.protocol import parse_infer_request

    crops = np.random.default_rng(0).integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    body, headers = infer_body([{"name": "crops", "datatype": "UINT8", "shape": [2, 8, 8, 3],
                                 "parameters": {"binary_data_size": crops.nbytes}}], crops.tobytes())
    tensor = parse_infer_request(body, headers["Inference-Header-Content-Length"]).inputs[0]
    assert np.shares_memory(tensor.data, np.frombuffer(body, np.uint8))
    json_body, _ = infer_body([{"name": "crops", "datatype": "UINT8", "shape": [2, 8, 8, 3],
                                "data": crops.tolist()}])
    from_json = parse_infer_request(json_body, None).inputs[0]
    assert np.array_equal(tensor.data.reshape(crops.shape), crops)
    assert np.array_equal(from_json.data.reshape(crops.shape), crops)


def test_command_serves_until_sigterm_and_exits_cleanly(model):
    environment = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen([sys.executable, "-m", "gamma_edge", "serve", "-m", str(model), "--port", "0"],
                               cwd=REPO, stderr=subprocess.PIPE, text=True, env=environment)
    try:
        lines = []
        while not any(line.startswith("serving") for line in lines):
            line = process.stderr.readline()
            assert line, "".join(lines)
            lines.append(line)
        url = lines[-1].split(" on ")[1].split()[0]
        port = int(url.rsplit(":", 1)[1])
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        connection.request("GET", "/v2/models/fake/ready")
        assert connection.getresponse().status == 200
        connection.close()
        process.send_signal(signal.SIGTERM)
        rest = process.stderr.read()
        assert process.wait(30) == 0
        assert "stopped: 1 request(s) answered" in rest and "Traceback" not in rest
    finally:
        if process.poll() is None:
            process.kill()


def test_command_mistakes_are_one_sentence(model):
    from click.testing import CliRunner

    from gamma_edge.cli import main

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(main, ["serve", "-m", str(model), "--port", str(port)])
    assert result.exit_code == 1 and f"Error: port {port} is already in use on 127.0.0.1" in result.output
    result = CliRunner().invoke(main, ["serve", "-m", str(model), "--name", "a", "--name", "b", "--port", "0"])
    assert result.exit_code == 1 and "2 --name for 1 --model" in result.output
    result = CliRunner().invoke(main, ["serve", "-m", str(model), "-m", str(model), "--port", "0"])
    assert result.exit_code == 1 and "two models are named 'fake'" in result.output
