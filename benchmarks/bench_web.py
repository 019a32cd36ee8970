"""The live page's cost: a fleet of local MJPEG streams scored without the page, with the page
served but no one looking, and with the page open in a real browser (Debian's chromium, headless).

    python benchmarks/bench_web.py                     # 8 streams of 320x240 at 30 fps, five crops, the demo model
    python benchmarks/bench_web.py --streams 8 --fps 60 --size 640x480 --crops center --seconds 20 --rounds 3

Per round the three configurations run one after another (interleaved: this machine's speed
drifts), each on the same streams (served by another process, as in bench_fleet.py). Per
configuration: scored frames per second after the warm-up, capture-to-score latency p50 / p95,
the cores this process kept busy, the cores the page's own threads took (its event loop and its
JPEG encoder, read from /proc), the browser's cores, and the pictures the page had encoded.
Offer more frames than the fleet can score (the default does on 2 cores) so that any CPU the
page takes shows as fewer frames scored. Target: with the page open, scored frames per second
within 5% of the fleet without it. Torch is never imported.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))          # stream_servers and browser: what the tests use
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_fleet import Streams, window  # noqa: E402
from contract import hardware  # noqa: E402
from runtime import Scorer  # noqa: E402
from runtime.commands.benchmark import gemm_probe  # noqa: E402
from runtime.fleet.config import Camera  # noqa: E402
from runtime.fleet.runner import FleetOptions, FleetRunner  # noqa: E402

CONFIGURATIONS = ("without page", "page, no one looking", "page open in chromium")


def cpu_seconds(process) -> float | None:
    """CPU seconds of a process and its children (psutil), None where it cannot be read."""
    if process is None:
        return None
    try:
        import psutil

        root = psutil.Process(process.pid)
        return sum(sum(p.cpu_times()[:2]) for p in [root, *root.children(recursive=True)])
    except Exception:   # psutil missing, or the browser gone: the column says n/a
        return None


def thread_cpu_seconds(native_ids: list[int]) -> float:
    """CPU seconds of some of this process's threads (Linux /proc): what the page's own threads took."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for tid in native_ids:
        try:
            fields = Path(f"/proc/self/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / ticks         # utime, stime
    return total


def page_threads(runner) -> list[int]:
    server = runner.web.server if runner.web else None
    if server is None:
        return []
    return [server.thread.native_id, *(t.native_id for t in server.snapshots.encoder._threads)]


def fleet_run(scorer: Scorer, urls: list[str], seconds: float, configuration: str, browser) -> dict:
    """One fleet run of `seconds`; the browser (when given) opens the page as soon as it serves."""
    lines = io.StringIO()
    cameras = [Camera(f"cam{i + 1}", url) for i, url in enumerate(urls)]
    web = None if configuration == "without page" else "127.0.0.1:0"
    runner = FleetRunner(scorer, cameras, FleetOptions(jsonl=lines, duration_s=seconds, web=web),
                         log=lambda line: None)
    cpu, wall = time.process_time(), time.monotonic()
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    page, browser_cpu = None, None
    if browser is not None:
        while runner.web.server is None or not runner.web.server.port:
            time.sleep(0.01)
        page = browser.open(f"http://127.0.0.1:{runner.web.port}/")
        browser_cpu = cpu_seconds(browser.process)
    page_cpu = 0.0
    while thread.is_alive():              # the page's threads end with the run: their last reading counts
        page_cpu = max(page_cpu, thread_cpu_seconds(page_threads(runner)))
        thread.join(0.2)
    elapsed = time.monotonic() - wall
    result = {"cores": (time.process_time() - cpu) / elapsed, "page_cores": page_cpu / elapsed if web else None,
              "encoded": runner.web.server.snapshots.encoded if runner.web else 0}
    after = cpu_seconds(browser.process) if browser is not None else None
    result["browser_cores"] = (after - browser_cpu) / elapsed if after is not None and browser_cpu is not None else None
    if page is not None:
        result["tiles"] = page.evaluate("document.querySelectorAll('.tile img[src^=blob]').length")
        page.call("Page.close")
    records = [json.loads(line) for line in lines.getvalue().splitlines()]
    return {"records": records, **result}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="Exported model (default: the embedded demo model).")
    parser.add_argument("--streams", type=int, default=8)
    parser.add_argument("--fps", type=float, default=30.0, help="Frames per second each stream sends.")
    parser.add_argument("--size", default="320x240")
    parser.add_argument("--seconds", type=float, default=10.0, help="Per configuration and round.")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--crops", default="five", help="Five crops a frame: the backend, not decoding, sets the pace.")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    from browser import Browser

    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    size = tuple(int(v) for v in args.size.split("x"))
    scorer = Scorer(args.model, crops=args.crops)
    print(f"# CPU: {hardware.detect_cpu().describe()}; {cpu_model()}")
    print(f"# model: {scorer.describe()}")
    print(f"# {args.streams} streams: {args.size} MJPEG at {args.fps:g} fps each, served by another process; "
          f"{args.seconds:g} s per configuration ({args.warmup:g} s warm-up), {args.rounds} interleaved round(s)")
    gemm = [gemm_probe(4096)]
    print(f"# GEMM probe (4096^2 fp32) at start: {gemm[0]:.0f} GFLOP/s", flush=True)
    results: dict[str, list[dict]] = {name: [] for name in CONFIGURATIONS}
    streams = Streams(args.streams, args.fps, size)
    try:
        with Browser() as browser:
            for round_number in range(args.rounds):
                for name in CONFIGURATIONS:
                    run = fleet_run(scorer, streams.urls, args.seconds, name,
                                    browser if name == "page open in chromium" else None)
                    rate, p50, p95 = window(run.pop("records"), args.warmup)
                    results[name].append({"scored_per_s": rate, "p50_ms": p50, "p95_ms": p95, **run})
                    print(f"round {round_number + 1}: {name}: {rate:.1f} scored/s, {run['cores']:.2f} cores, "
                          f"{run['encoded']} pictures encoded; load average {os.getloadavg()[0]:.1f}", flush=True)
    finally:
        streams.close()
    gemm.append(gemm_probe(4096))
    print_table(results, args.streams * args.fps)
    print(f"GEMM probe: {gemm[0]:.0f} GFLOP/s at start, {gemm[1]:.0f} GFLOP/s at end")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


def cpu_model() -> str:
    try:
        line = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name"))
        return line.split(":", 1)[1].strip()
    except (OSError, StopIteration):
        return "CPU model unknown"


def print_table(results: dict[str, list[dict]], offered: float) -> None:
    def median(rows, key):
        values = [row[key] for row in rows if row.get(key) is not None]
        return statistics.median(values) if values else None

    base = median(results["without page"], "scored_per_s")
    print(f"\n| configuration | offered fps | scored fps (median) | rounds | vs without page | latency p50 / p95 ms "
          f"| fleet process cores | the page's threads, cores | browser cores | pictures encoded per run |")
    print("|---|---:|---:|---|---:|---|---:|---:|---:|---:|")
    for name, rows in results.items():
        rate, browser, page = (median(rows, key) for key in ("scored_per_s", "browser_cores", "page_cores"))
        each = ", ".join(f"{row['scored_per_s']:.1f}" for row in rows)
        print(f"| {name} | {offered:.0f} | {rate:.1f} | {each} | "
              f"{rate / base:.1%} | {median(rows, 'p50_ms'):.0f} / {median(rows, 'p95_ms'):.0f} | "
              f"{median(rows, 'cores'):.2f} | {'-' if page is None else f'{page:.4f}'} | "
              f"{'-' if browser is None else f'{browser:.2f}'} | "
              f"{median(rows, 'encoded'):.0f} |")


if __name__ == "__main__":
    main()
