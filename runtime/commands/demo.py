"""`gamma-edge demo`: the whole chain on the embedded demo model, torch-free, in about a minute.

1. Ranks held-out photographs (never seen in training, calibration or any choice) at
   every level of every degradation kind the demo model was trained on, degraded by
   runtime.demo.heldout (independent of the training code), and says per kind whether the
   model is reliable there (the card claims only those kinds).
2. Checks ONNX Runtime FP32 against OpenVINO FP32 and ONNX Runtime INT8.
3. Scores a generated clip that degrades and recovers with the stream runner,
   writing an annotated video, per-frame JSON lines and a plot of the score.
4. Compares its figures with the model card's, so the card cannot drift from the model.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import click
import numpy as np

from runtime.shipped import DEMO_ASSETS as ASSETS, DEMO_CARD as CARD


def _runtime_models() -> Path:
    import runtime.inference.scorer
    return runtime.inference.scorer.DEMO_MODEL.parent


def held_out_photos(card: dict) -> dict:
    """The card's held-out photos (RGB uint8), shipped pristine in gamma_edge/assets/demo/photos."""
    import cv2

    photos = {}
    for photo in card["held_out_photos"]:
        path = ASSETS / "photos" / f"{photo}.png"
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise click.ClickException(f"the demo photo {path} is missing; reinstall gamma-edge")
        photos[photo] = np.ascontiguousarray(bgr[..., ::-1])
    return photos


def held_out_items(card: dict) -> list:
    """Every held-out image of the card's evaluation (runtime.demo.heldout.Item: photo, kind, level, draw,
    BGR image): each photo pristine, then every trained kind x level x draw, degraded independently of
    the training code."""
    from runtime.demo import heldout
    return list(heldout.items(held_out_photos(card), card["kinds"], card["draws"]))


def ranking(scorer, card: dict) -> tuple[dict, list, np.ndarray]:
    """Per trained kind, on the held-out photos (runtime.demo.heldout.evaluate): SRCC against the level
    within each photo (mean and worst photo), pooled over photos, the fraction of (pristine, degraded)
    pairs ranked right, and whether the kind clears the bar the card claims it by."""
    from runtime.demo import heldout
    items = held_out_items(card)
    scores = np.array([row.score for row in scorer.score_many([item.image for item in items])])
    return heldout.evaluate(items, scores, card["kinds"]), items, scores


@click.command("demo")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("gamma-edge-demo"),
              show_default=True, help="Folder for the annotated video, the JSON lines and the plot.")
@click.option("--threads", type=int, default=None, help="Inference threads (default: all cores).")
def demo_command(out: Path, threads):
    """Run the whole chain on the embedded demo model (10-40 s on a 2-core CPU).

    The demo model is small and rates only the degradations its model card claims
    (printed as "reliable"; the others are listed as not learned); it is not the
    paper's model. For that, convert the official weights with 'gamma-edge convert'
    and export them.
    """
    from runtime import Scorer
    from contract.errors import UserError

    if not CARD.is_file() or not (_runtime_models() / "demo" / "manifest.json").is_file():
        raise click.ClickException("the embedded demo model is not installed in this copy of gamma-edge; "
                                   "reinstall it (pip install -e .) from a complete checkout")
    card = json.loads(CARD.read_text())
    _check_writable(out)
    started = time.perf_counter()
    try:
        fp32 = Scorer(_runtime_models() / "demo", backend="onnxruntime", device="cpu", threads=threads)
        click.echo(f"Demo model: {card['name']} ({card['summary']})")
        click.echo(f"  {fp32.describe()}")
        per_kind, items, reference = _show_ranking(fp32, card)
        _show_parity(items, reference, threads)
        click.echo("\n3. Live scoring of a clip that degrades and recovers")
        video_summary = _stream_demo(card, out, threads)
    except UserError as exc:
        raise click.ClickException(str(exc)) from None
    _show_card_check(per_kind, card)
    click.echo(f"\nDone in {time.perf_counter() - started:.0f} s. Outputs in {out}/:")
    for name in ("clip.mp4", "clip_annotated.mp4", "clip_scores.jsonl", "clip_scores.png"):
        click.echo(f"   {out / name}")
    click.echo(video_summary)
    click.echo("\nNext: gamma-edge score YOUR_PHOTOS/   |   gamma-edge run 0 (camera)   |   gamma-edge benchmark")


def _show_ranking(fp32, card: dict):
    """1. The held-out photos at every level of every trained kind: mean scores, the four figures,
    and where the model can be relied on."""
    from runtime.demo import heldout
    from contract.correlation import srcc

    bar = heldout.CLAIM_BAR
    click.echo(f"\n1. Held-out photos ({', '.join(card['held_out_photos'])}; never seen in training, calibration "
               f"or any choice) at levels 0-{card['levels']} of each kind it was trained on, {card['draws']} "
               f"independent random degradations per level, {fp32.preprocess.crops_per_image} crops each.\n"
               "   SRCC vs the level within each photo (mean, worst photo), pooled over photos, and the share of "
               "(pristine, degraded) pairs ranked right.\n"
               f"   'reliable' = SRCC >= {bar['srcc']}, pooled >= {bar['pooled']} and pairs >= {bar['pairs']:.0%}: "
               "only those kinds are claimed.")
    per_kind, items, reference = ranking(fp32, card)
    header = f"   {'degradation':15s}" + "".join(f"{'L' + str(lv):>6s}" for lv in range(card["levels"] + 1))
    click.echo(header + f"{'SRCC':>7s}{'worst':>7s}{'pooled':>7s}{'pairs':>7s}  verdict")
    for kind, result in per_kind.items():
        click.echo(f"   {kind:15s}" + "".join(f"{m:6.3f}" for m in result["mean_by_level"])
                   + f"{result['srcc']:7.3f}{result['srcc_min']:7.3f}{result['pooled']:7.3f}{result['pairs']:7.1%}"
                   + ("  reliable" if result["claimed"] else "  NOT LEARNED"))
    pooled = srcc(reference, -np.array([item.level for item in items]))
    reliable = [k for k, r in per_kind.items() if r["claimed"]]
    click.echo(f"   all kinds and photos pooled: SRCC {pooled:.3f} over {len(items)} images")
    rely = (f"Rely on it for: {', '.join(reliable)}. Not for the other kinds, nor" if reliable else
            "Rely on it for no kind: it learned none to that bar on photos it never saw. Nor")
    click.echo(f"   {rely} for real camera defects, aesthetics, faces, AI-generated or underwater images: "
               "it is a demo of the toolkit, not the paper's model trained on 12 datasets.")
    return per_kind, items, reference


def _show_parity(items, reference, threads) -> None:
    """2. OpenVINO and INT8 against ONNX Runtime FP32 on the same images; each engine is named with
    the precision it reports having compiled, not the one it was meant to run."""
    from runtime import Scorer
    from contract.correlation import srcc

    click.echo("\n2. Parity on the same images (vs ONNX Runtime FP32)")
    models = _runtime_models()
    others = [Scorer(models / "demo", backend="openvino", device="cpu", threads=threads)]
    if (models / "demo-int8" / "manifest.json").is_file():
        others.append(Scorer(models / "demo-int8", backend="onnxruntime", device="cpu", threads=threads))
    engines = {"OnnxRuntimeBackend": "ONNX Runtime", "OpenVINOBackend": "OpenVINO"}
    images = [item.image for item in items]
    for scorer in others:
        name = f"{engines[type(scorer.backend).__name__]} {scorer.backend.precision.upper()}"
        scores = np.array([row.score for row in scorer.score_many(images)])
        click.echo(f"   {name:18s} max |diff| {float(np.abs(scores - reference).max()):.2e}   "
                   f"SRCC vs FP32 {srcc(scores, reference):.4f}")


def _show_card_check(per_kind: dict, card: dict) -> None:
    """4. Whether the model card states the figures just measured."""
    stated = card["metrics"]["per_kind"]
    mismatches = [kind for kind, result in per_kind.items()
                  if kind not in stated or result["claimed"] != stated[kind]["claimed"]
                  or any(abs(result[key] - stated[kind][key]) > 0.0015 for key in ("srcc", "srcc_min", "pooled", "pairs"))]
    click.echo("\n4. Model card check: " + ("the figures above are the ones the model card states"
                                            if not mismatches else
                                            f"differs from the model card for {', '.join(mismatches)}"))


def _check_writable(out: Path) -> None:
    """The output folder is made and written to before any work, so a folder the user cannot write
    to is one sentence, not a traceback half-way through."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".gamma-edge-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise click.ClickException(
            f"cannot write the demo's outputs to '{out}' ({exc.strerror or exc}); "
            "pass --out with a folder you can write to") from None


def _stream_demo(card: dict, out: Path, threads) -> str:
    """The stream runner's Python API on a generated clip, as `gamma-edge run clip.mp4 --crops center
    --smooth 5 --threshold T --jsonl ... --save ...` would run it."""
    import cv2

    from runtime.demo.media import plot_scores, write_degrading_clip
    from runtime import Scorer
    from runtime.live.stream import RunOptions, StreamRunner, parse_source, quiet_native_logs

    photo = cv2.imread(str(ASSETS / "photos" / f"{card['held_out_photos'][0]}.png"), cv2.IMREAD_COLOR)
    clip, annotated, jsonl, plot = (out / "clip.mp4", out / "clip_annotated.mp4", out / "clip_scores.jsonl",
                                    out / "clip_scores.png")
    quiet_native_logs()
    severities = write_degrading_clip(photo, clip, card["claimed"] or card["kinds"])
    threshold = card.get("threshold")
    scorer = Scorer(_runtime_models() / "demo", crops="center", threads=threads)
    with open(jsonl, "w", encoding="utf-8") as lines:
        options = RunOptions(smooth=5, threshold=threshold, jsonl=lines, save=str(annotated))
        summary = StreamRunner(scorer, parse_source(str(clip)), options, log=lambda line: None).run()
    click.echo(f"   {summary.text()}")
    rows = [json.loads(line) for line in jsonl.read_text().splitlines() if line.strip()]
    frames = [r for r in rows if "score" in r]
    plot_scores(frames, severities, plot, threshold=threshold)
    clean = [r["score"] for r in frames if severities[r["frame"]][0] is None]
    degraded = [r["score"] for r in frames if severities[r["frame"]][0] is not None and severities[r["frame"]][1] >= 3]
    flagged = sum(1 for r in frames if r.get("low"))
    return (f"   {len(frames)} frames scored; mean score {np.mean(clean):.3f} on clean frames, "
            f"{np.mean(degraded):.3f} on strongly degraded ones; {flagged} frames flagged below {threshold}")
