"""How long `gamma-edge --help` takes, end to end (process start included).

    python benchmarks/bench_cli_help.py [--runs 20]

Target (issue 2): under one second. Prints a table of median / p95 / max wall
time for the installed console script and for `python -m gamma_edge`, and for
reference a bare `python -c pass` (the interpreter's own start-up).
"""
import argparse
import shutil
import statistics
import subprocess
import sys
import time


def wall_times(cmd, runs):
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - t0)
    return times


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    commands = {"python -c pass": [sys.executable, "-c", "pass"],
                "python -m gamma_edge --help": [sys.executable, "-m", "gamma_edge", "--help"]}
    script = shutil.which("gamma-edge")
    if script:
        commands["gamma-edge --help"] = [script, "--help"]
    results = {name: [] for name in commands}
    for _ in range(args.runs):  # interleaved, so machine drift hits every command alike
        for name, cmd in commands.items():
            results[name] += wall_times(cmd, 1)
    print(f"{'command':32s} {'median ms':>10s} {'p95 ms':>8s} {'max ms':>8s}")
    for name, times in results.items():
        times.sort()
        p95 = times[min(len(times) - 1, int(0.95 * len(times)))]
        print(f"{name:32s} {1000 * statistics.median(times):10.0f} {1000 * p95:8.0f} {1000 * times[-1]:8.0f}")
    if not script:
        print("(gamma-edge is not on PATH: pip install -e . to measure the console script)")


if __name__ == "__main__":
    main()
