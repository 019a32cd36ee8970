"""Evaluation crop protocols, exactly as docs/manifest.md defines them.

The runtime keeps its own torch-free copy of these rules by design; this is the
one copy on the training side, so training-time evaluation scores an image the
way the deployed model will.

- `center`: 1 crop at ((W-c)//2, (H-c)//2).
- `five`: center, then top-left, top-right, bottom-left, bottom-right.
- `grid`: 3x3 crops at round(i*(H-c)/2), round(j*(W-c)/2), row-major
  (Python's round: halves go to the even integer, as numpy's does).
- `random10`: the paper's protocol; 10 offsets drawn uniformly from
  [0, H-c] x [0, W-c] by numpy `default_rng(seed)`, y then x per crop. The
  generator is created afresh for every image, so an image's crops do not depend
  on which images were scored before it.
"""
from __future__ import annotations

import cv2
import numpy as np

PROTOCOLS = ("center", "five", "grid", "random10")
CROP_COUNTS = {"center": 1, "five": 5, "grid": 9, "random10": 10}


def resize_for_crops(image: np.ndarray, crop_size: int = 224, max_long_side: int | None = None,
                     short_side: int | None = None) -> np.ndarray:
    """Resize an HxWx3 uint8 image before cropping, keeping the aspect ratio.

    `short_side` resizes so the shorter side equals it (the authors' `resize: 224`
    for UWIQA and AVA); `max_long_side` shrinks an image whose longer side exceeds
    it (SPAQ's 384, the manifest's 512); finally an image whose shorter side is
    below `crop_size` is enlarged to it. Shrinking uses INTER_AREA, enlarging
    INTER_CUBIC, sizes are rounded to the nearest integer (the manifest's rules).
    """
    if short_side:
        image = _scale(image, short_side / min(image.shape[:2]))
    if max_long_side and max(image.shape[:2]) > max_long_side:
        image = _scale(image, max_long_side / max(image.shape[:2]))
    if min(image.shape[:2]) < crop_size:
        image = _scale(image, crop_size / min(image.shape[:2]))
    return image


def _scale(image: np.ndarray, factor: float) -> np.ndarray:
    h, w = image.shape[:2]
    size = (max(1, round(w * factor)), max(1, round(h * factor)))
    if size == (w, h):
        return image
    interpolation = cv2.INTER_AREA if factor < 1 else cv2.INTER_CUBIC
    return cv2.resize(image, size, interpolation=interpolation)


def crop_offsets(height: int, width: int, protocol: str, crop_size: int = 224, seed: int = 0) -> list[tuple[int, int]]:
    """(y, x) top-left corners of the protocol's crops for an image of this size."""
    if height < crop_size or width < crop_size:
        raise ValueError(f"image {height}x{width} is smaller than the crop {crop_size}")
    dy, dx = height - crop_size, width - crop_size
    if protocol == "center":
        return [(dy // 2, dx // 2)]
    if protocol == "five":
        return [(dy // 2, dx // 2), (0, 0), (0, dx), (dy, 0), (dy, dx)]
    if protocol == "grid":
        return [(round(i * dy / 2), round(j * dx / 2)) for i in range(3) for j in range(3)]
    if protocol == "random10":
        rng = np.random.default_rng(seed)
        offsets = []
        for _ in range(10):
            y = int(rng.integers(0, dy + 1))
            x = int(rng.integers(0, dx + 1))
            offsets.append((y, x))
        return offsets
    raise ValueError(f"unknown crop protocol '{protocol}'; known: {', '.join(PROTOCOLS)}")


def crops(image: np.ndarray, protocol: str, crop_size: int = 224, seed: int = 0) -> np.ndarray:
    """(K, c, c, 3) crops of an HxWx3 image, in the protocol's order."""
    h, w = image.shape[:2]
    return np.stack([image[y:y + crop_size, x:x + crop_size]
                     for y, x in crop_offsets(h, w, protocol, crop_size, seed)])
