"""Interleaved A/B timing for the small benchmark scripts: each round runs every configuration
once (A B ... A B ...), so drift in this machine's speed hits them alike; medians are reported.
And the torch GEMM probe the benchmarks that have torch print beside their tables."""
from __future__ import annotations

import time
from typing import Callable

import numpy as np


def interleaved_seconds(runs: dict[str, Callable[[], object]], rounds: int) -> dict[str, list[float]]:
    """Seconds per call of each named function, one call per function per round."""
    seconds = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            seconds[name].append(time.perf_counter() - start)
    return seconds


def print_median_table(first_column: str, unit: str, values: dict[str, list[float]], digits: int = 0) -> None:
    """A markdown table: name | median | the rounds."""
    print(f"| {first_column} | {unit} (median) | rounds |")
    print("|---|---:|---|")
    for name, row in values.items():
        print(f"| {name} | {np.median(row):.{digits}f} | {', '.join(f'{v:.0f}' for v in row)} |")


def torch_gemm_gflops(device="cpu", size: int = 4096, repeats: int = 3) -> float:
    """float32 matrix-multiply speed on `device` right now (GFLOP/s, best of `repeats` after a warm-up);
    torch's threads are whatever the caller set (torch.set_num_threads)."""
    import torch

    device = torch.device(device)
    a, b = torch.randn(size, size, device=device), torch.randn(size, size, device=device)
    a @ b
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return 2 * size ** 3 / min(times) / 1e9
