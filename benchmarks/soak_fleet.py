"""Soak of a real fleet: `gamma-edge run` on local MJPEG cameras for an hour or more, as a user runs it.

    python benchmarks/soak_fleet.py --minutes 60                 # 4 cameras at 10 frames/s
    python benchmarks/soak_fleet.py --minutes 5 --cameras 2 --jsonl-max-mb 0.5

The cameras are served by a child process (tests/stream_servers.py): every camera shows a live
scene with sensor noise, and one of them is covered for a minute every few minutes, so quality
events keep coming while the JSON lines rotate (--jsonl-max-mb, small on purpose). The fleet runs
as its own process (`python -m gamma_edge.cli run ...`, the embedded demo model); its resident
memory is read from /proc each minute. At the end (SIGTERM, as a service manager stops it):
- memory: resident MB each minute, and the growth per hour after the warm-up (--warmup-minutes),
  fitted by least squares (target: under 1 MB per hour);
- the JSON lines: how many times they rotated, and whether every event the fleet wrote on
  stderr is found in the JSON lines kept on disk (the file, its rotations and its .events file).
Prints the CPU model. Torch is never imported.
"""
from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from contract import hardware  # noqa: E402

EVENT_WORDS = ("covered", "uncovered", "degraded", "recovered", "frozen", "unfrozen", "source lost", "source back")


def serve(count: int, fps: float, cover_every: float) -> None:
    """--serve: N MJPEG cameras until stdin closes; the last is covered for 60 s every `cover_every` s."""
    import cv2

    from runtime.shipped import SAMPLES_DIR
    from stream_servers import MjpegServer, Serve, covered, live_scene

    photos = sorted(SAMPLES_DIR.glob("*_pristine.png"))
    servers = []
    for index in range(count):
        scene = live_scene(cv2.resize(cv2.imread(str(photos[index % len(photos)])), (320, 240)), seed=index)
        picture = scene
        if index == count - 1:
            blank, period = covered(), int(cover_every * fps)

            def picture(i, scene=scene, blank=blank, period=period):       # noqa: E306
                return blank(i) if i % period >= period - int(60 * fps) else scene(i)
        servers.append(MjpegServer([Serve(10 ** 8, interval=1.0 / fps, picture=picture)] * 100).__enter__())
    print(json.dumps([server.url for server in servers]), flush=True)
    sys.stdin.read()
    for server in servers:
        server.stop()


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def kept_events(jsonl: Path) -> list[dict]:
    """Every event record in the JSON lines kept on disk: the file, its rotations, its .events file."""
    files = [jsonl, *sorted(jsonl.parent.glob(jsonl.name + ".*")),
             jsonl.with_name(jsonl.stem + ".events" + jsonl.suffix)]
    records = []
    for path in files:
        if path.is_file():
            records += [json.loads(line) for line in path.read_text().splitlines() if '"event": ' in line]
    return records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--cameras", type=int, default=4)
    parser.add_argument("--fps", type=float, default=10.0)
    parser.add_argument("--cover-every", type=float, default=300.0, help="seconds between covers of the last camera")
    parser.add_argument("--jsonl-max-mb", type=float, default=2.0)
    parser.add_argument("--warmup-minutes", type=float, default=5.0)
    parser.add_argument("--work", type=Path, default=Path("/tmp/gamma-soak"))
    parser.add_argument("--serve", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve is not None:
        return serve(args.serve, args.fps, args.cover_every)

    args.work.mkdir(parents=True, exist_ok=True)
    for old in args.work.glob("soak*"):
        old.unlink()
    jsonl = args.work / "soak.jsonl"
    cameras = subprocess.Popen([sys.executable, __file__, "--serve", str(args.cameras), "--fps", str(args.fps),
                                "--cover-every", str(args.cover_every)],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    urls = json.loads(cameras.stdout.readline())
    command = [sys.executable, "-m", "gamma_edge.cli", "run", *[f"cam{i + 1}={url}" for i, url in enumerate(urls)],
               "--jsonl", str(jsonl), "--jsonl-max-mb", str(args.jsonl_max_mb), "--hold", "5",
               "--baseline-warmup", "60", "--baseline-file", str(args.work / "soak.baselines.json"), "-q"]
    stderr = open(args.work / "soak.stderr", "w")
    fleet = subprocess.Popen(command, cwd=REPO, stderr=stderr, stdout=subprocess.DEVNULL)
    began, memory = time.monotonic(), []
    try:
        while time.monotonic() - began < args.minutes * 60 and fleet.poll() is None:
            time.sleep(min(60.0, args.minutes * 60 - (time.monotonic() - began)))
            memory.append(((time.monotonic() - began) / 60.0, rss_mb(fleet.pid)))
            print(f"  minute {memory[-1][0]:5.1f}: {memory[-1][1]:7.1f} MB", file=sys.stderr, flush=True)
    finally:
        fleet.send_signal(signal.SIGTERM)
        fleet.wait(60)
        stderr.close()
        cameras.stdin.close()
        cameras.wait(10)
    report(args, jsonl, memory)


def report(args, jsonl: Path, memory: list[tuple[float, float]]) -> None:
    cpu = hardware.detect_cpu()
    logged = [line for line in (args.work / "soak.stderr").read_text().splitlines()
              if line.startswith("cam") and any(f": {word} (now" in line for word in EVENT_WORDS)]
    kept = [r for r in kept_events(jsonl) if r.get("event") in
            ("covered", "uncovered", "degraded", "recovered", "frozen", "unfrozen", "source_lost", "source_back")]
    rotations = len(list(args.work.glob("soak.jsonl.*")))
    after = [(m, mb) for m, mb in memory if m >= args.warmup_minutes]
    slope = float(np.polyfit([m for m, _ in after], [mb for _, mb in after], 1)[0]) * 60 if len(after) >= 2 else float("nan")
    print(f"\n{args.cameras} cameras at {args.fps:g} frames/s for {args.minutes:g} min; CPU: {cpu.model}; "
          f"JSON lines rotated at {args.jsonl_max_mb:g} MB\n")
    print("| minute | resident MB |\n|---|---|")
    for minute, mb in memory:
        print(f"| {minute:.1f} | {mb:.1f} |")
    print(f"\ngrowth after minute {args.warmup_minutes:g}: {slope:+.2f} MB per hour (least squares)")
    print(f"events on stderr: {len(logged)}; quality events kept in the JSON lines on disk: {len(kept)}; "
          f"rotated files on disk: {rotations}; the .events file holds "
          f"{len(kept_events(jsonl.with_name(jsonl.stem + '.events' + jsonl.suffix)))} records")


if __name__ == "__main__":
    main()
