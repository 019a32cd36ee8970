"""Benchmark of the camera watch: does it catch what goes wrong, and only that, with no setting per camera?

    python benchmarks/bench_watch.py --photos PHOTOS_DIR                        # every photo a camera
    python benchmarks/bench_watch.py --photos PHOTOS_DIR --cameras Path,Grey --hours 6 --json out.json

Each photo in PHOTOS_DIR is one camera's scene. Time is simulated (an injected clock, no waiting):
each camera is watched for --hours with a frame scored every --interval seconds, starting at a
random hour, through
- a day/night cycle: light falls to a tenth at night, auto-exposure gains it back at most 4x (so a
  night frame is darker and far noisier); cameras named in --mono switch to a gray infrared
  picture at night;
- sensor noise on every frame, a slow white-balance drift over the day, a pixel of shake;
- brief glitches (about one frame in 300): a smeared half frame, a passing dark vehicle, one badly
  compressed frame;
- every degradation kind of --kinds at every level 1-5, once each, at random times, each lasting
  --duration seconds (made by runtime/demo/heldout.py: code independent of training).
Every frame is scored once by the model (--model, default the embedded demo model) and looked at
once; the same frames then feed every watch configuration side by side:
- baseline: zero per-camera settings, each camera against its own normal (runtime/watch),
  with --evidence model, signals and model+signals;
- threshold T: the absolute threshold only (no normal), for every T on a grid; the best single T
  for all cameras (most detected at the fewest false alarms) and the docs' old example 0.45.
Reported per kind and level: the share of injections detected (a degraded event while it lasts,
or within the hold after), the median seconds to detect, and false alarms per camera-day
(degraded events with no injection). Prints the CPU model and the run's wall time.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from contract import hardware  # noqa: E402
from runtime import Scorer  # noqa: E402
from runtime.demo import heldout  # noqa: E402
from runtime.watch.camera import CameraWatch, WatchRules  # noqa: E402
from runtime.watch.signals import Look, change, look_at, measure  # noqa: E402

DAY = 86400.0
SIZE = (640, 360)
KINDS = ("gaussian_blur", "motion_blur", "jpeg", "downscale", "gaussian_noise", "underexposure")
FLAGS = ("avx2", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8")
THRESHOLDS = tuple(sorted({round(0.10 + 0.02 * i, 2) for i in range(31)} | {0.45}))
SIGNAL_NAMES = tuple(measure(np.zeros((8, 8, 3), np.uint8)))     # every signal look_at measures
OPTICAL = ("gaussian_blur", "motion_blur")          # before the sensor adds its noise
DIGITAL = ("jpeg", "downscale")                      # after: the encoder sees the noisy frame


@dataclass
class Injection:
    start: float
    end: float
    kind: str
    level: int


@dataclass
class Scene:
    """One camera: its photo (linear light), where its day starts, and what happens to it."""

    name: str
    linear: np.ndarray
    start_hour: float
    mono: bool
    rng: np.random.Generator
    injections: list[Injection] = field(default_factory=list)
    phase: float = 0.0
    noise: list | None = None

    def light(self, t: float) -> float:
        hour = (self.start_hour + t / 3600.0) % 24.0
        if 8 <= hour < 18:
            return 1.0
        if hour >= 21 or hour < 5:
            return 0.1
        x = (hour - 5) / 3 if hour < 8 else (21 - hour) / 3      # dawn 5-8, dusk 18-21
        return 0.1 + 0.9 * 0.5 * (1 - np.cos(np.pi * x))

    def injection(self, t: float) -> Injection | None:
        return next((i for i in self.injections if i.start <= t < i.end), None)

    def frame(self, t: float) -> np.ndarray:
        light = self.light(t)
        gain = min(1.0 / light, 4.0)
        injection = self.injection(t)
        drift = 0.03 * np.sin(2 * np.pi * t / DAY + self.phase)
        x = self.linear * (np.array([1 - drift, 1.0, 1 + drift], np.float32) * (light * gain))   # BGR white balance
        infrared = self.mono and light < 0.3
        if infrared:
            x = np.repeat(x.mean(axis=2, keepdims=True), 3, axis=2) * 1.6
        rgb = _to_srgb8(x)[..., ::-1]
        if injection and injection.kind not in DIGITAL:
            rgb = heldout.degrade(np.ascontiguousarray(rgb), injection.kind, injection.level, self.rng)
        sigma = 1.0 + 1.2 * (gain - 1.0) + (2.0 if infrared else 0.0)
        rgb = self._sensor_noise(rgb, sigma)
        if injection and injection.kind in DIGITAL:
            rgb = heldout.degrade(rgb, injection.kind, injection.level, self.rng)
        bgr = np.ascontiguousarray(rgb[..., ::-1])
        dy, dx = (int(v) for v in self.rng.integers(-1, 2, size=2))      # a pixel of shake (edges repeated, not wrapped)
        height, width = bgr.shape[:2]
        bgr = cv2.copyMakeBorder(bgr, 1, 1, 1, 1, cv2.BORDER_REPLICATE)[1 + dy:1 + dy + height, 1 + dx:1 + dx + width]
        return self._glitch(bgr)

    def _sensor_noise(self, rgb: np.ndarray, sigma: float) -> np.ndarray:
        """Gaussian noise of `sigma` gray levels: one of a bank of unit noise fields, rolled at random
        (drawing 700,000 normals a frame would cost more than the model)."""
        if self.noise is None:
            self.noise = [self.rng.standard_normal(rgb.shape).astype(np.float32) for _ in range(8)]
        field = np.roll(self.noise[self.rng.integers(len(self.noise))], int(self.rng.integers(0, rgb.shape[1])), axis=1)
        return np.clip(rgb.astype(np.float32) + sigma * field, 0, 255).astype(np.uint8)

    def _glitch(self, bgr: np.ndarray) -> np.ndarray:
        if self.rng.random() >= 1 / 300:
            return bgr
        kind = self.rng.integers(3)
        h, w = bgr.shape[:2]
        bgr = bgr.copy()
        if kind == 0:                                   # packet loss: the lower half smeared down
            bgr[h // 2:] = bgr[h // 2 - 1]
        elif kind == 1:                                 # a dark vehicle passing close
            x0 = int(self.rng.integers(0, w // 2))
            bgr[h // 3:, x0:x0 + w // 3] = (30, 30, 35)
        else:                                           # one frame the encoder starved
            ok, data = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 8])
            bgr = cv2.imdecode(data, cv2.IMREAD_COLOR)
        return bgr


SRGB_LUT = np.array([round(255.0 * (12.92 * x if x <= 0.0031308 else 1.055 * x ** (1 / 2.4) - 0.055))
                     for x in np.linspace(0.0, 1.0, 4096)], dtype=np.uint8)


def _to_srgb8(linear: np.ndarray) -> np.ndarray:
    return SRGB_LUT[np.clip(linear * 4095.0 + 0.5, 0, 4095).astype(np.uint16)]


def load_scene(path: Path, rng: np.random.Generator, mono: bool) -> Scene:
    bgr = cv2.resize(cv2.imread(str(path), cv2.IMREAD_COLOR), SIZE, interpolation=cv2.INTER_AREA)
    srgb = bgr[..., ::-1].astype(np.float32) / 255.0
    linear = np.where(srgb <= 0.04045, srgb / 12.92, ((srgb + 0.055) / 1.055) ** 2.4)[..., ::-1].astype(np.float32)
    return Scene(path.stem, linear, float(rng.uniform(0, 24)), mono, rng, phase=float(rng.uniform(0, 6.3)))


def schedule(scene: Scene, args, rng: np.random.Generator) -> None:
    """Every kind at every level once, in random order, at random times after the warm-up."""
    plan = [(kind, level) for kind in args.kinds for level in range(1, 6)]
    rng.shuffle(plan)
    horizon = args.hours * 3600.0
    usable = horizon - args.warmup - 1800.0
    slot = usable / len(plan)
    if slot < args.duration + 600:
        raise SystemExit(f"--hours {args.hours} is too short for {len(plan)} injections of {args.duration} s")
    for index, (kind, level) in enumerate(plan):
        start = args.warmup + 1800.0 + index * slot + rng.uniform(300, slot - args.duration - 300)
        scene.injections.append(Injection(start, start + args.duration, kind, level))


def configurations(args) -> dict[str, WatchRules]:
    common = dict(smooth=args.smooth, hold_s=args.hold)
    rules = {f"baseline/{mode}": WatchRules(baseline_warmup=args.warmup, evidence=mode, **common)
             for mode in ("model", "signals", "model+signals")}
    for drop in args.drops:
        for mode in ("model", "model+signals"):
            rules[f"baseline/{mode}/drop={drop}"] = WatchRules(baseline_warmup=args.warmup, drop=drop, evidence=mode,
                                                                **common)
    for threshold in THRESHOLDS:
        rules[f"threshold={threshold}"] = WatchRules(threshold=threshold, baseline_warmup=float("inf"), **common)
    return rules


def simulate(scenes: list[Scene], scorer, rules: dict[str, WatchRules], args) -> tuple[dict, str]:
    """Every frame of every camera scored and looked at once (or read back from --frames), then fed
    to every configuration. Frames read back whose signals were measured by other code are made and
    measured again (the same frames: every camera's randomness is its own), their scores kept."""
    frames = load_frames(args.frames, scenes, args) if args.frames and args.frames.exists() else None
    if frames is None or str(frames.get("signals_version")) != signals_version():
        if frames is not None:
            print("  measuring the signals again (runtime/watch/signals.py changed); scores kept", file=sys.stderr)
        frames = score_frames(scenes, scorer, args, kept=frames)
        if args.frames:
            np.savez_compressed(args.frames, **frames)
    return replay(scenes, frames, rules, args), str(frames["model"])


def signals_version() -> str:
    return hashlib.sha256((REPO / "runtime" / "watch" / "signals.py").read_bytes()).hexdigest()[:16]


def score_frames(scenes: list[Scene], scorer, args, kept: dict | None = None) -> dict[str, np.ndarray]:
    """Per camera, what the watch reads of each frame: its score (`kept`'s when given), contrast,
    change from the frame before and image signals (NaN where a uniform picture has none)."""
    steps = int(args.hours * 3600.0 / args.interval)
    out = {f"{s.name}/{k}": np.full((steps,) + ((len(SIGNAL_NAMES),) if k == "signals" else ()), np.nan, np.float32)
           for s in scenes for k in ("score", "contrast", "moved", "signals")}
    previous = {scene.name: None for scene in scenes}
    began = time.monotonic()
    for step in range(steps):
        t = step * args.interval
        images = [scene.frame(t) for scene in scenes]
        if kept is None:
            scores = [row.scores[scorer.scene] for row in scorer.score_many(images)]
        else:
            scores = [kept[f"{scene.name}/score"][step] for scene in scenes]
        for scene, image, score in zip(scenes, images, scores):
            look = look_at(image, 6.0)
            moved = change(look.picture, previous[scene.name])
            previous[scene.name] = look.picture
            out[f"{scene.name}/score"][step] = score
            out[f"{scene.name}/contrast"][step] = look.contrast
            out[f"{scene.name}/moved"][step] = np.nan if moved is None else moved
            if look.signals is not None:
                out[f"{scene.name}/signals"][step] = [look.signals[n] for n in SIGNAL_NAMES]
        if step % max(1, steps // 20) == 0:
            print(f"  {100 * step / steps:3.0f}%  {time.monotonic() - began:6.0f} s", file=sys.stderr, flush=True)
    out["model"] = np.array(scorer.describe() if kept is None else str(kept["model"]))
    out["signals_version"] = np.array(signals_version())
    out["run"] = np.array(run_key(scenes, args))
    return out


def run_key(scenes: list[Scene], args) -> str:
    """What decides the recorded frames: a file made for other settings is refused, not misread."""
    return json.dumps({"seed": args.seed, "hours": args.hours, "interval": args.interval, "duration": args.duration,
                       "warmup": args.warmup, "kinds": list(args.kinds), "model": args.model,
                       "cameras": [[s.name, s.mono] for s in scenes]}, sort_keys=True)


def load_frames(path: Path, scenes: list[Scene], args) -> dict[str, np.ndarray]:
    data = dict(np.load(path))
    if "run" in data and str(data["run"]) != run_key(scenes, args):
        raise SystemExit(f"--frames {path} was recorded with other settings ({data['run']}); "
                         f"give another file to score these")
    steps = int(args.hours * 3600.0 / args.interval)
    missing = [s.name for s in scenes if f"{s.name}/score" not in data or len(data[f"{s.name}/score"]) != steps]
    if missing:
        raise SystemExit(f"--frames {path} holds no {args.hours:g} h run of {', '.join(missing)}; "
                         f"give another file to score them")
    return data


def replay(scenes: list[Scene], frames: dict[str, np.ndarray], rules: dict[str, WatchRules], args) -> dict:
    """The recorded frames fed to every configuration's watch of every camera. A frame's picture is
    stood in for by one float pixel stepping by the recorded change, so the frozen check sees what it
    saw live."""
    events = {scene.name: {name: [] for name in rules} for scene in scenes}
    for scene in scenes:
        watches = {name: CameraWatch(rule, 0.0, name=scene.name) for name, rule in rules.items()}
        score, spread, moved, signals = (frames[f"{scene.name}/{k}"] for k in ("score", "contrast", "moved", "signals"))
        level = 0.0
        for step in range(len(score)):
            t = step * args.interval
            if not np.isnan(moved[step]):
                level += float(moved[step]) * (1 if step % 2 else -1)
            look = Look(np.array([[level]], np.float32), float(spread[step]),
                        None if np.isnan(signals[step][0]) else dict(zip(SIGNAL_NAMES, map(float, signals[step]))))
            for name, watch in watches.items():
                raised = watch.on_picture(t, look=look) + watch.on_score(t, float(score[step]))
                events[scene.name][name] += [(e["event"], t) for e in raised]
    return events


def evaluate(scenes: list[Scene], events: dict, name: str, args) -> dict:
    """Per kind and level: detected share and seconds to detect; false alarms per camera-day."""
    grace = args.hold + 2 * args.interval
    found: dict[tuple[str, int], list[float | None]] = {}
    false_alarms = 0
    for scene in scenes:
        raised = [t for event, t in events[scene.name][name] if event == "degraded"]
        for injection in scene.injections:
            hits = [t for t in raised if injection.start <= t <= injection.end + grace]
            found.setdefault((injection.kind, injection.level), []).append(hits[0] - injection.start if hits else None)
        false_alarms += sum(not any(i.start <= t <= i.end + grace for i in scene.injections) for t in raised)
    camera_days = len(scenes) * args.hours / 24.0
    idle_degraded = sum(degraded_idle_s(scene, events[scene.name][name], args) for scene in scenes) / 3600.0
    table = {}
    for (kind, level), delays in sorted(found.items()):
        seen = [d for d in delays if d is not None]
        table[f"{kind}/{level}"] = {"detected": len(seen) / len(delays),
                                    "median_s": statistics.median(seen) if seen else None}
    return {"table": table, "false_alarms_per_camera_day": false_alarms / camera_days, "false_alarms": false_alarms,
            "idle_degraded_h_per_camera_day": idle_degraded / camera_days}


def degraded_idle_s(scene: Scene, events: list, args) -> float:
    """Seconds the camera showed degraded while nothing was injected (nor within the hold after one
    ended): a state that never recovers is a false alarm that lasts, though it is raised only once."""
    grace = args.hold + 2 * args.interval
    spans, start = [], None
    for event, t in events:
        if event == "degraded" and start is None:
            start = t
        elif event == "recovered" and start is not None:
            spans.append((start, t))
            start = None
    if start is not None:
        spans.append((start, args.hours * 3600.0))
    idle = 0.0
    for begin, end in spans:
        covered = [(max(begin, i.start), min(end, i.end + grace)) for i in scene.injections]
        idle += (end - begin) - sum(max(0.0, b - a) for a, b in covered)
    return idle


def share(result: dict, levels) -> float:
    rows = [row["detected"] for key, row in result["table"].items() if int(key.split("/")[1]) in levels]
    return sum(rows) / len(rows) if rows else 0.0


def best_threshold(results: dict) -> str:
    """The single threshold for all cameras with the fewest false alarms, then the most detected."""
    candidates = [name for name in results if name.startswith("threshold=")]
    return min(candidates, key=lambda n: (results[n]["false_alarms"], -share(results[n], range(2, 6))))


def print_tables(results: dict, chosen: list[str], args) -> None:
    keys = sorted(next(iter(results.values()))["table"])
    header = "| kind/level | " + " | ".join(chosen) + " |"
    print(header)
    print("|" + "---|" * (len(chosen) + 1))
    for key in keys:
        cells = []
        for name in chosen:
            row = results[name]["table"][key]
            median = "-" if row["median_s"] is None else f"{row['median_s']:.0f} s"
            cells.append(f"{100 * row['detected']:.0f}% ({median})")
        print(f"| {key} | " + " | ".join(cells) + " |")
    print("| **level 2** | " + " | ".join(f"{100 * share(results[n], [2]):.0f}%" for n in chosen) + " |")
    print("| **levels 3-5** | " + " | ".join(f"{100 * share(results[n], [3, 4, 5]):.0f}%" for n in chosen) + " |")
    print("| **false alarms / camera-day** | " +
          " | ".join(f"{results[n]['false_alarms_per_camera_day']:.2f}" for n in chosen) + " |")
    print("| **hours degraded with nothing injected / camera-day** | " +
          " | ".join(f"{results[n]['idle_degraded_h_per_camera_day']:.2f}" for n in chosen) + " |")


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", type=Path, required=True, help="a folder of photos, one camera each")
    parser.add_argument("--cameras", default=None, help="comma-separated photo names (default: every photo)")
    parser.add_argument("--mono", default="", help="cameras that turn gray (infrared) at night, comma-separated")
    parser.add_argument("--model", default=None, help="exported model (default: the embedded demo model)")
    parser.add_argument("--hours", type=float, default=24.0)
    parser.add_argument("--interval", type=float, default=20.0, help="seconds between scored frames")
    parser.add_argument("--duration", type=float, default=600.0, help="seconds each degradation lasts")
    parser.add_argument("--hold", type=float, default=60.0)
    parser.add_argument("--smooth", type=int, default=3)
    parser.add_argument("--warmup", type=float, default=600.0)
    parser.add_argument("--drops", type=lambda s: [float(x) for x in s.split(",")], default=[0.06, 0.08, 0.12])
    parser.add_argument("--kinds", type=lambda s: s.split(","), default=list(KINDS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--frames", type=Path, default=None,
                        help="an .npz of every frame's score and signals: written after scoring, read instead of "
                             "scoring when it exists (judge changed watch rules without scoring again)")
    parser.add_argument("--json", type=Path, default=None, help="write the raw events of every configuration here")
    parser.add_argument("--held-out", default="", help="cameras kept apart from every choice, reported on their own")
    parser.add_argument("--best-threshold", type=float, default=None,
                        help="the single threshold to report as best (default: chosen on this run's tuning "
                             "cameras; give the one another run chose when every camera here is held out)")
    return parser.parse_args()


def main() -> None:
    args = parse_arguments()

    rng = np.random.default_rng(args.seed)
    photos = sorted(p for p in args.photos.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if args.cameras:
        wanted = args.cameras.split(",")
        photos = [p for p in photos if p.stem in wanted]
    mono = set(filter(None, args.mono.split(",")))
    scenes = [load_scene(p, np.random.default_rng(rng.integers(1 << 32)), p.stem in mono) for p in photos]
    for scene in scenes:
        schedule(scene, args, np.random.default_rng(rng.integers(1 << 32)))
    held_out = set(filter(None, args.held_out.split(",")))
    rules = configurations(args)
    best = None if args.best_threshold is None else f"threshold={args.best_threshold:g}"
    if best is None and not any(s.name not in held_out for s in scenes):
        raise SystemExit("every camera is held out: give --best-threshold (the one a run with tuning cameras chose)")
    if best is not None and best not in rules:
        raise SystemExit(f"--best-threshold {args.best_threshold:g} is not on the grid ({THRESHOLDS[0]:g} to "
                         f"{THRESHOLDS[-1]:g} in steps of 0.02)")
    cpu = hardware.detect_cpu()
    began = time.monotonic()
    scorer = None if args.frames and args.frames.exists() else Scorer(args.model)     # scores kept there
    events, model = simulate(scenes, scorer, rules, args)
    if args.json:        # the raw events first: any configuration can be judged again without simulating
        args.json.write_text(json.dumps({"events": events, "cameras": [s.name for s in scenes],
                                         "injections": {s.name: [vars(i) for i in s.injections] for s in scenes}}))
    print(f"\n{len(scenes)} cameras ({', '.join(s.name for s in scenes)}; gray at night: {', '.join(sorted(mono)) or 'none'}; "
          f"held out from every choice: {', '.join(sorted(held_out)) or 'none'}), {args.hours:g} h each, a frame every "
          f"{args.interval:g} s, hold {args.hold:g} s, smooth {args.smooth}, warm-up {args.warmup:g} s; {model}; "
          f"CPU: {cpu.model} ({', '.join(sorted(f for f in cpu.features if f in FLAGS))}); wall {time.monotonic() - began:.0f} s")
    groups = [("tuning cameras", [s for s in scenes if s.name not in held_out])]
    if held_out:
        groups += [("held-out cameras", [s for s in scenes if s.name in held_out]), ("all cameras", scenes)]
    groups = [(title, group) for title, group in groups if group]
    if len(groups) == 2:            # every camera held out: "all" would repeat them
        groups = groups[:1]
    where = "chosen on the tuning cameras" if args.best_threshold is None else "given by --best-threshold"
    for title, group in groups:
        results = {name: evaluate(group, events, name, args) for name in rules}
        best = best or best_threshold(results)          # chosen on the tuning cameras, kept for the others
        chosen = ["baseline/model", "baseline/signals", "baseline/model+signals", best, "threshold=0.45"]
        chosen += [name for name in results if "/drop=" in name]
        print(f"\n### {title}: {', '.join(s.name for s in group)} (best single threshold {where})\n")
        print_tables(results, chosen, args)

if __name__ == "__main__":
    main()
