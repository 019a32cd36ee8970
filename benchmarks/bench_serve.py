"""Load on `gamma-edge serve`: N concurrent clients, throughput, latency and the batches the server made,
against the backend's own speed at the same batch size; then an overload.

    python benchmarks/bench_serve.py                                    # the embedded demo model
    python benchmarks/bench_serve.py --model /tmp/vit-int8 --clients 1,8,32 --seconds 40 --crops-per-request 1
    python benchmarks/bench_serve.py --build-vit /tmp/vit-int8          # export ViT-B/16 MoAE INT8 (random weights)

The server is `gamma-edge serve` in a child process (as users start it); the clients are asyncio
connections in this process (keep-alive HTTP/1.1, one request at a time each, a hand-written client so
that its cost is small and known), all on this machine, so server and clients share its cores.
Each request is one image:
- crops: its crops as a UINT8 tensor [K, 224, 224, 3] (the Open Inference Protocol's binary form);
  the server's own work is the protocol and the batching, so this row measures serving overhead;
- images: the JPEG as BYTES, decoded and cropped on the server (what an upload service sends).
Per row: images/s (the crops the server's backend scored in the measured window, from its
/metrics, per image), latency p50 / p95 / p99 of the answers, and the mean requests and crops per
backend call. "backend" is the same model's backend alone (ONNX Runtime in
this process, the server idle) at the batch size the server formed, measured in the same round just
before the server's window, so "% of backend" (the ratio of the medians; "per round": each round's
server against its own backend figure) is what serving costs. Each client's requests are built once,
before the clock starts, and sent with one write each. "load average" is the machine's 1-minute
load at the end of the window, this benchmark's own server and clients included.
Target: at 32 clients, crops >= 90% of the backend's throughput at the same batch.
Overload: --overload-seconds of 256 clients against a queue limit of 64 images: every request must
be answered exactly once (200, or 503 at once), with its own id; resident memory is read from the
server's /metrics at the start, the middle and the end.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SAMPLES = REPO / "runtime" / "samples"


class Server:
    """`gamma-edge serve` in a child process; its URL read from its first line."""

    def __init__(self, model: Path | None, name: str, *extra: str):
        command = [sys.executable, "-m", "gamma_edge", "serve", "--port", "0", "--name", name, "-q", *extra]
        if model is not None:
            command[4:4] = ["--model", str(model)]
        self.process = subprocess.Popen(command, cwd=REPO, stderr=subprocess.PIPE, text=True)
        lines = []
        while True:
            line = self.process.stderr.readline()
            if not line:
                raise RuntimeError("the server did not start: " + "".join(lines))
            lines.append(line)
            if line.startswith("serving"):
                break
        self.port = int(re.search(r"http://127\.0\.0\.1:(\d+)", line).group(1))
        self.log: list[str] = []
        threading.Thread(target=lambda: self.log.extend(self.process.stderr), daemon=True).start()

    def metrics(self) -> dict[str, float]:
        import urllib.request

        text = urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=30).read().decode()
        values = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                key, _, value = line.rpartition(" ")
                values[key] = float(value)
        return values

    def stop(self) -> int:
        self.process.terminate()
        return self.process.wait(120)


async def exchange(reader, writer, message: bytes) -> tuple[int, bytes]:
    """One request (head and body, joined beforehand) and its answer, on a keep-alive connection."""
    writer.write(message)
    await writer.drain()
    status = int((await reader.readline()).split()[1])
    length = 0
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b""):
            break
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return status, await reader.readexactly(length)


def request_bytes(path: str, body: bytes, headers: dict) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", f"Content-Length: {len(body)}"]
    lines += [f"{key}: {value}" for key, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def payloads(model_name: str, mode: str, scorer, per_request: int) -> list[tuple[bytes, bytes]]:
    """(head, body) of one request per sample photo: crops as a binary tensor, or the JPEG as BYTES."""
    import cv2

    out = []
    for path in sorted(SAMPLES.glob("*.png"))[:12]:
        jpeg = cv2.imencode(".jpg", cv2.imread(str(path)), [cv2.IMWRITE_JPEG_QUALITY, 92])[1].tobytes()
        if mode == "crops":
            raw = scorer.crops_of(jpeg)[:per_request].tobytes()
            tensor = {"name": "crops", "datatype": "UINT8", "shape": [per_request, 224, 224, 3]}
        else:
            raw = len(jpeg).to_bytes(4, "little") + jpeg
            tensor = {"name": "crops", "datatype": "BYTES", "shape": [1]}
        tensor["parameters"] = {"binary_data_size": len(raw)}
        header = json.dumps({"inputs": [tensor]}).encode()
        body = header + raw
        out.append((request_bytes(f"/v2/models/{model_name}/infer", body,
                                  {"Inference-Header-Content-Length": len(header)}), body))
    return out


async def load(port: int, clients: int, seconds: float, warmup: float, requests: list, scrape=None) -> dict:
    """Closed-loop clients for warmup + seconds; latencies of the answers after the warm-up, and the
    server's metrics (`scrape()`) at the start and the end of the measured window."""
    began = time.perf_counter()
    measure_from, end = began + warmup, began + warmup + seconds
    latencies, statuses, scrapes = [], {}, {}
    messages = [head + body for head, body in requests]      # built once: each send is one write, no copy

    async def scrape_at(moment: float, key: str):
        await asyncio.sleep(max(0.0, moment - time.perf_counter()))
        scrapes[key] = (time.perf_counter(), await asyncio.to_thread(scrape))

    async def client(index: int):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        n = index
        while time.perf_counter() < end:
            message = messages[n % len(messages)]
            n += 1
            sent = time.perf_counter()
            status, _ = await exchange(reader, writer, message)
            if sent >= measure_from:
                latencies.append(time.perf_counter() - sent)
                statuses[status] = statuses.get(status, 0) + 1
        writer.close()

    watchers = [scrape_at(measure_from, "start"), scrape_at(end, "end")] if scrape else []
    await asyncio.gather(*(client(i) for i in range(clients)), *watchers)
    ms = np.array(latencies) * 1000
    return {"answered": len(latencies), "per_s": len(latencies) / seconds, "statuses": statuses, "scrapes": scrapes,
            "p50": float(np.percentile(ms, 50)), "p95": float(np.percentile(ms, 95)),
            "p99": float(np.percentile(ms, 99))}


def batch_means(before: dict, after: dict, name: str, total: bool = False):
    """(requests per backend call, crops per call, seconds the backend was busy) between two scrapes;
    with `total`, the crops scored."""
    def delta(key):
        return after.get(f'{key}{{model="{name}"}}', 0.0) - before.get(f'{key}{{model="{name}"}}', 0.0)

    if total:
        return delta("gamma_edge_serve_batch_crops_sum")

    calls = delta("gamma_edge_serve_batch_crops_count") or 1.0
    return (delta("gamma_edge_serve_batch_requests_sum") / calls, delta("gamma_edge_serve_batch_crops_sum") / calls,
            delta("gamma_edge_serve_inference_seconds_sum"))


def backend_images_per_s(scorer, batch: int, per_request: int, seconds: float) -> float:
    """The backend alone on `batch` crops a call (whole images): images per second."""
    crops = np.concatenate([scorer.crops_of(str(p)) for p in sorted(SAMPLES.glob("*.png"))[:8]])
    crops = np.resize(crops, (batch, *crops.shape[1:]))
    scorer.backend.run(crops)
    calls, began = 0, time.perf_counter()
    while time.perf_counter() - began < seconds or calls < 3:
        scorer.backend.run(crops)
        calls += 1
    return calls * batch / per_request / (time.perf_counter() - began)


def run_rows(args, scorer, name: str, per_request: int) -> list[dict]:
    """Each row in --rounds interleaved rounds (this machine's speed drifts, and other programs share
    it): the backend alone, then the server under load; medians of both."""
    server = Server(args.model, name, "--batch", str(args.batch), "--max-delay-ms", str(args.max_delay_ms))
    rows = []
    try:
        for mode in args.modes.split(","):
            requests = payloads(name, mode, scorer, per_request)
            for clients in (int(c) for c in args.clients.split(",")):
                # the batch a full queue gives: whole requests up to --batch crops
                batch = max(1, min(clients, args.batch // per_request)) * per_request
                rounds = [one_round(args, server, scorer, name, requests, clients, batch, per_request)
                          for _ in range(args.rounds)]
                row = {key: float(np.median([r[key] for r in rounds])) for key in rounds[0] if key != "statuses"}
                row.update(mode=mode, clients=clients, backend_batch=batch,
                           shares=[round(r["share"], 1) for r in rounds],
                           statuses=sum((list(r["statuses"].items()) for r in rounds), []))
                rows.append(row)
                print(json.dumps(row), flush=True)
    finally:
        server.stop()
    return rows


def one_round(args, server, scorer, name, requests, clients, batch, per_request) -> dict:
    """The backend alone, then the server under load. Throughput is counted by the server (crops its
    backend scored in the measured window): with a slow model few answers fall in a window, and
    counting them would quantize the figure; the clients' count is kept as "answered_per_s"."""
    backend = backend_images_per_s(scorer, batch, per_request, args.backend_seconds)
    result = asyncio.run(load(server.port, clients, args.seconds, args.warmup, requests, server.metrics))
    scrapes = result.pop("scrapes")
    (began, before), (ended, after) = scrapes["start"], scrapes["end"]
    wall = ended - began
    result["batch_requests"], result["batch_crops"], busy = batch_means(before, after, name)
    crops = batch_means(before, after, name, total=True)
    result.update(answered_per_s=result["per_s"], per_s=crops / per_request / wall, backend_per_s=backend,
                  rss_mb=after["process_resident_memory_bytes"] / 2 ** 20,
                  busy=100 * busy / wall,          # share of the window a backend call was running
                  load=os.getloadavg()[0])         # 1-minute load average at the window's end (ours included)
    result["share"] = 100 * result["per_s"] / backend     # this round's server against this round's backend
    return result


def overload(args, scorer, name: str, per_request: int) -> dict:
    """256 clients against a 64-image queue limit: each request answered once, with its own id."""
    [(_, sample)] = payloads(name, "crops", scorer, per_request)[:1]
    server = Server(args.model, name, "--batch", str(args.batch), "--max-queue", str(64 * per_request))
    header_length = sample.index(b"}]}") + 3
    tensor = sample[header_length:]
    sent, answers, wrong, rss = [0], {}, [0], []

    lost = [0]

    async def client(index: int, end: float):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        while time.perf_counter() < end:
            ident = f"{index}-{sent[0]}"
            sent[0] += 1
            header = json.dumps({"id": ident, "inputs": [{"name": "crops", "datatype": "UINT8",
                                 "shape": [per_request, 224, 224, 3],
                                 "parameters": {"binary_data_size": len(tensor)}}]}).encode()
            head = request_bytes(f"/v2/models/{name}/infer", header + tensor,
                                 {"Inference-Header-Content-Length": len(header)})
            try:
                status, body = await exchange(reader, writer, head + header + tensor)
            except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):
                lost[0] += 1                   # no answer on this connection: counted, and a new one opened
                reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
                continue
            if status == 200 and json.loads(body).get("id") != ident:
                wrong[0] += 1
            answers[ident] = answers.get(ident, []) + [status]

    async def resident_mb() -> float:
        return (await asyncio.to_thread(server.metrics))["process_resident_memory_bytes"] / 2 ** 20

    async def main():
        end = time.perf_counter() + args.overload_seconds
        tasks = [asyncio.create_task(client(i, end)) for i in range(256)]
        await asyncio.sleep(min(5.0, args.overload_seconds / 4))          # the queue is full by now
        rss.append(await resident_mb())
        await asyncio.sleep(max(0.0, end - time.perf_counter()) / 2)
        rss.append(await resident_mb())
        await asyncio.gather(*tasks)

    try:
        asyncio.run(main())
        rss.append(server.metrics()["process_resident_memory_bytes"] / 2 ** 20)
    finally:
        code = server.stop()
    codes = [status for statuses in answers.values() for status in statuses]
    return {"sent": sent[0], "answered": len(codes), "lost": lost[0],
            "twice": sum(len(s) > 1 for s in answers.values()),
            "ok": codes.count(200), "refused_503": codes.count(503), "other": len(codes) - codes.count(200)
            - codes.count(503), "wrong_id": wrong[0], "rss_mb": [round(v, 1) for v in rss], "exit": code}


def build_vit(out: Path) -> None:
    """ViT-B/16 with MoAE, random weights (benchmarks/bench_export.py's model), exported as ONNX Runtime
    dynamic INT8 through export_model: the graph a user would serve on a CPU without VNNI."""
    import torch

    sys.path.insert(0, str(REPO / "benchmarks"))
    from bench_export import build_model
    from export import export_model

    torch.set_num_threads(os.cpu_count() or 2)
    export_model(build_model(None), out, scene="natural", precision="int8", fmt="onnx", int8_method="dynamic",
                 overwrite=True, force=True, calib_count=16)


def cpu_line() -> str:
    from contract import hardware
    from runtime.commands.benchmark import gemm_probe

    return (f"CPU: {hardware.detect_cpu().describe()}; {os.cpu_count()} cores; "
            f"load average {os.getloadavg()[0]:.1f}; GEMM probe {gemm_probe():.0f} GFLOP/s")


def print_rows(rows: list[dict], label: str, per_request: int) -> None:
    print(f"\n{label}: one image ({per_request} crops) per request")
    print("| requests | clients | images/s | p50 ms | p95 ms | p99 ms | requests / call | crops / call "
          "| backend busy | backend alone images/s (batch) | % of backend | per round | server MiB | load average |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        share = 100 * r["per_s"] / r["backend_per_s"]          # ratio of the medians
        print(f"| {r['mode']} | {r['clients']} | {r['per_s']:.1f} | {r['p50']:.0f} | {r['p95']:.0f} | {r['p99']:.0f} "
              f"| {r['batch_requests']:.1f} | {r['batch_crops']:.1f} | {r['busy']:.0f}% "
              f"| {r['backend_per_s']:.1f} ({r['backend_batch']}) "
              f"| {share:.0f}% | {min(r['shares']):.0f}-{max(r['shares']):.0f}% | {r['rss_mb']:.0f} "
              f"| {r['load']:.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=None, help="exported model (default: the embedded demo model)")
    parser.add_argument("--build-vit", type=Path, help="export ViT-B/16 MoAE INT8 (random weights) here and stop")
    parser.add_argument("--clients", default="1,8,32,128")
    parser.add_argument("--modes", default="crops,images")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per row and round")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of load before measuring")
    parser.add_argument("--batch", type=int, default=16, help="the server's --batch (crops per backend call)")
    parser.add_argument("--max-delay-ms", type=float, default=2.0)
    parser.add_argument("--crops-per-request", type=int, default=None, help="default: the model's crops per image")
    parser.add_argument("--backend-seconds", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--overload-seconds", type=float, default=60.0, help="0: no overload run")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.build_vit:
        build_vit(args.build_vit)
        return
    from runtime import Scorer

    scorer = Scorer(args.model, batch=args.batch)
    per_request = args.crops_per_request or scorer.preprocess.crops_per_image
    name = "bench"
    print(cpu_line(), flush=True)
    rows = run_rows(args, scorer, name, per_request)
    label = f"{args.model or 'embedded demo model'} ({scorer.manifest.precision}), --batch {args.batch}"
    print_rows(rows, label, per_request)
    result = {"cpu": cpu_line(), "rows": rows}
    if args.overload_seconds > 0:
        result["overload"] = overload(args, scorer, name, per_request)
        print(f"\noverload, {args.overload_seconds:.0f} s, 256 clients, queue limit 64 images: "
              f"{json.dumps(result['overload'])}")
    print(cpu_line())
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
