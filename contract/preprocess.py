"""Image preparation, defined once: the manifest's resize policy and crop protocols
(docs/manifest.md, "preprocess"). Training, export calibration and validation, the runtime
and the benchmarks all cut their crops here (numpy + OpenCV, torch-free).

An image's score is the mean over its crops' scores; the paper evaluates with 10
random 224 crops (random10), and center / five / grid are deterministic stand-ins.
Sizes and grid offsets use Python's round() (ties to even), like numpy.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from contract.errors import UserError
from contract.manifest import CROP_PROTOCOLS, Manifest

CROPS_PER_IMAGE = {"center": 1, "five": 5, "grid": 9, "random10": 10}
# The preprocessing every export writes into its manifest (crop_size comes from the model).
DEFAULT_RESIZE = {"max_long_side": 512, "min_short_side": 224}
DEFAULT_CROPS = "five"


def preprocess_block(crop_size: int) -> dict:
    """The manifest's "preprocess" object: everything needed to cut the crops the graph expects,
    with OpenCV alone (docs/manifest.md states the same in prose)."""
    return {"resize": {**DEFAULT_RESIZE, "shrink": "cv2.INTER_AREA", "enlarge": "cv2.INTER_CUBIC",
                       "rounding": "python round() (ties to even)"},
            "crop_size": crop_size, "default_crops": DEFAULT_CROPS, "protocols": list(CROP_PROTOCOLS),
            "random10": {"generator": "numpy.random.default_rng(seed), new for every image",
                         "draw": "10 times: y = integers(0, H - crop_size, endpoint=True), then x likewise"},
            "crop_order": "five: center, top-left, top-right, bottom-left, bottom-right; grid: row-major"}


def scale_to_short_side(image: np.ndarray, short_side: int) -> np.ndarray:
    """Resize so the shorter side equals `short_side` (a dataset's own preparation, e.g. the authors'
    `resize: 224` for UWIQA and AVA): INTER_AREA down, INTER_CUBIC up."""
    height, width = image.shape[:2]
    factor = short_side / min(height, width)
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    if size == (width, height):
        return image
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA if factor < 1 else cv2.INTER_CUBIC)


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
    raise UserError(f"crop protocol {protocol!r} is unknown; choose one of {', '.join(CROP_PROTOCOLS)}")


def cut_crops(image: np.ndarray, protocol: str, crop_size: int, seed: int = 0) -> np.ndarray:
    """(K, crop_size, crop_size, 3) uint8 crops of a resized image, in the protocol's order."""
    offsets = crop_offsets(image.shape[0], image.shape[1], crop_size, protocol, seed)
    crops = np.empty((len(offsets), crop_size, crop_size, 3), dtype=np.uint8)
    for k, (y, x) in enumerate(offsets):
        crops[k] = image[y:y + crop_size, x:x + crop_size]
    return crops


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
            raise UserError(f"crop protocol {crops!r} is unknown; choose one of {', '.join(CROP_PROTOCOLS)}")
        return cls(manifest.crop_size, manifest.max_long_side, manifest.min_short_side, crops, int(seed))

    @property
    def crops_per_image(self) -> int:
        return CROPS_PER_IMAGE[self.crops]

    def __call__(self, image: np.ndarray) -> np.ndarray:
        image = resize_for_crops(image, self.max_long_side, self.min_short_side, self.crop_size)
        return cut_crops(image, self.crops, self.crop_size, self.seed)
