"""Copy a built demo model into the package and write its model card from measured figures.

    python scripts/ship_demo_model.py WORK_DIR --test-photos P1 P2 ...   (run by scripts/build_demo_model.sh)

The test photos are scored here for the first and only time: no training, calibration or recipe
choice saw them. The card's figures are computed by the same function `gamma-edge demo` runs
(runtime.demo.tour.ranking, on runtime.demo.heldout's independent degradations), so the demo can check
that it reproduces them; a kind is claimed only where it clears runtime.demo.heldout.CLAIM_BAR.
"""
import argparse
import csv
import json
import shutil
import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from runtime.demo import heldout  # noqa: E402
from runtime.demo.tour import ASSETS, CARD, ranking  # noqa: E402
from export.pipeline import DEFAULT_CHECKPOINT  # noqa: E402
from contract.degradations import DISTORTIONS, RECIPE, describe, mos_of  # noqa: E402
from gamma_edge.model import GammaConfig  # noqa: E402
from runtime import Scorer  # noqa: E402
from runtime.commands.benchmark import SAMPLES_DIR  # noqa: E402
from contract.correlation import srcc  # noqa: E402
from contract.manifest import MANIFEST_NAME  # noqa: E402
from runtime.inference.scorer import DEMO_MODEL  # noqa: E402
from training.synth import load_photo, scene_source  # noqa: E402

SAMPLE_LEVELS = (2, 5)
SAMPLE_KINDS = 5          # kinds in runtime/samples (the first ones, in RECIPE order)


def main(work: Path, test_photos: list[str], short_side: int) -> None:
    synthetic = read_synthetic_set(work / "data", test_photos)
    ship_files(work, test_photos, short_side)
    # figures: the same code path as `gamma-edge demo`
    card = {"name": "gamma-edge demo model", "held_out_photos": list(test_photos), "kinds": synthetic["kinds"],
            "levels": synthetic["levels"], "draws": heldout.DRAWS}
    held_out = score_held_out(card)
    card.update(card_entries(work, card, synthetic, held_out))
    CARD.write_text(json.dumps(card, indent=2) + "\n")
    write_card_markdown(card)
    print(json.dumps(card["metrics"], indent=2))


def read_synthetic_set(data: Path, test_photos: list[str]) -> dict:
    """What the synthetic set holds: its training scenes (photos, views, dead leaves), validation
    photos, kinds (in RECIPE order) and levels; exits if a test photo is among them."""
    rows = list(csv.DictReader(open(data / "meta_info.csv")))
    scenes = sorted({r["photo"] for r in rows if r["split"] == "train"})
    leaves = [scene for scene in scenes if scene_source(scene) is None]
    trained_on = sorted({scene_source(scene) for scene in scenes if scene not in leaves})
    validation = sorted({r["photo"] for r in rows if r["split"] == "test"})
    seen = set(trained_on) | set(validation)
    if seen & set(test_photos):
        sys.exit(f"test photos {sorted(seen & set(test_photos))} are in the training data; choose others")
    trained = {r["distortion"] for r in rows}
    return {"scenes": scenes, "leaves": leaves, "trained_on": trained_on, "validation": validation,
            "kinds": [k for k in dict.fromkeys([*RECIPE, *DISTORTIONS]) if k in trained],
            "levels": max(int(r["level"]) for r in rows)}


def ship_files(work: Path, test_photos: list[str], short_side: int) -> None:
    """graphs -> runtime/models, checkpoint -> gamma_edge/assets/demo, pristine test photos -> runtime/demo/assets"""
    for name in ("demo", "demo-int8"):
        target = DEMO_MODEL.parent / name
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(work / name, target)
    shutil.rmtree(ASSETS / "photos", ignore_errors=True)
    (ASSETS / "photos").mkdir(parents=True)
    shutil.copy(work / "run" / "last.safetensors", DEFAULT_CHECKPOINT)
    photos = {photo: load_photo(photo, short_side) for photo in test_photos}
    for photo, rgb in photos.items():
        cv2.imwrite(str(ASSETS / "photos" / f"{photo}.png"), np.ascontiguousarray(rgb[..., ::-1]),
                    [cv2.IMWRITE_PNG_COMPRESSION, 9])


def score_held_out(card: dict) -> dict:
    """The shipped FP32 and INT8 graphs on the held-out photos' degradations (writing runtime/samples
    from them): the per-kind figures, the kinds claimed, and the score threshold between clean and worst."""
    kinds, levels = card["kinds"], card["levels"]
    fp32 = Scorer(DEMO_MODEL, backend="onnxruntime", device="cpu")
    per_kind, items, reference = ranking(fp32, card)
    int8 = Scorer(DEMO_MODEL.parent / "demo-int8", backend="onnxruntime", device="cpu")
    int8_scores = np.array([r.score for r in int8.score_many([item.image for item in items])])
    claimed = [k for k in kinds if per_kind[k]["claimed"]]
    write_samples(items, claimed or kinds, levels)
    clean = [s for s, item in zip(reference, items) if item.level == 0]
    worst = [s for s, item in zip(reference, items) if item.level == levels and item.kind in (claimed or kinds)]
    return {"per_kind": per_kind, "items": items, "reference": reference, "int8_scores": int8_scores,
            "claimed": claimed, "threshold": round(float(np.mean(clean) + np.mean(worst)) / 2, 3),
            "crops": fp32.preprocess.crops_per_image}


def card_entries(work: Path, card: dict, synthetic: dict, held_out: dict) -> dict:
    """The card's entries after its first five, in the order model_card.json holds them."""
    kinds, claimed, scenes = card["kinds"], held_out["claimed"], synthetic["scenes"]
    trained_on, leaves = synthetic["trained_on"], synthetic["leaves"]
    settings = json.loads((work / "run" / "train_config.json").read_text())
    trained_by = json.loads((work / "run" / "metrics.jsonl").read_text().splitlines()[-1]).get("machine")
    manifest = json.loads((DEMO_MODEL / MANIFEST_NAME).read_text())
    return {
        "summary": (f"tiny MoAE + SDP Gamma; reliable on {len(claimed)} of the {len(kinds)} degradation kinds it "
                    "was trained on (see the card); not the paper's model"),
        "claimed": claimed,
        "not_learned": [k for k in kinds if k not in claimed],
        "ranges": {k: describe(k) for k in kinds},
        "bar": heldout.CLAIM_BAR,
        "threshold": held_out["threshold"],
        "trained_on_photos": trained_on,
        "trained_on_scenes": {"photos": len(trained_on), "views": len(scenes) - len(leaves) - len(trained_on),
                              "dead_leaves": len(leaves)},
        "validation_photos": synthetic["validation"],
        "metrics": metrics_entry(work, held_out),
        "training": {"command": "bash scripts/build_demo_model.sh", "config": "training/configs/synthetic_tiny.json",
                     "settings": {k: settings[k] for k in ("model", "lr", "epochs", "batch_size", "train_backbone",
                                                           "patch_embedding", "seed") if k in settings},
                     "machine": trained_by},
        "export": {"fp32": manifest.get("parity"), "checkpoint_sha256": manifest.get("checkpoint", {}).get("sha256")},
    }


def metrics_entry(work: Path, held_out: dict) -> dict:
    """The card's figures: per kind, pooled, INT8 against FP32, and the training run's last evaluation."""
    items, reference, int8_scores = held_out["items"], held_out["reference"], held_out["int8_scores"]
    int8_manifest = json.loads((DEMO_MODEL.parent / "demo-int8" / MANIFEST_NAME).read_text())
    rows_csv = list(csv.DictReader(open(work / "run" / "metrics.csv")))
    last = [r for r in rows_csv if r["protocol"] == "center" and r["srcc"]][-1]
    last = {"epoch": int(last["epoch"]), "protocol": "center", "srcc": round(float(last["srcc"]), 4),
            "plcc": round(float(last["plcc"]), 4), "images": int(last["images"])}
    return {
        "per_kind": {k: {key: (round(v, 4) if isinstance(v, float) else v) for key, v in f.items()
                         if key != "mean_by_level"} | {"mean_by_level": [round(m, 3) for m in f["mean_by_level"]]}
                     for k, f in held_out["per_kind"].items()},
        "srcc_all_kinds_pooled": round(srcc(reference, -np.array([i.level for i in items])), 3),
        "images": len(items),
        "int8_srcc_vs_fp32": round(srcc(int8_scores, reference), 4),
        "int8_max_abs_diff": float(np.abs(int8_scores - reference).max()),
        "int8_method": int8_manifest.get("quantization", {}).get("method", "?"),
        "int8_calibration": ("the training-split images of the synthetic set (trained-on photos only; never the "
                             "validation or test photos)"),
        "crops": held_out["crops"],
        "training_eval_last": last,
    }


def write_samples(items, kinds: list[str], levels: int) -> None:
    """runtime/samples: test images with their synthetic MOS, for `gamma-edge benchmark` (the claimed
    kinds; all trained kinds where none is claimed)."""
    kinds = kinds[:SAMPLE_KINDS]
    shutil.rmtree(SAMPLES_DIR, ignore_errors=True)
    SAMPLES_DIR.mkdir(parents=True)
    labels = []
    for item in items:
        if item.level == 0 or (item.kind in kinds and item.level in SAMPLE_LEVELS
                               and item.draw == 0):
            name = f"{item.photo}_pristine.png" if item.level == 0 else f"{item.photo}_{item.kind}_{item.level}.png"
            cv2.imwrite(str(SAMPLES_DIR / name), item.image, [cv2.IMWRITE_PNG_COMPRESSION, 9])
            labels.append((name, mos_of(item.level, levels)))
    with open(SAMPLES_DIR / "labels.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image_name", "mos"])
        writer.writerows((n, f"{m:.6f}") for n, m in labels)


def write_card_markdown(card: dict) -> None:
    lines = [*_card_what_it_is(card), "", *_card_training_data(card), "", *_card_held_out_evaluation(card), "",
             *_card_what_it_rates(card), "", *_card_reproduce(card), "", *_card_licences()]
    (ASSETS / "model_card.md").write_text("\n".join(lines) + "\n")


def _card_what_it_is(card: dict) -> list[str]:
    settings = card["training"]["settings"]
    vision = GammaConfig.from_name(settings["model"]).backbone["vision_cfg"]
    config_file = GammaConfig.path_of(settings["model"]).resolve()
    config_file = config_file.relative_to(ROOT) if config_file.is_relative_to(ROOT) else config_file
    return [
        "# Model card: gamma-edge demo model",
        "",
        "**What it is.** A small Gamma with the paper's structure (MoAE + scene prompts) on a small",
        f"CLIP-shaped backbone (`{config_file}`: a {vision['layers']}-layer, "
        f"width-{vision['width']} vision tower on {vision['patch_size']}-pixel patches of a {vision['image_size']}-pixel crop)",
        "with random initial weights, since no pretrained CLIP can be loaded offline. Unlike the paper, whose",
        "backbone is pretrained CLIP and stays frozen, the vision tower trains too (`--train-backbone`)."
        + (" Its patch embedding is a fixed, frozen bank of colour means and DCT basis functions"
           f" (`--patch-embedding {settings['patch_embedding']}`, training/patch_init.py)."
           if settings.get("patch_embedding", "random") != "random" else ""),
        "The text tower stays random and frozen (the trainable text experts adapt its prompt features).",
        "It is a demo of the toolkit, not the paper's model: it has never seen real camera defects,",
        "aesthetics, faces, AI-generated or underwater images, and its scores are on no public dataset's MOS",
        "scale. For the paper's model, convert the official weights (`gamma-edge convert`).",
    ]


def _card_training_data(card: dict) -> list[str]:
    scenes = card["trained_on_scenes"]
    return [
        "**What it was trained on.** `python -m training.synth`: photographs shipped in scikit-image,",
        f"matplotlib and scikit-learn ({', '.join(card['trained_on_photos'])}),",
        f"{scenes['views']} more views of them (random crop, 90-degree turn, mirror, hue, saturation, white balance)",
        f"and {scenes['dead_leaves']} dead-leaves scenes coloured from them: {sum(scenes.values())} scenes, each "
        f"degraded by {len(card['kinds'])} kinds at {card['levels']} levels,",
        "with a random nuisance per image (the motion's angle, the exposure method, the noise's channels, ...):",
        "",
        *(f"- `{kind}`: {text}" for kind, text in card["ranges"].items()),
    ]


def _card_held_out_evaluation(card: dict) -> list[str]:
    m, bar = card["metrics"], card["bar"]
    return [
        f"**Held-out evaluation.** Photos never seen by training, calibration or any choice: "
        f"{', '.join(card['held_out_photos'])}.",
        f"Each is degraded at every level of every kind {card['draws']} times by `runtime.demo.heldout`, code written",
        "apart from the training code (Pillow and OpenCV, its own random strengths within a quarter level,",
        f"angles, methods, filters); {m['images']} images, {m['crops']} crops each. Per kind: the mean score per level;",
        "SRCC of score against level within each photo (mean, worst photo); pooled SRCC with all photos ranked",
        "together (a pristine photo of one scene must outrank a degraded photo of another); and the share of",
        "(pristine, degraded version of the same photo) pairs ranked right.",
        "",
        "**What is claimed, and what is not.** *Within one scene* (the order of one scene's versions, what a",
        "camera watch relies on when it compares a camera with its own normal): a kind is **claimed** where",
        f"SRCC >= {bar['srcc']} and pairs >= {bar['pairs']:.0%}. *Across scenes* (pooled: one threshold for",
        "every photo) nothing is claimed: four photos are too few to judge it, and a score means little",
        "without its scene's own normal (docs/fleet.md, \"Baselines\").",
        "",
        *heldout.markdown_table(m["per_kind"]),
        *_card_classical(card),
    ]


def _card_classical(card: dict) -> list[str]:
    """What a user might run instead, on the same held-out images (scripts/card_baselines.py)."""
    classical = card.get("classical")
    if not classical:
        return []
    lines = ["", "**Classical baselines on the same images** (`scripts/card_baselines.py`): the variance of the",
             "Laplacian (sharper is higher) and BRISQUE (the `brisque` package, its shipped SVM), evaluated as the",
             "model is. Per kind: SRCC within a photo (mean) / pooled / pairs.", "",
             "| kind | demo model | variance of Laplacian | BRISQUE |", "|---|---|---|---|"]
    for kind, f in card["metrics"]["per_kind"].items():
        cells = [f"{g['srcc']:.2f} / {g['pooled']:.2f} / {g['pairs']:.0%}"
                 for g in (f, classical["laplacian"][kind], classical["brisque"][kind])]
        lines.append(f"| {kind} | " + " | ".join(cells) + " |")
    return lines


def _card_what_it_rates(card: dict) -> list[str]:
    m = card["metrics"]
    return [
        f"**What it rates:** {', '.join(card['claimed']) or 'none of the kinds'}, within the ranges above."
        + (f" **Not learned** (trained, but below the bar on held-out photos; do not rely on its scores for "
           f"them): {', '.join(card['not_learned'])}." if card["not_learned"] else ""),
        "Outside the trained ranges, on other defects, and on photos much larger than these (the runtime",
        "shrinks them, which weakens a degradation), nothing was measured.",
        "",
        f"All kinds and photos pooled: SRCC {m['srcc_all_kinds_pooled']:.3f}. INT8 (ONNX Runtime, "
        f"{m['int8_method']}) vs FP32 on",
        f"the same held-out images: SRCC {m['int8_srcc_vs_fp32']:.4f}, max |diff| {m['int8_max_abs_diff']:.2e}; "
        f"calibrated on {m['int8_calibration']}.",
        f"Last evaluation of the training run (on the validation photos {', '.join(card['validation_photos'])}, "
        f"training's own degradations, center crop): {m['training_eval_last']}. The shipped checkpoint is the last",
        "one, chosen by no held-out figure.",
    ]


def _card_reproduce(card: dict) -> list[str]:
    training = card["training"]
    return [
        f"**Reproduce.** `{training['command']}` (config `{training['config']}`,",
        f"settings {training['settings']}). "
        + (f"Trained on {training['machine']}. " if training.get("machine") else "")
        + "It rebuilds these weights on a CPU of the same kind with as many threads;",
        "elsewhere it trains the same recipe to other weights and figures (docs/training.md, \"Rebuilding on",
        "another CPU\"). `gamma-edge demo` recomputes the table above from the shipped graph and",
        "says whether it matches this card.",
    ]


def _card_licences() -> list[str]:
    return [
        "**Licences.** The photographs come from scikit-image's `skimage.data` (public domain / CC0 images),",
        "matplotlib's sample data (grace_hopper.jpg, public domain, US Navy) and scikit-learn's sample images",
        "(china.jpg and flower.jpg, CC BY 2.0, credited in scikit-learn's images/README.txt to danielbuechele",
        "on Flickr).",
    ]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Ship the demo model built in WORK_DIR, with its model card.")
    parser.add_argument("work", type=Path)
    parser.add_argument("--test-photos", nargs="+", required=True,
                        help="photos held out of everything (training, calibration, recipe choices)")
    parser.add_argument("--short-side", type=int, default=320, help="the synthetic set's --short-side")
    args = parser.parse_args()
    main(args.work, args.test_photos, args.short_side)
