"""Start-up: whole-process `gamma-edge score` of one photo, cold (empty start-up cache) and warm.

    python benchmarks/bench_startup.py --model exports/ort-int8 --model exports/ov-int8 [--rounds 5]
                                       [--photo photo.jpg] [--crops five]

For each model folder, every round runs `python -m gamma_edge score PHOTO --model M --crops five`
as a new process twice: cold, with GAMMA_EDGE_CACHE_DIR pointing at an empty folder (what the first
start after an install or an export pays), and warm, with a folder an earlier run filled (every start
after that: a camera service's restart, each one-shot call). Configurations are interleaved (cold A,
warm A, cold B, warm B, ...) because this machine's speed drifts (docs/design.md sec. 5.2), and
min / median / max are printed. The model's own work (the backend scoring the photo's crops, in this
process, median of --work-runs) is measured too: start-up = whole process - model work. A bare
`python -c pass` and the GEMM probe of the other benchmarks put the figures in context.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", required=True, help="an exported model folder (repeat)")
    parser.add_argument("--photo", help="default: runtime/samples' first photo")
    parser.add_argument("--crops", default="five")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--work-runs", type=int, default=7, help="in-process backend runs to time the model's work")
    parser.add_argument("--threads", type=int, default=2)
    return parser.parse_args()


def default_photo() -> Path:
    from runtime.shipped import SAMPLES_DIR

    return sorted(p for p in Path(SAMPLES_DIR).rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[0]


def whole_process(command: list[str], cache: Path) -> float:
    """Seconds from spawning the process to its exit (it must succeed)."""
    env = dict(os.environ, GAMMA_EDGE_CACHE_DIR=str(cache))
    start = time.perf_counter()
    done = subprocess.run(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed: {done.stderr.strip()[-500:]}")
    return seconds


def model_work(models: list[str], photo: Path, crops: str, runs: int, threads: int) -> dict[str, tuple[float, str]]:
    """Median seconds each backend takes to score the photo's crops, after a warm-up run; the models
    interleaved run by run, as the processes are, so the machine's drift hits them alike."""
    from runtime import Scorer

    os.environ["GAMMA_EDGE_CACHE_DIR"] = "off"          # this process's loads are not what is measured
    scorers = {m: Scorer(m, crops=crops, threads=threads) for m in models}
    cut = {m: s.crops_of(str(photo)) for m, s in scorers.items()}
    times = {m: [] for m in models}
    for m, scorer in scorers.items():
        scorer.backend.run(cut[m])
    for _ in range(runs):
        for m, scorer in scorers.items():
            start = time.perf_counter()
            scorer.backend.run(cut[m])
            times[m].append(time.perf_counter() - start)
    return {m: (statistics.median(t), scorers[m].backend.describe().split(", model ")[0]) for m, t in times.items()}


def measure(args, photo: Path, scratch: Path) -> dict:
    names = {m: Path(m).name for m in args.model}
    times = {(m, state): [] for m in args.model for state in ("cold", "warm")}
    times[("python -c pass", "-")] = []
    warm = {m: scratch / f"warm-{i}" for i, m in enumerate(args.model)}
    for m in args.model:                                   # fill each warm cache once, untimed
        whole_process(score_command(m, photo, args), warm[m])
    for r in range(args.rounds):
        times[("python -c pass", "-")].append(whole_process([sys.executable, "-c", "pass"], scratch / "none"))
        for m in args.model:
            cold = Path(tempfile.mkdtemp(prefix="cold-", dir=scratch))
            times[(m, "cold")].append(whole_process(score_command(m, photo, args), cold))
            times[(m, "warm")].append(whole_process(score_command(m, photo, args), warm[m]))
        print(f"round {r + 1}/{args.rounds}: " + ", ".join(f"{names.get(m, m)} {s} {t[-1]:.2f}s"
                                                          for (m, s), t in times.items()), flush=True)
    return times


def score_command(model: str, photo: Path, args) -> list[str]:
    return [sys.executable, "-m", "gamma_edge", "score", str(photo), "--model", model, "--crops", args.crops,
            "--threads", str(args.threads)]


def main():
    args = parse_args()
    from contract.hardware import detect_cpu
    from interleaved import torch_gemm_gflops
    import torch

    torch.set_num_threads(args.threads)
    photo = Path(args.photo) if args.photo else default_photo()
    gemm = [torch_gemm_gflops(repeats=1)]
    with tempfile.TemporaryDirectory(prefix="gamma-startup-") as scratch:
        times = measure(args, photo, Path(scratch))
    gemm.append(torch_gemm_gflops(repeats=1))
    work = model_work(args.model, photo, args.crops, args.work_runs, args.threads)
    print(f"\nCPU: {detect_cpu().describe()}; {args.threads} threads; GEMM probe {gemm[0]:.0f} / {gemm[1]:.0f} "
          f"GFLOP/s (before / after); photo {photo.name}, crops {args.crops}; {args.rounds} interleaved rounds")
    print("| model | engine | cache | whole process s (min / median / max) | model work s | start-up s (median) |")
    print("|---|---|---|---|---:|---:|")
    for (m, state), values in times.items():
        low, mid, high = min(values), statistics.median(values), max(values)
        spent, engine = work.get(m, (0.0, "-"))
        startup = f"{mid - spent:.2f}" if m in work else "-"
        label = Path(m).name if m in work else m
        print(f"| {label} | {engine} | {state} | {low:.2f} / {mid:.2f} / {high:.2f} | "
              f"{spent:.2f} | {startup} |")


if __name__ == "__main__":
    main()
