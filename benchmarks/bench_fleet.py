"""Fleet benchmark: 1, 4 and 8 local MJPEG streams at a fixed frame rate in one `gamma-edge run`.

    python benchmarks/bench_fleet.py                                   # the embedded demo model
    python benchmarks/bench_fleet.py --model /tmp/bench-vitb/ort-int8-dynamic-avx2 --seconds 30 --rounds 1

For each number of streams N, interleaved per round (this machine's speed drifts):
- backend: the backend alone, one call after another on a batch of min(N, batch) frames' crops:
  the most the fleet could score per second with that batch;
- fleet: runtime/fleet/runner.py, one reader per stream, one inference loop batching across streams;
- separate: one StreamRunner (its own backend session) per stream, all in this process, the
  way N single-source runs would share the box.
Per configuration: aggregate frames scored per second, capture-to-score latency p50 / p95 and
the CPU this process used (cores busy), all measured after a warm-up. The streams are served by
a separate process, so their cost is not counted. Target: with 8 streams the fleet scores at
least 90% of the backend's own frames per second at the same batch, when the streams offer more
frames than the backend can score. Torch is never imported.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))          # stream_servers: the MJPEG servers the tests use

from runtime.commands.benchmark import gemm_probe  # noqa: E402
from contract import hardware  # noqa: E402
from runtime import Scorer  # noqa: E402
from runtime.fleet.runner import FleetOptions, FleetRunner  # noqa: E402
from runtime.fleet.config import Camera  # noqa: E402
from runtime.live.runner import RunOptions, StreamRunner  # noqa: E402
from runtime.live.source import parse_source  # noqa: E402


def serve(count: int, fps: float, size: tuple[int, int]) -> None:
    """--serve: N MJPEG streams until stdin closes; prints their URLs as one JSON line."""
    from stream_servers import MjpegServer, Serve

    servers = [MjpegServer([Serve(10 ** 7, interval=1.0 / fps)] * 100, size=size).__enter__() for _ in range(count)]
    print(json.dumps([server.url for server in servers]), flush=True)
    sys.stdin.read()
    for server in servers:
        server.stop()


class Streams:
    """N streams in a child process (its CPU is not this process's)."""

    def __init__(self, count: int, fps: float, size: tuple[int, int]):
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--serve", str(count), "--fps", str(fps), "--size", f"{size[0]}x{size[1]}"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.urls = json.loads(self.process.stdout.readline())

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(10)


def window(records: list[dict], warmup: float) -> tuple[float, float, float]:
    """Frames scored per second after the warm-up, and capture-to-score latency p50 / p95 (ms).
    Frames come back a batch at a time, so the rate runs from the first completion after the
    warm-up to the last, counting the frames completed after the first: a slow model's few big
    batches are neither half-counted at the window's edges nor credited for time before them."""
    scored = [r for r in records if "latency_ms" in r and r["t"] + r["latency_ms"] / 1000 >= warmup]
    completions: dict[float, int] = {}
    for r in scored:                    # one completion per backend call (its frames share a time)
        done = round(r["t"] + r["latency_ms"] / 1000, 2)
        completions[done] = completions.get(done, 0) + 1
    times = sorted(completions)
    if len(times) < 2:
        return float("nan"), float("nan"), float("nan")
    rate = sum(completions[t] for t in times[1:]) / (times[-1] - times[0])
    latencies = [r["latency_ms"] for r in scored]
    return rate, float(np.percentile(latencies, 50)), float(np.percentile(latencies, 95))


def measure(run, seconds: float) -> tuple[list[dict], float]:
    """Run `run(stop)` for `seconds`; its JSON records and this process's cores busy meanwhile."""
    cpu, wall = time.process_time(), time.monotonic()
    records = run(seconds)
    return records, (time.process_time() - cpu) / (time.monotonic() - wall)


def fleet_run(scorer: Scorer, urls: list[str], seconds: float) -> list[dict]:
    lines = io.StringIO()
    cameras = [Camera(f"cam{i + 1}", url) for i, url in enumerate(urls)]
    FleetRunner(scorer, cameras, FleetOptions(jsonl=lines, duration_s=seconds), log=lambda line: None).run()
    return [json.loads(line) for line in lines.getvalue().splitlines()]


def separate_run(scorers: list[Scorer], urls: list[str], seconds: float) -> list[dict]:
    stop, buffers, threads = threading.Event(), [], []
    for scorer, url in zip(scorers, urls):
        buffers.append(io.StringIO())
        runner = StreamRunner(scorer, parse_source(url), RunOptions(jsonl=buffers[-1]), stop=stop,
                              log=lambda line: None)
        threads.append(threading.Thread(target=runner.run, daemon=True))
    for thread in threads:
        thread.start()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join(30)
    return [json.loads(line) for buffer in buffers for line in buffer.getvalue().splitlines()]


def backend_rate(scorer: Scorer, images: int, seconds: float) -> float:
    """Frames per second of the backend alone on batches of `images` frames' crops."""
    per_image = scorer.preprocess.crops_per_image
    images = max(1, min(images, scorer.batch // per_image))
    size = scorer.preprocess.crop_size
    crops = np.random.default_rng(0).integers(0, 256, (images * per_image, size, size, 3), dtype=np.uint8)
    scorer.backend.run(crops)
    calls, start = 0, time.monotonic()
    while time.monotonic() - start < seconds:
        scorer.backend.run(crops)
        calls += 1
    return calls * images / (time.monotonic() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="Exported model (default: the embedded demo model).")
    parser.add_argument("--streams", default="1,4,8")
    parser.add_argument("--fps", type=float, default=30.0, help="Frames per second each stream sends.")
    parser.add_argument("--size", default="640x480")
    parser.add_argument("--seconds", type=float, default=8.0, help="Per configuration and round.")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--crops", default="center")
    parser.add_argument("--serve", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    size = tuple(int(v) for v in args.size.split("x"))
    if args.serve:
        serve(args.serve, args.fps, size)
        return
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    counts = [int(n) for n in args.streams.split(",")]
    scorer = Scorer(args.model, crops=args.crops)
    print(f"# CPU: {hardware.detect_cpu().describe()}")
    print(f"# model: {scorer.describe()}")
    print(f"# streams: {args.size} MJPEG at {args.fps:g} fps each, served by another process; "
          f"{args.seconds:g} s per configuration ({args.warmup:g} s warm-up), {args.rounds} interleaved round(s)")
    gemm = [gemm_probe(4096)]
    print(f"# GEMM probe (4096^2 fp32) at start: {gemm[0]:.0f} GFLOP/s", flush=True)
    separate_scorers = [scorer] + [Scorer(args.model, crops=args.crops) for _ in range(max(counts) - 1)]
    results: dict[tuple[int, str], list[tuple]] = {}
    for round_number in range(args.rounds):
        for count in counts:
            streams = Streams(count, args.fps, size)
            try:
                rate = backend_rate(scorer, count, args.seconds - args.warmup)
                results.setdefault((count, "backend"), []).append((rate, float("nan"), float("nan"), float("nan")))
                for name, run in (("fleet", lambda s: fleet_run(scorer, streams.urls, s)),
                                  ("separate", lambda s: separate_run(separate_scorers[:count], streams.urls, s))):
                    records, cores = measure(run, args.seconds)
                    results.setdefault((count, name), []).append((*window(records, args.warmup), cores))
                    print(f"round {round_number + 1}: {count} stream(s) {name}: "
                          f"{results[(count, name)][-1][0]:.1f} scored/s", flush=True)
            finally:
                streams.close()
    gemm.append(gemm_probe(4096))
    print_table(counts, results, args.fps)
    print(f"GEMM probe: {gemm[0]:.0f} GFLOP/s at start, {gemm[1]:.0f} GFLOP/s at end")
    if args.json:
        args.json.write_text(json.dumps({f"{n}/{name}": rows for (n, name), rows in results.items()}, indent=1))


def print_table(counts: list[int], results: dict, fps: float) -> None:
    median = lambda rows, i: statistics.median(row[i] for row in rows)  # noqa: E731
    print("\n| streams | offered fps | backend alone fps (same batch) | fleet scored fps | fleet / backend "
          "| fleet latency p50 / p95 ms | fleet CPU cores | separate sessions scored fps | "
          "separate latency p50 / p95 ms | separate CPU cores | batching gain |")
    print("|---:|---:|---:|---:|---:|---|---:|---:|---|---:|---:|")
    for count in counts:
        backend, fleet, separate = (results[(count, name)] for name in ("backend", "fleet", "separate"))
        b, f, s = median(backend, 0), median(fleet, 0), median(separate, 0)
        print(f"| {count} | {count * fps:.0f} | {b:.1f} | {f:.1f} | {f / b:.0%} | "
              f"{median(fleet, 1):.0f} / {median(fleet, 2):.0f} | {median(fleet, 3):.2f} | {s:.1f} | "
              f"{median(separate, 1):.0f} / {median(separate, 2):.0f} | {median(separate, 3):.2f} | "
              f"{f / s if s else float('nan'):.2f}x |")


if __name__ == "__main__":
    main()
