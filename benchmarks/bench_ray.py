"""Ray engine vs single-process `score` on the same images and model, on this one machine.

    nice -n -10 python benchmarks/bench_ray.py [--model FOLDER] [--crops five] [--images 1100] [--rounds 3]

Images: the sample photos in runtime/samples, written as JPEG (quality 90 down to 81, a different
quality per copy so no two files are equal) until there are `--images` of them. Model: a copy of the
embedded demo model taken at the start (so edits to it during a run change nothing) unless --model.

Each configuration runs in its own driver process (so the driver's peak RSS is its own): the
single-process scorer (Scorer.score_many, what `gamma-edge score` runs, with its default threads:
all cores, two decode threads), and the Ray engine with 1 and 2 actors (its defaults: the cores
shared out as inference threads, two decode threads per actor) joining a local Ray that this script
starts once, as the engine starts a local one (workers at the driver's priority; its start time is
reported apart). Configurations are interleaved per round (this
machine's speed drifts) and medians are reported, with a 4096^2 float32 GEMM probe per round and the
load average before and after. Figures per configuration: images/s end to end (the driver's whole
run: model load, for Ray also joining, planning, actor start and the final Parquet); images/s in
steady state (from the first result the driver receives to the last, images after the first
result: what a long run approaches); and the fixed cost that leaves (end-to-end seconds minus
images divided by the steady rate).
"""
from __future__ import annotations

import argparse
import json
import resource
import shutil
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


def write_images(folder: Path, count: int) -> int:
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    samples = sorted((REPO / "runtime" / "samples").glob("*.png"))
    for number in range(count):
        copy, sample = divmod(number, len(samples))
        cv2.imwrite(str(folder / f"c{copy:03d}_{samples[sample].stem}.jpg"), cv2.imread(str(samples[sample])),
                    [cv2.IMWRITE_JPEG_QUALITY, 90 - copy % 10])
    return count


def load_average() -> str:
    return Path("/proc/loadavg").read_text().strip()


def peak_rss_mib() -> float:
    """This process's peak resident memory (VmHWM: unlike ru_maxrss it does not inherit the
    parent's peak across fork and exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# -- one configuration, in its own driver process ------------------------------------------------
class Clock:
    """When the driver received its first and last results, and how many images came with the first."""

    def __init__(self):
        self.start = time.perf_counter()
        self.first = self.last = None
        self.first_images = 0

    def results(self, images: int) -> None:
        now = time.perf_counter()
        if self.first is None:
            self.first, self.first_images = now, images
        self.last = now

    def report(self, images: int) -> dict:
        end = time.perf_counter()
        steady = (images - self.first_images) / max(self.last - self.first, 1e-9)
        return {"images": images, "seconds": end - self.start, "steady": steady}


def run_single_process(images: str, model: str, crops: str | None) -> dict:
    from runtime.dataset.inputs import expand_paths
    from runtime.inference.scorer import Scorer

    clock = Clock()
    paths = expand_paths([images])
    for _ in Scorer(model, crops=crops).score_many(paths):
        clock.results(1)
    return clock.report(len(paths))


def run_ray(images: str, model: str, crops: str | None, address: str, actors: int, block_size: int,
            out: str) -> dict:
    from runtime.dataset import ray_engine
    from runtime.dataset.ray_engine import RayOptions, score_with_ray

    clock = Clock()

    class TimedProgress(ray_engine.Progress):
        def update(self, count: int) -> None:
            clock.results(count)
            super().update(count)

    ray_engine.Progress = TimedProgress
    summary = score_with_ray([images], Path(out), RayOptions(address=address, actors=actors, block_size=block_size),
                             model=model, crops=crops, quiet=True)
    return clock.report(summary.images)


def child(arguments) -> None:
    if arguments.child == "single-process":
        result = run_single_process(arguments.image_dir, arguments.model, arguments.crops)
    else:
        result = run_ray(arguments.image_dir, arguments.model, arguments.crops, arguments.address,
                         int(arguments.child[5]), arguments.block_size, arguments.out)
    result["peak_rss_mib"] = peak_rss_mib()
    print(json.dumps(result))


# -- the interleaved comparison --------------------------------------------------------------------
def run_child(configuration: str, arguments, image_dir: Path, address: str, out: Path) -> dict:
    command = [sys.executable, __file__, "--child", configuration, "--image-dir", str(image_dir),
               "--address", address, "--block-size", str(arguments.block_size), "--out", str(out),
               "--model", arguments.model]
    if arguments.crops:
        command += ["--crops", arguments.crops]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{configuration} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="Exported model folder (default: a copy of the demo model).")
    parser.add_argument("--crops", default=None, help="Crop protocol (default: the model's).")
    parser.add_argument("--images", type=int, default=1100, help="Images to score (default 1,100).")
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

    from contract import hardware
    from runtime.commands.benchmark import gemm_probe
    from contract.manifest import load_manifest

    work = Path(tempfile.mkdtemp(prefix="bench_ray_"))
    if arguments.model is None:
        arguments.model = str(shutil.copytree(REPO / "runtime" / "models" / "demo", work / "demo-model"))
    manifest = load_manifest(Path(arguments.model))
    count = write_images(work / "images", arguments.images)
    print(f"# load average before: {load_average()}", flush=True)
    start = time.perf_counter()
    os.environ.setdefault("RAY_worker_niceness", "0")      # as `--engine ray` starts a local Ray (ray_engine.connect)
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    ray_start = time.perf_counter() - start
    address = ray.get_runtime_context().gcs_address
    print(f"# CPU: {hardware.detect_cpu().describe()}", flush=True)
    print(f"# {count} JPEG images (320x320, from {len(list((REPO / 'runtime' / 'samples').glob('*.png')))} samples), "
          f"model {arguments.model} ({manifest.raw.get('model', {}).get('sha256', '?')[:12]}), crops "
          f"{arguments.crops or manifest.default_crops}, block size {arguments.block_size}; local Ray "
          f"({os.cpu_count()} CPUs) started in {ray_start:.1f} s (not in the figures)", flush=True)
    results = {name: [] for name in CONFIGURATIONS}
    probes = []
    for round_ in range(arguments.rounds):
        probes.append(gemm_probe(4096))
        for name in CONFIGURATIONS:
            tag = name.replace(" ", "").replace(",", "")
            result = run_child(name, arguments, work / "images", address, work / f"out-{round_}-{tag}.parquet")
            results[name].append(result)
            print(f"round {round_ + 1} {name}: {json.dumps(result)}", flush=True)
    ray.shutdown()
    print_table(results, probes)
    print(f"# load average after: {load_average()}")
    shutil.rmtree(work, ignore_errors=True)


def print_table(results: dict, probes: list[float]) -> None:
    def median(name, key):
        return statistics.median(result[key] if key != "rate" else result["images"] / result["seconds"]
                                 for result in results[name])

    base_rate, base_steady = median(CONFIGURATIONS[0], "rate"), median(CONFIGURATIONS[0], "steady")
    print()
    print("| configuration | images/s end to end | vs single-process | images/s steady state | vs single-process "
          "| fixed cost s | driver peak RSS MiB |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name in CONFIGURATIONS:
        rate, steady = median(name, "rate"), median(name, "steady")
        fixed = statistics.median(r["seconds"] - r["images"] / r["steady"] for r in results[name])
        print(f"| {name} | {rate:.1f} | {rate / base_rate:.2f} | {steady:.1f} | {steady / base_steady:.2f} "
              f"| {fixed:.1f} | {median(name, 'peak_rss_mib'):.0f} |")
    print(f"\nmedians of {len(probes)} interleaved rounds; GEMM probe (4096^2 fp32) "
          f"{min(probes):.0f}-{max(probes):.0f} GFLOP/s")


if __name__ == "__main__":
    main()
