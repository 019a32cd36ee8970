"""Images for INT8 calibration and for the parity report: real photographs, deterministic.

Both sets are uint8 BGR 224x224 crops, exactly what the exported graph eats.

- The default calibration set is made from the photographs that ship with
  scikit-image (`skimage.data`), resized the way the runtime resizes
  (docs/manifest.md, preprocess.resize), distorted at known levels (blur, noise,
  JPEG, exposure, ...; contract.degradations) and cropped at seeded random positions: hundreds of
  crops, no download, the same bytes on every machine.
- The validation set (the parity report, the INT8 fidelity gate) uses three
  OTHER photographs, each at eight distortion levels: the images are held out
  from calibration, and their known quality order gives a real ranking to keep.
- `--calib DIR` replaces the default calibration set with the user's images.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from contract import degradations as distortions
from contract.errors import UserError
from contract.preprocess import DEFAULT_RESIZE, cut_crops, resize_for_crops, scale_to_short_side
from contract.images import IMAGE_SUFFIXES, read_image

CROP = 224

# skimage.data photographs that are present offline. Validation ones are never used for calibration.
VALIDATION_PHOTOS = ("astronaut", "coffee", "chelsea")
CALIBRATION_PHOTOS = ("rocket", "hubble_deep_field", "immunohistochemistry", "retina", "stereo_motorcycle",
                      "camera", "coins", "moon", "grass", "gravel", "brick", "clock", "cell", "page")
# Validation distortion ladder: (label, kind, level of 5) from contract.degradations.
VALIDATION_DISTORTIONS = (("pristine", None, 0), ("blur-1", "gaussian_blur", 1), ("blur-4", "gaussian_blur", 4),
                          ("noise-2", "gaussian_noise", 2), ("noise-5", "gaussian_noise", 5),
                          ("jpeg-2", "jpeg", 2), ("jpeg-5", "jpeg", 5), ("darken-4", "darken", 4))


def resize_like_runtime(image: np.ndarray) -> np.ndarray:
    """The runtime's resize rule with the manifest's defaults (contract.preprocess)."""
    return resize_for_crops(image, DEFAULT_RESIZE["max_long_side"], DEFAULT_RESIZE["min_short_side"], CROP)


def distort_bgr(image: np.ndarray, kind: str | None, level: float, seed: int = 0) -> np.ndarray:
    """contract.degradations (RGB convention) applied to a uint8 BGR image; kind None = pristine."""
    if kind is None:
        return image.copy()
    return np.ascontiguousarray(distortions.distort(image[..., ::-1], kind, level, seed=seed)[..., ::-1])


def skimage_photo(name: str) -> np.ndarray:
    """A skimage.data photograph as uint8 BGR (grey ones repeated to three channels)."""
    import skimage.data

    image = getattr(skimage.data, name)()
    if isinstance(image, tuple):                      # stereo pairs
        image = image[0]
    image = np.asarray(image)
    if image.dtype != np.uint8:
        image = (image > 0).astype(np.uint8) * 255 if image.dtype == bool else image.astype(np.uint8)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    return np.ascontiguousarray(image[..., 2::-1])   # RGB(A) -> BGR


def center_crop(image: np.ndarray, size: int = CROP) -> np.ndarray:
    return cut_crops(image, "center", size)[0]


def validation_set() -> tuple[np.ndarray, list[str]]:
    """24 held-out crops (3 photos x 8 distortion levels) as (N, 224, 224, 3) uint8 BGR, and their labels.

    Each photo is resized so its short side is 224 and centre-cropped first, then
    distorted, so the distortion is seen at the scale the network sees it.
    """
    crops, labels = [], []
    for p, name in enumerate(VALIDATION_PHOTOS):
        base = center_crop(scale_to_short_side(skimage_photo(name), CROP))
        for d, (label, kind, level) in enumerate(VALIDATION_DISTORTIONS):
            crops.append(distort_bgr(base, kind, level, seed=100 * p + d))
            labels.append(f"{name}/{label}")
    return np.stack(crops), labels


def default_calibration_set(count: int = 300, seed: int = 0) -> np.ndarray:
    """`count` crops from skimage.data photographs (never the validation ones), distorted and
    randomly placed, as (count, 224, 224, 3) uint8 BGR."""
    rng = np.random.default_rng(seed)
    photos = [resize_like_runtime(skimage_photo(n)) for n in CALIBRATION_PHOTOS]
    # One pristine crop in three; the others cycle through every distortion kind at levels 1..5.
    variants = [(None, 0)] + [(k, lvl) for lvl in range(1, 6) for k in distortions.DISTORTIONS]
    crops = []
    for i in range(count):
        kind, level = (None, 0) if i % 3 == 0 else variants[1 + (i // 3 * 2 + i % 3) % (len(variants) - 1)]
        crops.append(distort_bgr(_random_crop(photos[i % len(photos)], rng), kind, level, seed=seed * 100003 + i))
    return np.stack(crops)


def calibration_set_from_folder(folder: str | Path, count: int = 300, seed: int = 0) -> np.ndarray:
    """Crops of the images in `folder` (recursively): each image resized like the runtime does,
    then its centre crop and seeded random crops until `count` crops are drawn."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"calibration folder {folder} does not exist or is not a folder")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise UserError(f"calibration folder {folder} holds no images "
                             f"({', '.join(sorted(IMAGE_SUFFIXES))}); add a few hundred representative photos")
    images = []
    for path in files:
        try:                                   # decoded exactly as the runtime will decode the user's images
            images.append(resize_like_runtime(read_image(path, shrink_to=DEFAULT_RESIZE["max_long_side"])))
        except UserError:
            continue
    if not images:
        raise UserError(f"none of the {len(files)} image files in calibration folder {folder} could be read")
    rng = np.random.default_rng(seed)
    crops = [center_crop(image) for image in images[:count]]
    i = 0
    while len(crops) < count:
        crops.append(_random_crop(images[i % len(images)], rng))
        i += 1
    return np.stack(crops)


def _random_crop(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    h, w = image.shape[:2]
    y = int(rng.integers(0, h - CROP + 1))
    x = int(rng.integers(0, w - CROP + 1))
    return np.ascontiguousarray(image[y:y + CROP, x:x + CROP])
