"""Ray engine vs single-process `score` on the same images and model, on this one machine.

    python benchmarks/bench_ray.py [--model runtime/models/demo] [--copies 24] [--rounds 3]

Images: the 44 sample photos shipped in runtime/samples (320x320), written `--copies` times as
JPEG (quality 90, a different quality per copy so no two files are equal): 1,056 by default.
Model: the embedded demo model unless --model.

Each configuration runs in its own driver process (so the driver's peak RSS is its own): the
single-process scorer (Scorer.score_many, what `gamma-edge score` runs), and the Ray engine with 1
and 2 actors joining a local Ray that this script starts once (its start time is reported apart).
Configurations are interleaved per round (this machine's speed drifts) and medians are reported,
with a 4096^2 float32 GEMM probe per round. Each configuration scores two sets, half and all of the
images: the rate on all of them end to end (the driver's whole run: model load, for Ray also
planning, actor start and the final Parquet), the marginal rate (the second half of the images
divided by the time they add), and the fixed cost that leaves (time of the full run minus images
divided by the marginal rate).
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

CONFIGURATIONS = ("single-process", "ray, 1 actor", "ray, 2 actors")


def write_images(folder: Path, copies: int) -> int:
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    samples = sorted((REPO / "runtime" / "samples").glob("*.png"))
    for copy in range(copies):
        for sample in samples:
            cv2.imwrite(str(folder / f"c{copy:02d}_{sample.stem}.jpg"), cv2.imread(str(sample)),
                        [cv2.IMWRITE_JPEG_QUALITY, 90 - copy % 10])
    return copies * len(samples)


def peak_rss_mib() -> float:
    """This process's peak resident memory (VmHWM: unlike ru_maxrss it does not inherit the
    parent's peak across fork and exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# -- one configuration, in its own driver process ------------------------------------------------
def run_single_process(images: str, model: str | None) -> dict:
    from runtime.cli import expand_paths
    from runtime.scorer import Scorer

    start = time.perf_counter()
    paths = expand_paths([images])
    for _ in Scorer(model).score_many(paths):
        pass
    return {"images": len(paths), "seconds": time.perf_counter() - start}


def run_ray(images: str, model: str | None, address: str, actors: int, block_size: int, out: str) -> dict:
    from runtime.ray_engine import RayOptions, score_with_ray

    start = time.perf_counter()
    summary = score_with_ray([images], Path(out), RayOptions(address=address, actors=actors, block_size=block_size),
                             model=model, quiet=True)
    return {"images": summary.images, "seconds": time.perf_counter() - start}


def child(arguments) -> None:
    if arguments.child == "single-process":
        result = run_single_process(arguments.image_dir, arguments.model)
    else:
        result = run_ray(arguments.image_dir, arguments.model, arguments.address, int(arguments.child[5]),
                         arguments.block_size, arguments.out)
    result["peak_rss_mib"] = peak_rss_mib()
    print(json.dumps(result))


# -- the interleaved comparison --------------------------------------------------------------------
def run_child(configuration: str, arguments, image_dir: Path, address: str, out: Path) -> dict:
    command = [sys.executable, __file__, "--child", configuration, "--image-dir", str(image_dir),
               "--address", address, "--block-size", str(arguments.block_size), "--out", str(out)]
    if arguments.model:
        command += ["--model", arguments.model]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{configuration} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="Exported model folder (default: the demo model).")
    parser.add_argument("--copies", type=int, default=24, help="Copies of the 44 sample photos (default 24: 1,056).")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--block-size", type=int, default=64)
    parser.add_argument("--child", choices=CONFIGURATIONS, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--image-dir", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--address", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None, help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.child:
        child(arguments)
        return

    import os

    import ray

    from runtime import hardware
    from runtime.benchmark_cli import gemm_probe

    work = Path(tempfile.mkdtemp(prefix="bench_ray_"))
    half = write_images(work / "half", arguments.copies // 2)
    count = write_images(work / "all", arguments.copies)
    start = time.perf_counter()
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    ray_start = time.perf_counter() - start
    address = ray.get_runtime_context().gcs_address
    print(f"# CPU: {hardware.detect_cpu().describe()}", flush=True)
    print(f"# {count} JPEG images (320x320; {half} for the half run), model: {arguments.model or 'the embedded demo model'}, "
          f"five crops, block size {arguments.block_size}; local Ray ({os.cpu_count()} CPUs) started in "
          f"{ray_start:.1f} s (not in the figures)", flush=True)
    results = {name: [] for name in CONFIGURATIONS}
    probes = []
    for round_ in range(arguments.rounds):
        probes.append(gemm_probe(4096))
        for name in CONFIGURATIONS:
            tag = name.replace(" ", "").replace(",", "")
            halves = run_child(name, arguments, work / "half", address, work / f"out-{round_}-{tag}-half.parquet")
            full = run_child(name, arguments, work / "all", address, work / f"out-{round_}-{tag}.parquet")
            marginal = (full["images"] - halves["images"]) / (full["seconds"] - halves["seconds"])
            results[name].append({"images": full["images"], "seconds": full["seconds"], "marginal": marginal,
                                  "fixed": full["seconds"] - full["images"] / marginal,
                                  "peak_rss_mib": max(full["peak_rss_mib"], halves["peak_rss_mib"])})
            print(f"round {round_ + 1} {name}: half {json.dumps(halves)}, all {json.dumps(full)}", flush=True)
    ray.shutdown()
    print_table(results, probes)


def print_table(results: dict, probes: list[float]) -> None:
    def median(name, key):
        return statistics.median(result[key] if key != "rate" else result["images"] / result["seconds"]
                                 for result in results[name])

    base_rate, base_marginal = median(CONFIGURATIONS[0], "rate"), median(CONFIGURATIONS[0], "marginal")
    print()
    print("| configuration | images/s end to end | vs single-process | marginal images/s | vs single-process "
          "| fixed cost s | driver peak RSS MiB |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name in CONFIGURATIONS:
        rate, marginal = median(name, "rate"), median(name, "marginal")
        print(f"| {name} | {rate:.1f} | {rate / base_rate:.2f} | {marginal:.1f} | {marginal / base_marginal:.2f} "
              f"| {median(name, 'fixed'):.1f} | {median(name, 'peak_rss_mib'):.0f} |")
    print(f"\nmedians of {len(probes)} interleaved rounds; GEMM probe (4096^2 fp32) "
          f"{min(probes):.0f}-{max(probes):.0f} GFLOP/s")


if __name__ == "__main__":
    main()
