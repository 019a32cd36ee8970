"""The demo's tour of the whole chain on the embedded demo model, torch-free, in about a minute.

1. Ranks held-out photographs (never seen in training, calibration or any choice) at
   every level of every degradation kind the demo model was trained on, degraded by
   runtime.demo.heldout (independent of the training code), and says per kind whether the
   model is reliable there (the card claims only those kinds).
2. Checks ONNX Runtime FP32 against OpenVINO FP32 and ONNX Runtime INT8.
3. Scores a generated clip that degrades and recovers with the stream runner,
   writing an annotated video, per-frame JSON lines and a plot of the score.
4. Compares its figures with the model card's, so the card cannot drift from the model.

`tour` runs the four steps and reports through the `say` it is given (the command passes
click.echo); `ranking` is also what scripts/ship_demo_model.py writes the card's figures with.
A user's mistake (a folder that cannot be written, an incomplete install) is a UserError.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

import numpy as np

from contract.errors import UserError
from runtime.shipped import DEMO_ASSETS as ASSETS, DEMO_CARD as CARD, DEMO_MODEL, MODELS_DIR

OUTPUTS = ("clip.mp4", "clip_annotated.mp4", "clip_scores.jsonl", "clip_scores.png")
Say = Callable[[str], None]


def held_out_photos(card: dict) -> dict:
    """The card's held-out photos (RGB uint8), shipped pristine in runtime/demo/assets/photos."""
    import cv2

    photos = {}
    for photo in card["held_out_photos"]:
        path = ASSETS / "photos" / f"{photo}.png"
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise UserError(f"the demo photo {path} is missing; reinstall gamma-edge")
        photos[photo] = np.ascontiguousarray(bgr[..., ::-1])
    return photos


def held_out_items(card: dict) -> list:
    """Every held-out image of the card's evaluation (runtime.demo.heldout.Item: photo, kind, level, draw,
    BGR image): each photo pristine, then every trained kind x level x draw, degraded independently of
    the training code."""
    from runtime.demo import heldout  # Pillow and OpenCV load only when the photos are degraded

    return list(heldout.items(held_out_photos(card), card["kinds"], card["draws"]))


def ranking(scorer, card: dict) -> tuple[dict, list, np.ndarray]:
    """Per trained kind, on the held-out photos (runtime.demo.heldout.evaluate): SRCC against the level
    within each photo (mean and worst photo), pooled over photos, the fraction of (pristine, degraded)
    pairs ranked right, and whether the kind clears the bar the card claims it by."""
    from runtime.demo import heldout

    items = held_out_items(card)
    scores = np.array([row.score for row in scorer.score_many([item.image for item in items])])
    return heldout.evaluate(items, scores, card["kinds"]), items, scores


def tour(out: Path, threads: int | None, say: Say) -> None:
    """The four steps, then where their outputs are."""
    from runtime.inference.scorer import Scorer

    card = installed_card()
    check_writable(out)
    started = time.perf_counter()
    fp32 = Scorer(DEMO_MODEL, backend="onnxruntime", device="cpu", threads=threads)
    say(f"Demo model: {card['name']} ({card['summary']})")
    say(f"  {fp32.describe()}")
    per_kind, items, reference = show_ranking(fp32, card, say)
    show_parity(items, reference, threads, say)
    say("\n3. Live scoring of a clip that degrades and recovers")
    video_summary = stream_demo(card, out, threads, say)
    show_card_check(per_kind, card, say)
    say(f"\nDone in {time.perf_counter() - started:.0f} s. Outputs in {out}/:")
    for name in OUTPUTS:
        say(f"   {out / name}")
    say(video_summary)
    say("\nNext: gamma-edge score YOUR_PHOTOS/   |   gamma-edge run 0 (camera)   |   gamma-edge benchmark")


def installed_card() -> dict:
    """The model card, once the card and the demo model are both installed."""
    if not CARD.is_file() or not (DEMO_MODEL / "manifest.json").is_file():
        raise UserError("the embedded demo model is not installed in this copy of gamma-edge; "
                        "reinstall it (pip install -e .) from a complete checkout")
    return json.loads(CARD.read_text())


def check_writable(out: Path) -> None:
    """The output folder is made and written to before any work, so a folder the user cannot write
    to is one sentence, not a traceback half-way through."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".gamma-edge-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise UserError(
            f"cannot write the demo's outputs to '{out}' ({exc.strerror or exc}); "
            "pass --out with a folder you can write to") from None


def show_ranking(fp32, card: dict, say: Say):
    """1. The held-out photos at every level of every trained kind: mean scores, the four figures,
    and where the model can be relied on."""
    from contract.correlation import srcc
    from runtime.demo import heldout

    bar = heldout.CLAIM_BAR
    say(f"\n1. Held-out photos ({', '.join(card['held_out_photos'])}; never seen in training, calibration "
        f"or any choice) at levels 0-{card['levels']} of each kind it was trained on, {card['draws']} "
        f"independent random degradations per level, {fp32.preprocess.crops_per_image} crops each.\n"
        "   SRCC vs the level within each photo (mean, worst photo), pooled over photos, and the share of "
        "(pristine, degraded) pairs ranked right.\n"
        f"   'reliable' = within one scene, SRCC >= {bar['srcc']} and pairs >= {bar['pairs']:.0%}: only those kinds "
        "are claimed, and only within one scene (the order of one scene's versions, which a camera watch\n"
        "   relies on). Across scenes (pooled) nothing is claimed: four photos are too few to judge it.")
    per_kind, items, reference = ranking(fp32, card)
    header = f"   {'degradation':15s}" + "".join(f"{'L' + str(lv):>6s}" for lv in range(card["levels"] + 1))
    say(header + f"{'SRCC':>7s}{'worst':>7s}{'pooled':>7s}{'pairs':>7s}  verdict")
    for kind, result in per_kind.items():
        say(f"   {kind:15s}" + "".join(f"{m:6.3f}" for m in result["mean_by_level"])
            + f"{result['srcc']:7.3f}{result['srcc_min']:7.3f}{result['pooled']:7.3f}{result['pairs']:7.1%}"
            + ("  reliable" if result["claimed"] else "  NOT LEARNED"))
    pooled = srcc(reference, -np.array([item.level for item in items]))
    reliable = [k for k, r in per_kind.items() if r["claimed"]]
    say(f"   all kinds and photos pooled: SRCC {pooled:.3f} over {len(items)} images")
    rely = (f"Rely on it for: {', '.join(reliable)}. Not for the other kinds, nor" if reliable else
            "Rely on it for no kind: it learned none to that bar on photos it never saw. Nor")
    say(f"   {rely} for real camera defects, aesthetics, faces, AI-generated or underwater images: "
        "it is a demo of the toolkit, not the paper's model trained on 12 datasets.")
    return per_kind, items, reference


def show_parity(items, reference, threads, say: Say) -> None:
    """2. OpenVINO and INT8 against ONNX Runtime FP32 on the same images; each engine is named with
    the precision it reports having compiled, not the one it was meant to run."""
    from contract.correlation import srcc
    from runtime.inference.scorer import Scorer

    say("\n2. Parity on the same images (vs ONNX Runtime FP32)")
    others = [Scorer(DEMO_MODEL, backend="openvino", device="cpu", threads=threads)]
    if (MODELS_DIR / "demo-int8" / "manifest.json").is_file():
        others.append(Scorer(MODELS_DIR / "demo-int8", backend="onnxruntime", device="cpu", threads=threads))
    engines = {"OnnxRuntimeBackend": "ONNX Runtime", "OpenVINOBackend": "OpenVINO"}
    images = [item.image for item in items]
    for scorer in others:
        name = f"{engines[type(scorer.backend).__name__]} {scorer.backend.precision.upper()}"
        scores = np.array([row.score for row in scorer.score_many(images)])
        say(f"   {name:18s} max |diff| {float(np.abs(scores - reference).max()):.2e}   "
            f"SRCC vs FP32 {srcc(scores, reference):.4f}")


def show_card_check(per_kind: dict, card: dict, say: Say) -> None:
    """4. Whether the model card states the figures just measured."""
    stated = card["metrics"]["per_kind"]
    mismatches = [kind for kind, result in per_kind.items()
                  if kind not in stated or result["claimed"] != stated[kind]["claimed"]
                  or any(abs(result[key] - stated[kind][key]) > 0.0015 for key in ("srcc", "srcc_min", "pooled", "pairs"))]
    say("\n4. Model card check: " + ("the figures above are the ones the model card states"
                                     if not mismatches else
                                     f"differs from the model card for {', '.join(mismatches)}"))


def stream_demo(card: dict, out: Path, threads, say: Say) -> str:
    """3. The stream runner's Python API on a generated clip, as `gamma-edge run clip.mp4 --crops center
    --smooth 5 --threshold T --jsonl ... --save ...` would run it; returns the clip's summary line."""
    import cv2

    from runtime.demo.media import plot_scores, write_degrading_clip
    from runtime.inference.scorer import Scorer
    from runtime.live.runner import RunOptions, StreamRunner
    from runtime.live.source import parse_source, quiet_native_logs

    photo = cv2.imread(str(ASSETS / "photos" / f"{card['held_out_photos'][0]}.png"), cv2.IMREAD_COLOR)
    clip, annotated, jsonl, plot = (out / name for name in OUTPUTS)
    quiet_native_logs()
    severities = write_degrading_clip(photo, clip, card["claimed"] or card["kinds"])
    threshold = card.get("threshold")
    scorer = Scorer(DEMO_MODEL, crops="center", threads=threads)
    with open(jsonl, "w", encoding="utf-8") as lines:
        # the clip's own normal, learned from its first clean second and a half; no threshold needed
        options = RunOptions(smooth=5, threshold=threshold, jsonl=lines, save=str(annotated), baseline_warmup=1.5,
                             hold_s=0.3, evidence="model+signals")
        summary = StreamRunner(scorer, parse_source(str(clip)), options, log=lambda line: None).run()
    say(f"   {summary.text()}")
    rows = [json.loads(line) for line in jsonl.read_text().splitlines() if line.strip()]
    frames = [r for r in rows if "score" in r and "event" not in r]
    alerts = [r for r in rows if r.get("event") in ("degraded", "recovered")]
    plot_scores(frames, severities, plot, threshold=threshold, alerts=alerts)
    for alert in alerts:
        say(f"   {alert['t']:5.2f} s  {alert['event']}" + (f": {alert['reason']}" if alert["event"] == "degraded" else ""))
    clean = [r["score"] for r in frames if severities[r["frame"]][0] is None]
    degraded = [r["score"] for r in frames if severities[r["frame"]][0] is not None and severities[r["frame"]][1] >= 3]
    flagged = sum(1 for r in frames if r.get("low"))
    return (f"   {len(frames)} frames scored; mean score {np.mean(clean):.3f} on clean frames, "
            f"{np.mean(degraded):.3f} on strongly degraded ones; {flagged} frames flagged below {threshold}")
