"""Cheap image signals measured beside the score, the evidence an alert names as its likely cause
("sharpness 38% of normal"), and the pictures the covered and frozen checks compare.

Every signal is measured on one small gray copy of the frame (its long side area-resized to
SIGNAL_SIDE pixels), so a frame costs about a millisecond. Each is compared with the camera's own
normal, never with a fixed value: a night street is darker and noisier than a sunny one.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

SIGNAL_SIDE = 384
# Immerkaer's noise estimator: a kernel that cancels image structure up to second order.
NOISE_KERNEL = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], dtype=np.float32)


@dataclass(frozen=True)
class SignalKind:
    """How a signal is compared with its normal and named in a reason."""

    name: str
    words: str            # how a reason names it
    compare: str          # "ratio": value / normal ("38% of normal"); "points": value and normal side by side
    unit: str = ""


SIGNALS = {kind.name: kind for kind in (
    SignalKind("sharpness", "sharpness", "ratio"),        # variance of the Laplacian over the gray variance
    SignalKind("coarse_sharpness", "coarse sharpness", "ratio"),   # the same, COARSE_SIDE pixels wide
    SignalKind("brightness", "brightness", "ratio"),      # mean gray level
    SignalKind("contrast", "contrast", "ratio"),          # gray standard deviation
    SignalKind("noise", "noise", "ratio"),                # Immerkaer's sigma
    SignalKind("highlights", "clipped highlights", "points", "%"),   # share of pixels at 250 or more
    SignalKind("shadows", "clipped shadows", "points", "%"),         # share of pixels at 5 or less
    SignalKind("colour_cast", "colour cast", "points"),          # mean chroma offset from gray (Lab a*, b*)
    SignalKind("blockiness", "compression blocks", "ratio"),     # edges on an 8-pixel grid over edges elsewhere
)}
BLOCK = 8                   # JPEG's and H.264's transform block
BLOCK_WINDOW = 384          # blockiness is measured on this central square, at full size
STEP_CLIP = 16              # gray levels: the largest step between neighbours blockiness counts
COARSE_SIDE = 128           # coarse sharpness: where sensor noise has averaged away, a smooth scene's few edges remain
COLOUR_SIDE = 24            # colourfulness is measured this small, where sensor noise has averaged away


def small_gray(image: np.ndarray, side: int = SIGNAL_SIDE) -> np.ndarray:
    """The frame, its long side about `side` pixels (still in colour: the gray is taken after).
    A large frame is first decimated to twice that (an area resize of a full HD frame costs more
    than everything else here), then area-resized."""
    step = max(1, max(image.shape[:2]) // (2 * side))
    image = image[::step, ::step]
    height, width = image.shape[:2]
    scale = side / max(height, width)
    if scale < 1:
        image = cv2.resize(image, (max(1, round(width * scale)), max(1, round(height * scale))),
                           interpolation=cv2.INTER_AREA)
    return image


def measure(image: np.ndarray) -> dict[str, float]:
    """Every signal of a BGR frame."""
    small = small_gray(image)
    gray = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY)
    noise = cv2.filter2D(gray.astype(np.float32), -1, NOISE_KERNEL)[1:-1, 1:-1]
    lab = cv2.cvtColor(small, cv2.COLOR_BGR2LAB).reshape(-1, 3).astype(np.float32)
    cast = float(np.hypot(lab[:, 1].mean() - 128.0, lab[:, 2].mean() - 128.0))
    return {
        "sharpness": sharpness(gray),
        "coarse_sharpness": sharpness(small_gray(gray, COARSE_SIDE)),
        "brightness": float(gray.mean()),
        "contrast": float(gray.std()),
        "noise": float(np.abs(noise).mean() * math.sqrt(math.pi / 2) / 6.0),
        "highlights": float((gray >= 250).mean() * 100.0),
        "shadows": float((gray <= 5).mean() * 100.0),
        "colour_cast": cast,
        "blockiness": blockiness(image),
        "colourfulness": colourfulness(small),
    }


def sharpness(gray: np.ndarray) -> float:
    """The variance of the Laplacian over the gray variance: fine detail against the picture's own
    contrast, so dusk, an exposure change or the camera's gain, which scale both, leave it where it
    was, and blur, a defocus or a smudged lens, which remove the detail, lower it. Measured twice:
    on the 384-pixel copy, and COARSE_SIDE pixels wide ("coarse sharpness"), where a smooth, dark
    scene's few edges (a tree line in fog) still show a blur that its sensor noise hides at 384."""
    image = gray.astype(np.float32)
    return float(cv2.Laplacian(image, cv2.CV_32F).var() / max(float(image.var()), 1.0) * 100.0)


def blockiness(image: np.ndarray) -> float:
    """How much stronger the gray steps are on one 8-pixel grid than between: about 1 for an
    uncompressed picture, 1.5 and more once an encoder starves. Measured at full size (a resize
    would blur the grid away) on a central window of the picture, for whichever grid phase is
    strongest (the picture may be shifted)."""
    height, width = image.shape[:2]
    top, left = max(0, (height - BLOCK_WINDOW) // 2), max(0, (width - BLOCK_WINDOW) // 2)
    window = image[top:top + BLOCK_WINDOW, left:left + BLOCK_WINDOW]
    gray = cv2.cvtColor(window, cv2.COLOR_BGR2GRAY).astype(np.int16)
    ratios = []
    # each step clipped: a block edge is a small step repeated along the grid, and one strong line of
    # the scene that happens to lie on it must not look like one
    for steps in (np.minimum(np.abs(np.diff(gray, axis=1)), STEP_CLIP).mean(axis=0),
                  np.minimum(np.abs(np.diff(gray, axis=0)), STEP_CLIP).mean(axis=1)):
        usable = len(steps) // BLOCK * BLOCK
        if usable < 4 * BLOCK:
            return 1.0
        phases = steps[:usable].reshape(-1, BLOCK).mean(axis=0)
        ratios.append(float(phases.max() / max(float(np.median(phases)), 1e-6)))
    return float(np.mean(ratios))


def colourfulness(image: np.ndarray) -> float:
    """Hasler and Suesstrunk's colourfulness: about 0 for a gray (infrared night) picture, 15 and
    more for an ordinary colour scene. It tells the light condition, not a defect, so it is measured
    on a copy COLOUR_SIDE pixels wide: a noisy infrared picture's chroma noise averages away there."""
    height, width = image.shape[:2]
    scale = COLOUR_SIDE / max(height, width)
    if scale < 1:           # an area resize: every pixel averaged in (a decimation would keep the noise)
        image = cv2.resize(image, (max(1, round(width * scale)), max(1, round(height * scale))),
                           interpolation=cv2.INTER_AREA)
    b, g, r = (image[..., i].astype(np.float32) for i in range(3))
    rg, yb = r - g, 0.5 * (r + g) - b
    return float(math.hypot(rg.std(), yb.std()) + 0.3 * math.hypot(rg.mean(), yb.mean()))


def describe(name: str, value: float, normal: float) -> str:
    """A signal against its normal, in a reason's words: 'sharpness 38% of normal'."""
    kind = SIGNALS[name]
    if kind.compare == "ratio":
        return f"{kind.words} {100.0 * value / max(normal, 1e-9):.0f}% of normal"
    return f"{kind.words} {value:.1f}{kind.unit} (normal {normal:.1f}{kind.unit})"


# -- what one frame looks like to the watch ---------------------------------------------------------
@dataclass
class Look:
    """One frame as the watch sees it: a small picture (frozen), its contrast (covered) and its
    image signals (measured only when the picture is not uniform)."""

    picture: np.ndarray
    contrast: float
    signals: dict[str, float] | None


def look_at(image: np.ndarray, covered_contrast: float) -> Look:
    picture = picture_of(image)
    spread = contrast(picture)
    return Look(picture, spread, measure(image) if spread >= 1.5 * covered_contrast else None)


def picture_of(image: np.ndarray) -> np.ndarray:
    """A small gray picture for the frozen and covered checks. Subsampled, not averaged: an
    average would smooth away the sensor noise that tells a live static scene from a frozen one."""
    step = max(1, min(image.shape[:2]) // 120)
    return cv2.cvtColor(np.ascontiguousarray(image[::step, ::step]), cv2.COLOR_BGR2GRAY)


def contrast(picture: np.ndarray) -> float:
    return float(picture.std())


def change(picture: np.ndarray, previous: np.ndarray | None) -> float | None:
    """Mean absolute gray difference between consecutive pictures (None: nothing to compare)."""
    if previous is None or previous.shape != picture.shape:
        return None
    return float(cv2.absdiff(picture, previous).mean())
