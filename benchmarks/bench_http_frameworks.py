"""Which HTTP server library `gamma-edge serve` is built on: aiohttp or an ASGI framework
(Starlette) on uvicorn, measured on the work the server does, before any model runs.

    python benchmarks/bench_http_frameworks.py [--seconds 5] [--rounds 3]

Each framework serves, in a child process (one event loop, as `gamma-edge serve` runs):
- GET /v2/health/ready: an empty 200 (the cost of a request itself);
- POST /v2/models/m/infer: a binary-extension body of one 224x224x3 uint8 crop (150 KB) read
  whole and answered with a small JSON body (the cost of moving a crop in).
The load comes from another process (aiohttp's client, N concurrent connections, keep-alive),
so both sides share this machine's cores as a real client on the same box would. Requests per
second and latency p50 / p99 are reported per concurrency; frameworks are interleaved per round
(this machine's speed drifts) and the table gives medians.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time

import numpy as np

CROP_BYTES = 224 * 224 * 3
HEADER = json.dumps({"inputs": [{"name": "crops", "shape": [1, 224, 224, 3], "datatype": "UINT8",
                                 "parameters": {"binary_data_size": CROP_BYTES}}]}).encode()
ANSWER = json.dumps({"model_name": "m", "outputs": [{"name": "scores", "datatype": "FP32", "shape": [1, 1],
                                                     "data": [0.5]}]}).encode()


def aiohttp_server(port: int) -> None:
    from aiohttp import web

    async def ready(request):
        return web.Response()

    async def infer(request):
        body = await request.read()
        assert len(body) == len(HEADER) + CROP_BYTES
        return web.Response(body=ANSWER, content_type="application/json")

    app = web.Application(client_max_size=2 ** 24)
    app.router.add_get("/v2/health/ready", ready)
    app.router.add_post("/v2/models/m/infer", infer)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


def starlette_server(port: int, loop: str, http: str) -> None:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.responses import Response
    from starlette.routing import Route

    async def ready(request):
        return Response()

    async def infer(request):
        body = await request.body()
        assert len(body) == len(HEADER) + CROP_BYTES
        return Response(ANSWER, media_type="application/json")

    app = Starlette(routes=[Route("/v2/health/ready", ready), Route("/v2/models/m/infer", infer, methods=["POST"])])
    uvicorn.run(app, host="127.0.0.1", port=port, loop=loop, http=http, log_level="error", access_log=False)


SERVERS = {
    "aiohttp": lambda port: aiohttp_server(port),
    "starlette+uvicorn (uvloop, httptools)": lambda port: starlette_server(port, "uvloop", "httptools"),
    "starlette+uvicorn (asyncio, h11)": lambda port: starlette_server(port, "asyncio", "h11"),
}


async def load(port: int, route: str, clients: int, seconds: float) -> tuple[int, list[float]]:
    import aiohttp

    url = f"http://127.0.0.1:{port}{route}"
    body = HEADER + bytes(CROP_BYTES)
    latencies: list[float] = []
    end = time.perf_counter() + seconds

    async def client(session):
        while time.perf_counter() < end:
            began = time.perf_counter()
            if route.endswith("infer"):
                async with session.post(url, data=body, headers={
                        "Inference-Header-Content-Length": str(len(HEADER)),
                        "Content-Type": "application/octet-stream"}) as answer:
                    await answer.read()
            else:
                async with session.get(url) as answer:
                    await answer.read()
            assert answer.status == 200
            latencies.append(time.perf_counter() - began)

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=clients)) as session:
        await asyncio.gather(*(client(session) for _ in range(clients)))
    return len(latencies), latencies


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"server on {port} did not start")


def measure(name: str, route: str, clients: int, seconds: float) -> tuple[float, float, float]:
    port = free_port()
    server = subprocess.Popen([sys.executable, __file__, "--serve", name, "--port", str(port)])
    try:
        wait_for(port)
        asyncio.run(load(port, route, clients, 0.5))                       # warm-up
        count, latencies = asyncio.run(load(port, route, clients, seconds))
    finally:
        server.terminate()
        server.wait(10)
    ms = np.array(latencies) * 1000
    return count / seconds, float(np.percentile(ms, 50)), float(np.percentile(ms, 99))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--serve", choices=list(SERVERS))
    parser.add_argument("--port", type=int)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", default="1,32")
    args = parser.parse_args()
    if args.serve:
        SERVERS[args.serve](args.port)
        return
    rows: dict[tuple, list] = {}
    for _ in range(args.rounds):
        for route in ("/v2/health/ready", "/v2/models/m/infer"):
            for clients in (int(c) for c in args.clients.split(",")):
                for name in SERVERS:
                    rows.setdefault((route, clients, name), []).append(measure(name, route, clients, args.seconds))
    print(f"CPU: {cpu_model()}, {os.cpu_count()} cores; {args.rounds} interleaved rounds of {args.seconds:.0f} s")
    print("| request | clients | server | requests/s | p50 ms | p99 ms |")
    print("|---|---:|---|---:|---:|---:|")
    for (route, clients, name), values in rows.items():
        rate, p50, p99 = (np.median([v[i] for v in values]) for i in range(3))
        kind = "GET health" if "health" in route else "POST one crop (150 KB)"
        print(f"| {kind} | {clients} | {name} | {rate:.0f} | {p50:.2f} | {p99:.2f} |")


def cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


if __name__ == "__main__":
    main()
