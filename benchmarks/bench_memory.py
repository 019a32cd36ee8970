"""Peak resident memory of scoring a folder of large JPEGs, with and without the reduced decode.

    python benchmarks/bench_memory.py [--images 6] [--size 12000x9000] [--model runtime/models/demo] [--rounds 2]

Writes the JPEGs (textured photos enlarged to --size) to a temporary folder, then scores the
folder in a fresh process per configuration, as `gamma-edge score` does (Scorer.score_many,
two decode threads), and reads the process's peak RSS (VmHWM in /proc/self/status; Linux). "full decode"
switches the reduced JPEG decode off (contract/images.py REDUCED_DECODE_MARGIN set out of
reach), which is how the runtime decoded before it existed. Rounds alternate the two
configurations; the table gives medians and the CPU.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CHILD = r"""
import json, sys, time
import contract.images
if sys.argv[1] == "full":
    contract.images.REDUCED_DECODE_MARGIN = 10 ** 9
from runtime import Scorer
from pathlib import Path
scorer = Scorer(sys.argv[3] or None, threads=2)
paths = sorted(Path(sys.argv[2]).glob("*.jpg"))
start = time.perf_counter()
rows = list(scorer.score_many(paths))
seconds = time.perf_counter() - start
# VmHWM, not getrusage: Linux carries ru_maxrss over exec from the parent that forked us
peak = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:")) / 1024
print(json.dumps({"peak_mib": peak, "seconds": seconds,
                  "scored": sum(r.ok for r in rows), "errors": [r.error for r in rows if not r.ok][:2]}))
"""


def write_photos(folder: Path, count: int, width: int, height: int) -> None:
    """Smooth random structure at several scales plus fine grain: a JPEG that compresses like a photo."""
    for i in range(count):
        rng = np.random.default_rng(i)
        photo = np.zeros((height, width, 3), np.float32)
        for cells in (6, 40, 300):
            photo += cv2.resize(rng.uniform(0, 85, (cells * height // width + 1, cells, 3)).astype(np.float32),
                                (width, height), interpolation=cv2.INTER_CUBIC)
        noise = rng.integers(-12, 13, photo.shape, dtype=np.int16)
        cv2.imwrite(str(folder / f"large_{i}.jpg"), np.clip(photo + noise, 0, 255).astype(np.uint8),
                    [cv2.IMWRITE_JPEG_QUALITY, 90])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=6)
    parser.add_argument("--size", default="12000x9000", help="WIDTHxHEIGHT of each JPEG")
    parser.add_argument("--model", default="", help="exported model folder (default: the embedded demo model)")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    width, height = map(int, args.size.lower().split("x"))

    from contract import hardware
    with tempfile.TemporaryDirectory(prefix="gamma-mem-") as folder:
        print(f"writing {args.images} JPEGs of {width}x{height} ...", flush=True)
        write_photos(Path(folder), args.images, width, height)
        megabytes = sum(p.stat().st_size for p in Path(folder).iterdir()) / 1e6
        results: dict[str, list[dict]] = {"full decode (before)": [], "reduced decode (after)": []}
        for _ in range(args.rounds):
            for name, mode in (("full decode (before)", "full"), ("reduced decode (after)", "reduced")):
                done = subprocess.run([sys.executable, "-c", CHILD, mode, folder, args.model], cwd=ROOT,
                                      capture_output=True, text=True, check=True)
                results[name].append(json.loads(done.stdout.strip().splitlines()[-1]))
    print(f"\nCPU: {hardware.detect_cpu().describe()}")
    print(f"{args.images} JPEGs of {width}x{height} ({megabytes:.0f} MB on disk), model "
          f"{args.model or 'embedded demo'}, 2 decode threads, {args.rounds} alternating rounds, medians\n")
    print("| decode | peak RSS MiB | images/s | scored |")
    print("|---|---:|---:|---:|")
    for name, runs in results.items():
        peak = statistics.median(r["peak_mib"] for r in runs)
        rate = statistics.median(r["scored"] / r["seconds"] for r in runs)
        print(f"| {name} | {peak:.0f} | {rate:.2f} | {runs[0]['scored']}/{args.images} |")


if __name__ == "__main__":
    main()
