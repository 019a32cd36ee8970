"""Image distortions at known strengths: the ground truth of the synthetic quality set,
the demo, and INT8 calibration. numpy + OpenCV only (no torch), so the torch-free
demo uses exactly the distortions the demo model was trained on.

Images are RGB uint8 (the synthetic set's convention). Level 0 is pristine, 1 the
weakest and `levels` the strongest; parameters interpolate geometrically between
each kind's (weakest, strongest) values, and fractional levels are allowed (the
demo clip ramps through them).
"""
from __future__ import annotations

import cv2
import numpy as np

# Each kind: (weakest, strongest) parameter.
DISTORTIONS = {
    "gaussian_blur": (0.8, 6.0),      # sigma, pixels
    "motion_blur": (5, 31),           # kernel length, pixels (horizontal)
    "gaussian_noise": (6.0, 60.0),    # standard deviation on 0..255
    "jpeg": (50, 3),                  # JPEG quality (lower is worse)
    "contrast": (0.7, 0.12),          # kept fraction of contrast around the mean grey
    "saturation": (0.6, 0.0),         # kept fraction of chroma
    "darken": (0.65, 0.12),           # brightness multiplier
    "brighten": (0.25, 0.85),         # fraction of the way to white
    "pixelate": (2.0, 12.0),          # down-and-up scaling factor
}


def mos_of(level: int, levels: int) -> float:
    """The synthetic set's MOS: pristine 1.0, falling linearly to 1/(levels+1) at the strongest level."""
    return 1.0 - level / (levels + 1)


def parameter(kind: str, level: float, levels: int = 5) -> float:
    if kind not in DISTORTIONS:
        raise ValueError(f"unknown distortion {kind}; known: {', '.join(DISTORTIONS)}")
    weakest, strongest = DISTORTIONS[kind]
    if levels == 1:
        return float(strongest)
    t = (level - 1) / (levels - 1)
    if weakest > 0 and strongest > 0:
        return float(weakest * (strongest / weakest) ** t)
    return float(weakest + (strongest - weakest) * t)


def distort(image: np.ndarray, kind: str, level: float, levels: int = 5, seed: int = 0) -> np.ndarray:
    """An RGB uint8 image distorted by `kind` at `level` (1 = weakest, `levels` = strongest)."""
    p = parameter(kind, level, levels)
    x = image.astype(np.float32)
    if kind == "gaussian_blur":
        return cv2.GaussianBlur(image, (0, 0), sigmaX=p, borderType=cv2.BORDER_REFLECT)
    if kind == "motion_blur":
        length = int(round(p)) | 1
        kernel = np.zeros((length, length), np.float32)
        kernel[length // 2, :] = 1.0 / length
        return cv2.filter2D(image, -1, kernel, borderType=cv2.BORDER_REFLECT)
    if kind == "gaussian_noise":
        noise = np.random.default_rng(seed).normal(0.0, p, image.shape).astype(np.float32)
        return _to_uint8(x + noise)
    if kind == "jpeg":
        ok, data = cv2.imencode(".jpg", np.ascontiguousarray(image[..., ::-1]),
                                [cv2.IMWRITE_JPEG_QUALITY, int(round(p))])
        if not ok:
            raise RuntimeError("OpenCV could not JPEG-encode an image")
        return np.ascontiguousarray(cv2.imdecode(data, cv2.IMREAD_COLOR)[..., ::-1])
    if kind == "contrast":
        return _to_uint8(x.mean() + p * (x - x.mean()))
    if kind == "saturation":
        grey = x @ np.array([0.299, 0.587, 0.114], np.float32)
        return _to_uint8(grey[..., None] + p * (x - grey[..., None]))
    if kind == "darken":
        return _to_uint8(x * p)
    if kind == "brighten":
        return _to_uint8(x + p * (255.0 - x))
    if kind == "pixelate":
        h, w = image.shape[:2]
        small = cv2.resize(image, (max(1, round(w / p)), max(1, round(h / p))), interpolation=cv2.INTER_AREA)
        return cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST)
    raise ValueError(f"unknown distortion {kind}")


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)
