"""The manifest's resize policy and crop protocols (docs/manifest.md, "preprocess").

An image's score is the mean over its crops' scores; the paper evaluates with 10
random 224 crops (random10), and center / five / grid are deterministic stand-ins.
Sizes and grid offsets use Python's round() (ties to even), like numpy.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .errors import RuntimeUserError
from .manifest import CROP_PROTOCOLS, Manifest


def resize_for_crops(image: np.ndarray, max_long_side: int | None, min_short_side: int | None,
                     crop_size: int) -> np.ndarray:
    """Shrink so the longer side is at most max_long_side (INTER_AREA), then enlarge so the
    shorter side is at least min_short_side (INTER_CUBIC), keeping the aspect ratio.
    The short side is never left below crop_size, where the manifest leaves it undefined."""
    height, width = image.shape[:2]
    if max_long_side and max(height, width) > max_long_side:
        scale = max_long_side / max(height, width)
        height, width = max(1, round(height * scale)), max(1, round(width * scale))
        image = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
    short_side = max(min_short_side or 0, crop_size)
    if min(height, width) < short_side:
        scale = short_side / min(height, width)
        height, width = round(height * scale), round(width * scale)
        image = cv2.resize(image, (width, height), interpolation=cv2.INTER_CUBIC)
    return image


def crop_offsets(height: int, width: int, size: int, protocol: str, seed: int = 0) -> list[tuple[int, int]]:
    """(y, x) top-left corners of the crops of an image of height x width."""
    span_y, span_x = height - size, width - size
    if span_y < 0 or span_x < 0:
        raise ValueError(f"a {height}x{width} image is smaller than its {size} crops")
    if protocol == "center":
        return [(span_y // 2, span_x // 2)]
    if protocol == "five":
        return [(span_y // 2, span_x // 2), (0, 0), (0, span_x), (span_y, 0), (span_y, span_x)]
    if protocol == "grid":
        return [(round(i * span_y / 2), round(j * span_x / 2)) for i in range(3) for j in range(3)]
    if protocol == "random10":
        rng = np.random.default_rng(seed)
        offsets = []
        for _ in range(10):
            y = int(rng.integers(0, span_y, endpoint=True))
            x = int(rng.integers(0, span_x, endpoint=True))
            offsets.append((y, x))
        return offsets
    raise RuntimeUserError(f"crop protocol {protocol!r} is unknown; choose one of {', '.join(CROP_PROTOCOLS)}")


@dataclass(frozen=True)
class Preprocess:
    """Decoded BGR image -> (K, size, size, 3) uint8 crops, per the manifest."""

    crop_size: int
    max_long_side: int | None
    min_short_side: int | None
    crops: str
    seed: int = 0

    @classmethod
    def from_manifest(cls, manifest: Manifest, crops: str | None = None, seed: int = 0) -> "Preprocess":
        crops = crops or manifest.default_crops
        if crops not in CROP_PROTOCOLS:
            raise RuntimeUserError(f"crop protocol {crops!r} is unknown; choose one of {', '.join(CROP_PROTOCOLS)}")
        return cls(manifest.crop_size, manifest.max_long_side, manifest.min_short_side, crops, int(seed))

    @property
    def crops_per_image(self) -> int:
        return {"center": 1, "five": 5, "grid": 9, "random10": 10}[self.crops]

    def __call__(self, image: np.ndarray) -> np.ndarray:
        image = resize_for_crops(image, self.max_long_side, self.min_short_side, self.crop_size)
        size = self.crop_size
        offsets = crop_offsets(image.shape[0], image.shape[1], size, self.crops, self.seed)
        crops = np.empty((len(offsets), size, size, 3), dtype=np.uint8)
        for k, (y, x) in enumerate(offsets):
            crops[k] = image[y:y + size, x:x + size]
        return crops
