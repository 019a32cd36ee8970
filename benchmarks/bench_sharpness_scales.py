"""Why the watch measures sharpness twice: how a blur moves sharpness at 384 and at 128 pixels, by
day and by night, on the camera simulator of bench_watch.py.

    python benchmarks/bench_sharpness_scales.py --photos PHOTOS_DIR [--cameras DarkestHour,Grey] [--mono DarkestHour]

For each photo: 12 clean frames and 12 under each blur (gaussian and motion, levels 1, 3, 5; the
held-out degradations of runtime/demo/heldout.py, before the sensor noise as in a camera) at noon and
at 1 am; printed, each signal's mean under the blur as a share of its clean mean. A smooth, dark scene
(a foggy lake at dusk) keeps its fine-scale sharpness under a blur because sensor noise is most of it,
while the coarse copy, where the noise has averaged away, shows the loss; the watch's rules (runtime/
watch/baseline.py) flag sharpness under 65% and coarse sharpness under 80% of the camera's normal.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import bench_watch  # noqa: E402
from contract import hardware  # noqa: E402
from runtime.watch.signals import measure  # noqa: E402

NAMES = ("sharpness", "coarse_sharpness")
BLURS = [(kind, level) for kind in ("gaussian_blur", "motion_blur") for level in (1, 3, 5)]


def shares(scene: bench_watch.Scene, t: float, frames: int) -> dict:
    def mean(injection):
        scene.injections = [injection] if injection else []
        values = [measure(scene.frame(t)) for _ in range(frames)]
        return np.array([[v[name] for name in NAMES] for v in values]).mean(axis=0)
    clean = mean(None)
    return {blur: mean(bench_watch.Injection(0.0, 1e12, *blur)) / clean for blur in BLURS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", type=Path, required=True, help="a folder of photos, one camera each")
    parser.add_argument("--cameras", default=None, help="comma-separated photo names (default: every photo)")
    parser.add_argument("--mono", default="", help="cameras that turn gray (infrared) at night")
    parser.add_argument("--frames", type=int, default=12)
    args = parser.parse_args()
    photos = sorted(p for p in args.photos.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if args.cameras:
        photos = [p for p in photos if p.stem in args.cameras.split(",")]
    if not photos:
        raise SystemExit(f"no photo to use in {args.photos}")
    mono = set(filter(None, args.mono.split(",")))
    print(f"CPU: {hardware.detect_cpu().model}; {args.frames} frames per cell; share of the clean mean, "
          "sharpness (384 px) / coarse sharpness (128 px)\n")
    print("| camera | time | " + " | ".join(f"{kind} {level}" for kind, level in BLURS) + " |")
    print("|---|---|" + "---:|" * len(BLURS))
    for path in photos:
        scene = bench_watch.load_scene(path, np.random.default_rng(1), path.stem in mono)
        scene.start_hour = 0.0
        scene._glitch = lambda bgr: bgr            # no glitches: one cell, one cause
        for label, hour in (("noon", 12.0), ("1 am", 1.0)):
            row = shares(scene, hour * 3600.0, args.frames)
            print(f"| {path.stem} | {label} | " + " | ".join(f"{100 * row[b][0]:.0f}% / {100 * row[b][1]:.0f}%"
                                                            for b in BLURS) + " |")


if __name__ == "__main__":
    main()
