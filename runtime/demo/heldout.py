"""The demo model's held-out evaluation: degradations made independently of training, and the bar
a kind must clear before the model card may claim it.

Training distorts with contract.degradations (OpenCV). This module makes the same kinds at the
same strengths (the level -> parameter table, `contract.degradations.parameter`, is the one definition of
what a level means) with its own code, mostly Pillow, and with its own random draws: the strength
is drawn inside the level's band (a quarter level either side, so the order of levels stays
unambiguous), the motion's angle is uniform, the exposure method, the noise's channels, the JPEG
chroma subsampling, the resampling filters and the mix of a combination vary. A model that only
learned the training code's exact kernels does not pass here.

For each kind, on photos no training, calibration or selection choice saw (`evaluate`):
    srcc        mean over photos of the SRCC between score and level within one photo
    srcc_min    the worst photo
    pooled      one SRCC over every photo's images of the kind (a folder-filtering user's view)
    pairs       the fraction of (pristine, degraded version of the same photo) pairs ranked right
A kind is claimed only where all of CLAIM_BAR hold (within one scene; the pooled figure claims
nothing). numpy + OpenCV + Pillow: the torch-free demo
recomputes the card's figures with it.
"""
from __future__ import annotations

import io
import zlib
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

from contract.degradations import (EXPOSURE_METHODS, RECIPE, combination, linear_to_srgb, parameter,
                                    srgb_to_linear)

LEVELS = 5
DRAWS = 3                 # random degradations per (photo, kind, level)
BAND = 0.25               # the strength is drawn within level +- BAND
# The claim is within one scene (how a scene's versions are ordered, what a camera watch relies on).
# The pooled figure, across scenes, is reported but claims nothing: four photos cannot judge it.
CLAIM_BAR = {"srcc": 0.9, "pairs": 0.95}
RESAMPLE = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "lanczos": Image.LANCZOS,
            "nearest": Image.NEAREST}


@dataclass(frozen=True)
class Item:
    photo: str
    kind: str
    level: int            # 0: the pristine photo (shared by every kind)
    draw: int
    image: np.ndarray     # BGR uint8, as the runtime reads files


def degrade(rgb: np.ndarray, kind: str, level: float, rng: np.random.Generator,
            choice: np.random.Generator | None = None) -> np.ndarray:
    """`rgb` (uint8) degraded by `kind` at a strength drawn in level +- BAND from `rng` (and its noise);
    the nuisance (angle, method, channels, filters, the mix) from `choice`, by default `rng`. Give each
    level of one series a `choice` seeded alike, and the series differs in strength only."""
    choice = rng if choice is None else choice
    p = parameter(kind, float(np.clip(level + rng.uniform(-BAND, BAND), 1.0 - BAND, LEVELS)), LEVELS)
    pil = Image.fromarray(rgb)
    x = rgb.astype(np.float64)
    if kind == "gaussian_blur":
        return np.asarray(pil.filter(ImageFilter.GaussianBlur(radius=p)))
    if kind == "motion_blur":
        return _motion(rgb, p, choice.uniform(0.0, 180.0))
    if kind == "gaussian_noise":
        shape = rgb.shape if choice.random() < 0.5 else rgb.shape[:2] + (1,)
        return _clip(x + rng.standard_normal(shape) * p)
    if kind == "shot_noise":
        luma = x @ np.array([0.2126, 0.7152, 0.0722])
        gain = np.maximum(luma, 1.0)[..., None]
        electrons = rng.poisson(np.maximum(luma, 0.0) / 255.0 * p)[..., None] * (255.0 / p)
        return _clip(x * (electrons / gain)) if choice.random() < 0.3 else \
            _clip(rng.poisson(x / 255.0 * p) * (255.0 / p))
    if kind == "chroma_noise":
        ycbcr = np.asarray(pil.convert("YCbCr"), np.float64)
        noise = rng.standard_normal(rgb.shape[:2] + (2,))
        small = cv2.resize(noise, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)
        noise = cv2.resize(small, rgb.shape[1::-1], interpolation=cv2.INTER_LINEAR)
        ycbcr[..., 1:] += noise * (p / noise.std())
        return np.asarray(Image.fromarray(_clip(ycbcr), "YCbCr").convert("RGB"))
    if kind in ("underexposure", "overexposure"):
        return _exposure(rgb, -p if kind == "underexposure" else p, str(choice.choice(EXPOSURE_METHODS)))
    if kind == "jpeg":
        buffer = io.BytesIO()
        pil.save(buffer, "JPEG", quality=max(1, int(round(p))), subsampling=int(choice.choice([0, 2])))
        return np.asarray(Image.open(buffer).convert("RGB"))
    if kind == "contrast":
        return np.asarray(ImageEnhance.Contrast(pil).enhance(p))
    if kind == "downscale":
        w, h = pil.size
        down = pil.resize((max(1, round(w / p)), max(1, round(h / p))), RESAMPLE[choice.choice(["bicubic", "lanczos"])],
                          reducing_gap=None)
        return np.asarray(down.resize((w, h), RESAMPLE[choice.choice(["bilinear", "bicubic", "lanczos", "nearest"])]))
    if kind == "combined":
        out = rgb
        for name in combination(choice):
            out = degrade(out, name, 0.8 * level, rng, choice)
        return out
    raise ValueError(f"no held-out degradation for {kind}")


def _motion(rgb: np.ndarray, length: float, angle: float) -> np.ndarray:
    """A straight motion blur drawn as an anti-aliased line at `angle` degrees, `length` pixels long."""
    size = int(np.ceil(length)) + 3
    size += 1 - size % 2
    kernel = np.zeros((size, size), np.uint8)
    centre, half = (size - 1) / 2, (length - 1) / 2
    dx, dy = half * np.cos(np.radians(angle)), -half * np.sin(np.radians(angle))
    shift = 4                                    # sub-pixel end points (1/16 pixel)
    ends = [(int(round((centre + s * dx) * 16)), int(round((centre + s * dy) * 16))) for s in (-1, 1)]
    cv2.line(kernel, ends[0], ends[1], 255, 1, cv2.LINE_AA, shift)
    kernel = kernel.astype(np.float32)
    return cv2.filter2D(rgb, -1, kernel / kernel.sum(), borderType=cv2.BORDER_REPLICATE)


def _exposure(rgb: np.ndarray, stops: float, method: str) -> np.ndarray:
    """Exposure by `stops` three ways that agree on where mid-grey lands (a LUT, as a camera would)."""
    v = np.arange(256) / 255.0
    srgb = linear_to_srgb(srgb_to_linear(v) * 2.0 ** stops)     # the sRGB curve is a standard, not a recipe
    grey = min(float(np.interp(0.5, v, srgb)), 0.995)
    curve = {"exposure": srgb, "gain": v * grey / 0.5, "gamma": v ** (np.log(grey) / np.log(0.5))}[method]
    return _clip(curve * 255.0)[rgb]


def _clip(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def items(photos: dict[str, np.ndarray], kinds=RECIPE, draws: int = DRAWS, seed: int = 2026):
    """Every held-out image: each photo (RGB uint8) pristine once, then every kind x level x draw; a draw
    is one series of levels 1..LEVELS sharing its nuisance."""
    for photo, rgb in photos.items():
        p = zlib.crc32(photo.encode())
        yield Item(photo, "pristine", 0, 0, np.ascontiguousarray(rgb[..., ::-1]))
        for kind in kinds:
            k = zlib.crc32(kind.encode())          # a series depends on its photo and kind alone
            for level in range(1, LEVELS + 1):
                for d in range(draws):
                    rng, choice = np.random.default_rng([seed, p, k, d, level]), np.random.default_rng([seed, p, k, d])
                    image = degrade(rgb, kind, level, rng, choice)
                    yield Item(photo, kind, level, d, np.ascontiguousarray(image[..., ::-1]))


def evaluate(rows: list[Item], scores, kinds=RECIPE) -> dict:
    """Per kind: srcc (mean over photos), srcc_min, pooled, pairs, mean score per level, claimed."""
    from contract.correlation import srcc

    scores = np.asarray(scores, np.float64)
    photos = list(dict.fromkeys(r.photo for r in rows))
    pristine = {r.photo: scores[i] for i, r in enumerate(rows) if r.level == 0}
    out = {}
    for kind in kinds:
        mine = [i for i, r in enumerate(rows) if r.kind == kind]
        per_photo, pooled_s, pooled_l, right, pairs = [], [], [], 0, 0
        for photo in photos:
            idx = [i for i in mine if rows[i].photo == photo]
            s = np.concatenate([[pristine[photo]], scores[idx]])
            levels = np.concatenate([[0], [rows[i].level for i in idx]])
            per_photo.append(srcc(s, -levels))
            pooled_s.append(s)
            pooled_l.append(levels)
            right += int(np.sum(scores[idx] < pristine[photo]))
            pairs += len(idx)
        s, lv = np.concatenate(pooled_s), np.concatenate(pooled_l)
        figures = {"srcc": float(np.mean(per_photo)), "srcc_min": float(np.min(per_photo)),
                   "pooled": srcc(s, -lv), "pairs": right / pairs,
                   "mean_by_level": [float(s[lv == level].mean()) if np.any(lv == level) else float("nan")
                                     for level in range(LEVELS + 1)]}
        figures["claimed"] = all(figures[key] >= bar for key, bar in CLAIM_BAR.items())
        out[kind] = figures
    return out


def markdown_table(figures: dict) -> list[str]:
    """evaluate()'s figures as the markdown table of the model card and scripts/heldout_eval.py."""
    levels = len(next(iter(figures.values()))["mean_by_level"])
    lines = ["| kind | " + " | ".join(f"L{i}" for i in range(levels)) + " | SRCC | worst | pooled | pairs | |",
             "|---|" + "---|" * (levels + 5)]
    for kind, f in figures.items():
        means = " | ".join(f"{m:.3f}" for m in f["mean_by_level"])
        lines.append(f"| {kind} | {means} | {f['srcc']:.3f} | {f['srcc_min']:.3f} | {f['pooled']:.3f} | "
                     f"{f['pairs']:.1%} | {'claimed' if f['claimed'] else 'not learned'} |")
    return lines
