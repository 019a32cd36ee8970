"""Images for INT8 calibration and for the parity report: real photographs, deterministic.

Both sets are uint8 BGR 224x224 crops, exactly what the exported graph eats.

- The default calibration set is made from the photographs that ship with
  scikit-image (`skimage.data`), resized the way the runtime resizes
  (docs/manifest.md, preprocess.resize), distorted at known levels (blur, noise,
  JPEG, exposure, ...) and cropped at seeded random positions: hundreds of
  crops, no download, the same bytes on every machine.
- The validation set (the parity report, the INT8 fidelity gate) uses three
  OTHER photographs, each at eight distortion levels: the images are held out
  from calibration, and their known quality order gives a real ranking to keep.
- `--calib DIR` replaces the default calibration set with the user's images.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from gamma_edge.errors import GammaUserError

CROP = 224
# Resize rule of the runtime (docs/manifest.md): long side <= 512, short side >= 224.
MAX_LONG_SIDE = 512
MIN_SHORT_SIDE = 224

# skimage.data photographs that are present offline. Validation ones are never used for calibration.
VALIDATION_PHOTOS = ("astronaut", "coffee", "chelsea")
CALIBRATION_PHOTOS = ("rocket", "hubble_deep_field", "immunohistochemistry", "retina", "stereo_motorcycle",
                      "camera", "coins", "moon", "grass", "gravel", "brick", "clock", "cell", "page")
# Validation distortion ladder: (name, kind, level). Within one photo, quality falls with level.
VALIDATION_DISTORTIONS = (("pristine", "none", 0), ("blur-1", "blur", 1.0), ("blur-3", "blur", 3.0),
                          ("noise-10", "noise", 10.0), ("noise-35", "noise", 35.0), ("jpeg-30", "jpeg", 30),
                          ("jpeg-6", "jpeg", 6), ("dark-0.35", "dark", 0.35))
CALIBRATION_DISTORTIONS = (("none", 0), ("blur", 0.7), ("blur", 2.0), ("blur", 4.0), ("noise", 5.0),
                           ("noise", 20.0), ("noise", 45.0), ("jpeg", 50), ("jpeg", 20), ("jpeg", 8),
                           ("dark", 0.5), ("bright", 1.6), ("contrast", 0.4), ("pixelate", 4))
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


def resize_like_runtime(image: np.ndarray) -> np.ndarray:
    """Shrink (INTER_AREA) so the long side is <= 512, then enlarge (INTER_CUBIC) so the short side is >= 224."""
    h, w = image.shape[:2]
    if max(h, w) > MAX_LONG_SIDE:
        f = MAX_LONG_SIDE / max(h, w)
        image = cv2.resize(image, (round(w * f), round(h * f)), interpolation=cv2.INTER_AREA)
        h, w = image.shape[:2]
    if min(h, w) < MIN_SHORT_SIDE:
        f = MIN_SHORT_SIDE / min(h, w)
        image = cv2.resize(image, (max(CROP, round(w * f)), max(CROP, round(h * f))), interpolation=cv2.INTER_CUBIC)
    return image


def distort(image: np.ndarray, kind: str, level: float, seed: int = 0) -> np.ndarray:
    """`image` (uint8 BGR) with one distortion at a known level; deterministic for a seed."""
    if kind == "none":
        return image.copy()
    if kind == "blur":
        return cv2.GaussianBlur(image, (0, 0), sigmaX=float(level))
    if kind == "noise":
        noise = np.random.default_rng(seed).normal(0.0, level, image.shape)
        return np.clip(image.astype(np.float64) + noise, 0, 255).astype(np.uint8)
    if kind == "jpeg":
        ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(level)])
        return cv2.imdecode(data, cv2.IMREAD_COLOR)
    if kind in ("dark", "bright"):
        return np.clip(image.astype(np.float64) * level, 0, 255).astype(np.uint8)
    if kind == "contrast":
        mean = image.mean()
        return np.clip((image.astype(np.float64) - mean) * level + mean, 0, 255).astype(np.uint8)
    if kind == "pixelate":
        h, w = image.shape[:2]
        small = cv2.resize(image, (max(1, w // int(level)), max(1, h // int(level))), interpolation=cv2.INTER_AREA)
        return cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST)
    raise ValueError(f"unknown distortion {kind}")


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
    h, w = image.shape[:2]
    y, x = (h - size) // 2, (w - size) // 2
    return image[y:y + size, x:x + size]


def validation_set() -> tuple[np.ndarray, list[str]]:
    """24 held-out crops (3 photos x 8 distortion levels) as (N, 224, 224, 3) uint8 BGR, and their labels.

    Each photo is resized so its short side is 224 and centre-cropped first, then
    distorted, so the distortion is seen at the scale the network sees it.
    """
    crops, labels = [], []
    for p, name in enumerate(VALIDATION_PHOTOS):
        photo = skimage_photo(name)
        h, w = photo.shape[:2]
        f = CROP / min(h, w)
        base = center_crop(cv2.resize(photo, (max(CROP, round(w * f)), max(CROP, round(h * f))),
                                      interpolation=cv2.INTER_AREA))
        for d, (label, kind, level) in enumerate(VALIDATION_DISTORTIONS):
            crops.append(distort(base, kind, level, seed=100 * p + d))
            labels.append(f"{name}/{label}")
    return np.stack(crops), labels


def default_calibration_set(count: int = 300, seed: int = 0) -> np.ndarray:
    """`count` crops from skimage.data photographs (never the validation ones), distorted and
    randomly placed, as (count, 224, 224, 3) uint8 BGR."""
    rng = np.random.default_rng(seed)
    photos = [resize_like_runtime(skimage_photo(n)) for n in CALIBRATION_PHOTOS]
    crops = []
    i = 0
    while len(crops) < count:
        photo = photos[i % len(photos)]
        kind, level = CALIBRATION_DISTORTIONS[(i // len(photos)) % len(CALIBRATION_DISTORTIONS)]
        crops.append(distort(_random_crop(photo, rng), kind, level, seed=seed * 100003 + i))
        i += 1
    return np.stack(crops)


def calibration_set_from_folder(folder: str | Path, count: int = 300, seed: int = 0) -> np.ndarray:
    """Crops of the images in `folder` (recursively): each image resized like the runtime does,
    then its centre crop and seeded random crops until `count` crops are drawn."""
    folder = Path(folder)
    if not folder.is_dir():
        raise GammaUserError(f"calibration folder {folder} does not exist or is not a folder")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise GammaUserError(f"calibration folder {folder} holds no images "
                             f"({', '.join(sorted(IMAGE_SUFFIXES))}); add a few hundred representative photos")
    images = []
    for path in files:
        image = cv2.imdecode(np.fromfile(str(path), dtype=np.uint8), cv2.IMREAD_COLOR)
        if image is not None:
            images.append(resize_like_runtime(image))
    if not images:
        raise GammaUserError(f"none of the {len(files)} image files in calibration folder {folder} could be read")
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
